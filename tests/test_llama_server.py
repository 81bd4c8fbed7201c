"""The real HTTP path: a llama-cpp-python OpenAI-compatible server, and the same model in-process.

SmolLM2-135M cannot judge instructions; these tests check shapes, not taste: a constrained answer
parses to valid display ids, usage is reported, and token probabilities come back.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from selectllm_core.errors import BackendUnavailable
from selectllm_core.llm import LocalLlamaBackend, OpenAICompatibleBackend, bundled_model_path
from selectllm_core.select.listwise import Candidate, PromptSpec, first_request
from selectllm_core.select.parsing import parse_answer
from selectllm_core.select.prompts import load_template, score_prefill

pytestmark = pytest.mark.slow

CANDIDATES = [
    "Write a haiku about autumn leaves.",
    "Explain why the sky is blue to a ten-year-old.",
    "Translate 'good morning' into French.",
    "Prove that the square root of 2 is irrational.",
    "List three tips for a job interview.",
]
RATING = [
    {
        "role": "user",
        "content": "Rate this instruction from 1 (useless) to 5 (very useful) for "
        "training an assistant. Reply with one digit only.\n\nInstruction: Explain why the sky is blue.",
    }
]


def selection_messages(k: int = 1) -> list[dict]:
    """A SelectLLM-style prompt: candidates listed as [1]..[n], then the selection instruction."""
    blocks = "\n\n".join(f"[{i}]\n### Instruction: {text}\n\n### Response:" for i, text in enumerate(CANDIDATES, 1))
    ask = (
        f"Above are {len(CANDIDATES)} instructions. Select the {k} most informative one(s) to annotate. "
        'Answer as JSON: {"picks": [{"id": <id>, "reason": "<short reason>"}]}'
    )
    return [{"role": "user", "content": f"{blocks}\n\n{ask}"}]


def selection_schema(n: int, k: int) -> dict:
    # ids as an enum: llama.cpp's schema grammar ignores integer minimum/maximum.
    pick = {
        "type": "object",
        "required": ["id", "reason"],
        "properties": {
            "id": {"type": "integer", "enum": list(range(1, n + 1))},
            "reason": {"type": "string", "maxLength": 40},
        },
    }
    return {
        "type": "object",
        "required": ["picks"],
        "properties": {"picks": {"type": "array", "items": pick, "minItems": k, "maxItems": k}},
    }


def model_or_skip() -> str:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    try:
        return str(bundled_model_path())
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_models(url: str, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"llama_cpp.server did not answer {url}/models in time")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = model_or_skip()
    if importlib.util.find_spec("llama_cpp.server") is None or importlib.util.find_spec("fastapi") is None:
        pytest.skip("llama-cpp-python[server] is not installed")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        model,
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        # the local backend's own settings, so both paths compute the same numbers
        "--flash_attn",
        "true",
        "--n_batch",
        "1024",
        "--n_threads",
        str(os.cpu_count() or 1),
        "--n_threads_batch",
        str(os.cpu_count() or 1),
    ]
    # A file, not a pipe: the server logs far more than a pipe buffer holds and would block.
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            wait_for_models(url, proc, time.monotonic() + 60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; server log tail:\n{log.read_text(errors='replace')[-2000:]}") from None
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def local() -> LocalLlamaBackend:
    return LocalLlamaBackend(model_or_skip(), n_ctx=4096)


@pytest.mark.server
def test_server_constrained_selection(server_url: str) -> None:
    backend = OpenAICompatibleBackend(base_url=server_url, model="smollm2", timeout=60, max_retries=1)
    result = backend.chat(selection_messages(), json_schema=selection_schema(5, 1), max_tokens=96)
    parsed = parse_answer(result.text, n=5, k=1)
    assert parsed.ok, f"{parsed.error}: {result.text!r}"
    assert parsed.picks[0] in range(1, 6)
    assert result.prompt_tokens > 100 and result.completion_tokens > 0
    assert result.model == "smollm2"
    # llama-cpp-python refuses {"type": "json_schema"}; auto mode settles on its own dialect.
    assert result.answer_format == "json_object"


@pytest.mark.server
def test_server_and_local_agree_on_token_probabilities(server_url: str, local: LocalLlamaBackend) -> None:
    remote = OpenAICompatibleBackend(base_url=server_url, model="smollm2", timeout=60, max_retries=1)
    over_http = remote.top_logprobs(RATING, n=10)
    in_process = local.top_logprobs(RATING, n=10)
    assert len(over_http) >= 5 and all(value <= 0 for value in over_http.values())
    assert any(token.strip() in {"1", "2", "3", "4", "5"} for token in over_http)
    top_http, top_local = max(over_http, key=over_http.get), max(in_process, key=in_process.get)
    assert top_http == top_local
    # Same model and settings, but the server evaluates the prompt in its own batches: on an AVX2 build the
    # float sums differ by about 0.05 nats (seen: -1.42 over HTTP, -1.37 in the model process).
    assert over_http[top_http] == pytest.approx(in_process[top_local], abs=0.1)


def test_local_constrained_selection(local: LocalLlamaBackend) -> None:
    result = local.chat(selection_messages(k=2), json_schema=selection_schema(5, 2), max_tokens=128)
    parsed = parse_answer(result.text, n=5, k=2)
    # The grammar fixes the shape and the id range; distinct ids are up to the model, so accept
    # only the one failure the schema cannot rule out.
    assert parsed.ok or "more than once" in (parsed.error or ""), f"{parsed.error}: {result.text!r}"
    assert result.prompt_tokens > 100 and result.completion_tokens > 0
    assert local.describe()["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_count_tokens(local: LocalLlamaBackend) -> None:
    counts = [local.count_tokens(" ".join(["instruction"] * size)) for size in (1, 5, 50)]
    assert all(isinstance(count, int) and count > 0 for count in counts)
    assert counts[0] < counts[1] < counts[2]
    assert local.count_tokens("") == 0


def test_local_top_logprobs_is_a_distribution(local: LocalLlamaBackend) -> None:
    probs = local.top_logprobs(RATING, n=20)
    assert 5 <= len(probs) <= 20
    assert all(value <= 0 for value in probs.values())
    assert sum(2.718281828**value for value in probs.values()) <= 1.0 + 1e-6


def test_local_models_are_shared(local: LocalLlamaBackend) -> None:
    other = LocalLlamaBackend(local.model_path, n_ctx=local.n_ctx)
    assert other._process() is local._process()  # one model process per settings, loaded once


def paper_messages() -> list[dict]:
    """The paper's ids-only prompt over the five candidates, as a run sends it."""
    template, answer_format = load_template("paper")
    shown = [Candidate(str(i), text, "") for i, text in enumerate(CANDIDATES, 1)]
    messages, _schema = first_request(shown, k=2, prompt=PromptSpec(template, answer_format))
    return messages


