"""The local llama.cpp chat backend: offline, deterministic, one call at a time, in a child process.

The model runs in its own process (`selectllm_core.llm.worker`), so a native crash (an instruction the CPU
cannot run, an out-of-memory kill) becomes a ModelCrashed error on the page or in the CLI, and the run it
happened in stays resumable, instead of taking the app or the run down.

The default model is the bundled SmolLM2-135M-Instruct, which is far too small to judge
instructions; it exists so the studio runs offline and in tests. Name an installed model of the registry
(`selectllm_core.llm.models`, e.g. "qwen2.5-coder-1.5b"), point ``model_path`` at a larger GGUF file, or use
an OpenAI-compatible server for selections worth annotating.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from selectllm_core.errors import BackendUnavailable
from selectllm_core.llm.base import BUNDLED_MODEL_FILE, LOCAL_N_CTX, ChatResult, ScoreResult, bundled_model_path
from selectllm_core.llm.lazy_grammar import GRAMMAR_MODES
from selectllm_core.llm.models import DEFAULT_LOCAL_MODEL, resolve
from selectllm_core.llm.worker import ModelProcess

# One model process per settings, shared by every backend in this process: loading is paid once, and calls
# into one model are serialised by its process. Tokenising has its own small vocabulary-only process, so
# the Prompt page's exact counts never wait for a running selection call.
_PROCESSES: dict[tuple, ModelProcess] = {}
_PROCESSES_LOCK = threading.Lock()


def model_process(path: Path, *, n_ctx: int, n_threads: int | None = None, seed: int = 0,
                  vocab_only: bool = False, grammar: str = "lazy") -> ModelProcess:
    """The shared process for a GGUF model and its settings (started on its first request).

    Args:
        path: GGUF file.
        n_ctx: Context window in tokens.
        n_threads: CPU threads (None: all cores).
        seed: Sampling seed.
        vocab_only: Load only the tokenizer (for counting tokens).
        grammar: "lazy": a greedy answer under a grammar asks the grammar about the chosen token only (as
            llama.cpp's own sampler does); "full": llama-cpp-python's sampler, which matches the grammar against
            the whole vocabulary at every step. Both choose the same tokens; "full" is kept for comparison.

    Returns:
        The ModelProcess; a crash inside it raises ModelCrashed on the call, and the next call restarts it.
    """
    config = {"model_path": str(Path(path).resolve()), "vocab_only": vocab_only}
    if not vocab_only:
        config.update(n_ctx=n_ctx, n_threads=n_threads, seed=seed, grammar=grammar)
    key = tuple(sorted(config.items()))
    with _PROCESSES_LOCK:
        if key not in _PROCESSES:
            _PROCESSES[key] = ModelProcess(config)
        return _PROCESSES[key]


def stop_model_processes() -> None:
    """Stop every model process of this process (they also stop by themselves when it exits)."""
    with _PROCESSES_LOCK:
        for proc in _PROCESSES.values():
            proc.close()


class LocalLlamaBackend:
    """Chat with a GGUF model through llama-cpp-python, run in a child process.

    Args:
        model_path: GGUF file, or the name of an installed registry model (None: the bundled
            SmolLM2-135M-Instruct). A registry name that is not installed raises ConfigError with the
            install command.
        n_ctx: Context window in tokens; prompt plus answer must fit.
        n_threads: CPU threads (None: llama.cpp's default).
        seed: Sampling seed, so temperature > 0 runs repeat too.
        grammar: How a greedy answer is held to its JSON schema: "lazy" (default) or "full", see
            `model_process`; the answers are the same.
    """

    name = "local"
    concurrency = 1
    supports_logprobs = True

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = LOCAL_N_CTX,
        n_threads: int | None = None,
        seed: int = 0,
        grammar: str = "lazy",
    ) -> None:
        # The bundled model's name stays lazy (found on first use), so it describes itself as the default does.
        named = None if model_path in (None, "", DEFAULT_LOCAL_MODEL) else str(model_path)
        self.model_path = resolve(named) if named else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        if grammar not in GRAMMAR_MODES:
            raise ValueError(f"grammar must be one of {', '.join(GRAMMAR_MODES)}, not {grammar!r}")
        self.grammar = grammar

    def _path(self) -> Path:
        """The model file, resolving the bundled default on first use."""
        if self.model_path is None:
            self.model_path = bundled_model_path()
        if not self.model_path.is_file():
            raise BackendUnavailable(f"model file not found: {self.model_path}; pass the path of a GGUF file")
        return self.model_path

    def _process(self) -> ModelProcess:
        """The shared model process for these settings."""
        return model_process(self._path(), n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed,
                             grammar=self.grammar)

    def describe(self) -> dict:
        """Backend settings for run manifests."""
        name = self.model_path.name if self.model_path else BUNDLED_MODEL_FILE
        return {"kind": "local", "model": name, "n_ctx": self.n_ctx, "seed": self.seed}

    def chat(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        """Answer one conversation, constrained by a JSON-schema grammar when a schema is given.

        Args:
            messages: OpenAI-style chat messages.
            json_schema: Schema the answer must match (compiled to a llama.cpp grammar).
            max_tokens: Most tokens to generate.
            temperature: 0 for greedy, deterministic answers.

        Returns:
            The answer text with exact prompt/completion token counts.
        """
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": self.seed}
        if json_schema is not None:
            # llama-cpp-python's dialect: "json_object" plus "schema" becomes a grammar.
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        start = time.perf_counter()
        response = self._process().request("chat", messages=messages, kwargs=kwargs)
        usage, timings = response.get("usage") or {}, response.get("timings")
        return ChatResult(
            text=response["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            model=self._path().name,
            elapsed=time.perf_counter() - start,
            answer_format="json_schema" if json_schema is not None else "none",
            engine_seconds=(timings["prompt_ms"] + timings["predicted_ms"]) / 1000 if timings else None,
        )

    def count_tokens(self, text: str) -> int:
        """Exact number of tokens the model's tokenizer makes of ``text`` (no BOS)."""
        return self.count_tokens_many([text])[0]

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """Exact token counts of many texts in one request to the tokenizer process."""
        tokenizer = model_process(self._path(), n_ctx=0, vocab_only=True)
        return [int(n) for n in tokenizer.request("tokenize", texts=list(texts))]

    def top_logprobs(self, messages: list[dict], *, n: int = 20) -> dict[str, float]:
        """Log probabilities of the most likely first answer tokens.

        Args:
            messages: The conversation to score (rendered with the model's chat template).
            n: How many tokens to return.

        Returns:
            Token text -> natural-log probability, most likely first.
        """
        return dict(self._process().request("top_logprobs", messages=messages, n=n))

    def score_ids(self, messages: list[dict], *, prefill: str, ids: list[str]) -> ScoreResult:
        """Log probabilities of each id as the first answer, after the answer is begun with `prefill`.

        Args:
            messages: The conversation (rendered with the model's chat template).
            prefill: The start of the assistant's answer, e.g. "[" for an ids-only answer.
            ids: The answer ids to score, e.g. ["1", .., "10"].

        Returns:
            A ScoreResult (one forward pass; no grammar, nothing generated).
        """
        start = time.perf_counter()
        got = self._process().request("score_ids", messages=messages, prefill=prefill, ids=list(ids))
        timings = got.get("timings")
        return ScoreResult(logprobs={str(k): float(v) for k, v in got["logprobs"].items()},
                           prompt_tokens=int(got["prompt_tokens"]), model=self._path().name,
                           elapsed=time.perf_counter() - start, mass=got.get("mass"),
                           engine_seconds=(timings["prompt_ms"] + timings["predicted_ms"]) / 1000 if timings else None)