def list_messages() -> list[dict]:
    """An ids-as-a-list question with one worked example, so even SmolLM2's answer begins "[" and an id."""
    ask = "Which one instruction is the most useful to train an assistant? Answer with its id in a JSON list, like [4]."
    blocks = "\n".join(f"[{i}] {text}" for i, text in enumerate(CANDIDATES, 1))
    return [{"role": "user", "content": f"[1] Say hi.\n[2] Explain photosynthesis.\n\n{ask}"},
            {"role": "assistant", "content": "[2]"},
            {"role": "user", "content": f"{blocks}\n\n{ask}"}]


@pytest.mark.server
def test_server_score_pass_reads_the_id_slot_of_its_answer_as_the_local_pass_does(
        server_url: str, local: LocalLlamaBackend) -> None:
    remote = OpenAICompatibleBackend(base_url=server_url, model="smollm2", timeout=60, max_retries=1)
    ids = [str(i) for i in range(1, len(CANDIDATES) + 1)]
    over_http = remote.score_ids(list_messages(), prefill=score_prefill("ids"), ids=ids)
    in_process = local.score_ids(list_messages(), prefill=score_prefill("ids"), ids=ids)
    assert over_http.unusable is None and remote.supports_logprobs is True
    assert set(over_http.logprobs) == set(ids) and sum(math.exp(v) for v in over_http.logprobs.values()) == (
        pytest.approx(1.0, abs=1e-6))
    assert over_http.prompt_tokens > 100 and 0 < over_http.completion_tokens <= remote.score_answer_tokens("[")
    assert 0 < over_http.mass <= 1.0 + 1e-6
    # the server's answer begins "[" as the local pass's begun answer does, so both read the same slot: the
    # same ranking of the listed ids, and the same numbers up to the server's own batching (seen: 0.07 nats)
    listed = [i for i in ids if i not in over_http.bounded]
    assert len(listed) >= 3

    def among_listed(logprobs: dict[str, float]) -> dict[str, float]:  # both normalised over the same ids
        norm = math.log(sum(math.exp(logprobs[i]) for i in listed))
        return {i: logprobs[i] - norm for i in listed}

    remote_lp, local_lp = among_listed(over_http.logprobs), among_listed(in_process.logprobs)
    assert sorted(listed, key=lambda i: -remote_lp[i]) == sorted(listed, key=lambda i: -local_lp[i])
    assert all(remote_lp[i] == pytest.approx(local_lp[i], abs=0.15) for i in listed)


@pytest.mark.server
def test_server_score_pass_whose_answer_writes_no_id_says_so_and_keeps_it(server_url: str) -> None:
    # under the paper's prompt SmolLM2 lists the instructions ("1. Write a haiku ...") instead of answering "[..]"
    remote = OpenAICompatibleBackend(base_url=server_url, model="smollm2", timeout=60, max_retries=1)
    got = remote.score_ids(paper_messages(), prefill=score_prefill("ids"), ids=[str(i) for i in range(1, 6)])
    assert got.unusable is not None and "wrote no id after '['" in got.unusable and not got.halts
    assert "Write a haiku" in got.raw and "Write a haiku" in got.unusable and not got.logprobs
    assert got.completion_tokens == remote.score_answer_tokens("[") and got.prompt_tokens > 100
