"""OpenAICompatibleBackend over real HTTP against a fault-injecting fake server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer

from selectllm_core.errors import BackendError, BackendUnavailable, CapabilityError, ConfigError
from selectllm_core.llm import LocalLlamaBackend, OpenAICompatibleBackend, make_backend, top_logprobs_of
from selectllm_core.llm.openai_compat import safe_url
from selectllm_core.select.parsing import parse_answer

REPO = Path(__file__).resolve().parent.parent

CANARY = "sk-canary-7f3a9c1e5b2d4f60"
MESSAGES = [{"role": "user", "content": "Pick one of [1] .. [3]."}]
SCHEMA = {"type": "object", "properties": {"picks": {"type": "array"}}, "required": ["picks"]}


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lifetime=30.0) as server:
        yield server
    assert server.stopped.is_set()


def backend_for(server: FakeOpenAIServer, **kwargs: object) -> OpenAICompatibleBackend:
    options = {"model": "fake-model", "api_key": CANARY, "timeout": 5.0, "max_retries": 2} | kwargs
    return OpenAICompatibleBackend(base_url=server.base_url, **options)


def test_answer_and_usage(fake: FakeOpenAIServer) -> None:
    result = backend_for(fake).chat(MESSAGES, json_schema=SCHEMA, max_tokens=64)
    assert parse_answer(result.text, n=3, k=1).picks == [2]
    assert (result.prompt_tokens, result.completion_tokens) == (50, 9)
    sent = fake.requests[0]
    assert sent["headers"]["authorization"] == f"Bearer {CANARY}"
    assert sent["body"]["max_tokens"] == 64 and sent["body"]["temperature"] == 0.0
    assert sent["body"]["response_format"]["type"] == "json_schema"
    assert sent["body"]["response_format"]["json_schema"]["schema"] == SCHEMA


def test_rate_limit_honours_retry_after_then_succeeds(fake: FakeOpenAIServer) -> None:
    fake.script({"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"message": "slow down"}}})
    result = backend_for(fake).chat(MESSAGES)
    assert result.text
    first, second = fake.requests
    assert second["time"] - first["time"] >= 0.9, "the client must wait as long as Retry-After says"


def test_server_error_is_retried(fake: FakeOpenAIServer) -> None:
    fake.script({"status": 500, "body": {"error": {"message": "boom"}}})
    assert backend_for(fake).chat(MESSAGES).text
    assert len(fake.requests) == 2


def test_timeout_is_retried(fake: FakeOpenAIServer) -> None:
    fake.script({"sleep": 3.0})
    result = backend_for(fake, timeout=0.5).chat(MESSAGES)
    assert result.text and len(fake.requests) == 2


def test_retries_are_capped_with_a_useful_message(fake: FakeOpenAIServer) -> None:
    fake.script(*[{"status": 503, "body": {"error": {"message": "overloaded"}}}] * 3)
    with pytest.raises(BackendError, match=r"HTTP 503\) after 1 retries; check its logs: overloaded"):
        backend_for(fake, max_retries=1).chat(MESSAGES)
    assert len(fake.requests) == 2


def test_connection_refused_is_fast_and_helpful() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAICompatibleBackend(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=CANARY, timeout=1.0, max_retries=1
    )
    start = time.perf_counter()
    with pytest.raises(BackendError) as info:
        backend.chat(MESSAGES)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1" in message and "server is running" in message
    assert CANARY not in message


def test_empty_content_is_returned_as_empty_text(fake: FakeOpenAIServer) -> None:
    fake.usage = {}
    fake.script({"content": None})
    result = backend_for(fake).chat(MESSAGES)
    assert result.text == "" and result.prompt_tokens == 0 and result.completion_tokens == 0
    assert "empty" in (parse_answer(result.text, n=3, k=1).error or "")


def test_key_never_leaks(fake: FakeOpenAIServer) -> None:
    echo = {"error": {"message": "Invalid key {authorization}", "type": "invalid_request_error"}}
    fake.script({"status": 401, "body": echo}, {"status": 500, "body": echo}, {"status": 500, "body": echo})
    backend = backend_for(fake, max_retries=1)
    with pytest.raises(BackendError) as info:
        backend.chat(MESSAGES)
    assert "rejected the API key; check the OPENAI_API_KEY environment variable" in str(info.value)
    with pytest.raises(BackendError) as info_500:
        backend.chat(MESSAGES)
    described = json.dumps(backend.describe())
    for text in (str(info.value), str(info_500.value), described, repr(backend)):
        assert CANARY not in text
    assert backend.describe()["auth_env_var"] == "OPENAI_API_KEY"
    with_userinfo = OpenAICompatibleBackend(base_url="http://me:hunter2@127.0.0.1:9/v1", model="m")
    assert "hunter2" not in json.dumps(with_userinfo.describe()) + repr(with_userinfo)


def test_key_read_from_named_env_var(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", CANARY)
    backend = OpenAICompatibleBackend(base_url=fake.base_url, model="m", api_key_env="MY_LLM_KEY")
    backend.chat(MESSAGES)
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {CANARY}"
    assert CANARY not in json.dumps(backend.describe())


def test_keyless_local_server_gets_dummy_key(fake: FakeOpenAIServer) -> None:
    OpenAICompatibleBackend(base_url=fake.base_url, model="m").chat(MESSAGES)
    assert fake.requests[0]["headers"]["authorization"] == "Bearer not-needed"


def test_openai_without_key_says_which_variable() -> None:
    with pytest.raises(BackendUnavailable, match="set the OPENAI_API_KEY environment variable"):
        OpenAICompatibleBackend(model="gpt-4o-mini").chat(MESSAGES)


@pytest.mark.parametrize("status", [400, 422, 500])
def test_auto_json_mode_steps_down_and_remembers(fake: FakeOpenAIServer, status: int) -> None:
    # llama-cpp-python's server refuses "json_schema" with HTTP 500; that must not be retried.
    fake.reject_formats, fake.reject_status = {"json_schema"}, status
    backend = backend_for(fake)
    first, second = backend.chat(MESSAGES, json_schema=SCHEMA), backend.chat(MESSAGES, json_schema=SCHEMA)
    assert first.text and second.text
    sent = [(r["body"].get("response_format") or {}).get("type") for r in fake.requests]
    assert sent == ["json_schema", "json_object", "json_object"]
    assert fake.requests[1]["body"]["response_format"]["schema"] == SCHEMA
    assert first.answer_format == second.answer_format == "json_object"  # each call says what it used


def test_auto_json_mode_falls_back_to_plain_prompt(fake: FakeOpenAIServer) -> None:
    fake.reject_formats = {"json_schema", "json_object"}
    backend = backend_for(fake)
    result = backend.chat(MESSAGES, json_schema=SCHEMA)
    assert result.text
    assert "response_format" not in fake.requests[-1]["body"]
    assert len(fake.requests) == 3
    assert result.answer_format == "none"


def test_a_run_records_per_call_that_the_server_refused_json_mode(fake: FakeOpenAIServer, tmp_path) -> None:
    from conftest import FakeEmbedder

    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.pipeline import RunConfig, degradations, export_run, manifest, run
    from selectllm_core.pool.load import load_pool
    from selectllm_core.store import Store

    fake.reject_formats = {"json_schema", "json_object"}
    pool = load_pool(pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(30), name="dolly 30")
    store = Store(tmp_path / "ws.sqlite")
    result = run(pool, RunConfig(budget=3, subset_size=10), store=store, backend=backend_for(fake),
                 embedder=FakeEmbedder(), cache=EmbeddingCache())
    usage = store.usage(result.run_id)
    assert usage["answer_formats"].get("none", 0) >= 1 and "json_schema" not in usage["answer_formats"]
    said = degradations(store, result.run_id)
    assert said and "without a JSON constraint" in said[0]
    assert manifest(store, result.run_id)["degraded"] == said
    assert "response_format" not in store.get_run(result.run_id)["backend"]  # no claim made before any call
    export_run(store, result.run_id, tmp_path / "out.csv")


def test_schema_json_mode_does_not_fall_back(fake: FakeOpenAIServer) -> None:
    fake.reject_formats = {"json_schema"}
    with pytest.raises(BackendError, match="not supported by this server"):
        backend_for(fake, json_mode="schema").chat(MESSAGES, json_schema=SCHEMA)
    assert len(fake.requests) == 1


def test_top_logprobs(fake: FakeOpenAIServer) -> None:
    backend = backend_for(fake)
    assert backend.supports_logprobs is None
    probs = backend.top_logprobs(MESSAGES, n=5)
    assert backend.supports_logprobs is True
    assert probs == {"1": -1.0, "2": -2.0, "3": -3.0, "4": -4.0, "5": -5.0}
    body = fake.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["max_tokens"] == 1


def test_auto_json_mode_retries_transient_errors_on_first_call(fake: FakeOpenAIServer) -> None:
    fake.script({"status": 503, "body": {"error": {"message": "loading model"}}})
    backend = backend_for(fake)
    assert backend.chat(MESSAGES, json_schema=SCHEMA).text
    sent = [(r["body"].get("response_format") or {}).get("type") for r in fake.requests]
    assert sent == ["json_schema", "json_schema"]


def test_top_logprobs_refused_is_a_capability_error(fake: FakeOpenAIServer) -> None:
    refusal = {"error": {"message": "logprobs is not supported for models created with logits_all=False"}}
    fake.script({"status": 500, "body": refusal})
    backend = backend_for(fake)
    with pytest.raises(CapabilityError, match="does not expose token probabilities"):
        backend.top_logprobs(MESSAGES)
    assert len(fake.requests) == 1, "a refused feature must not be retried"
    assert backend.supports_logprobs is False
    with pytest.raises(CapabilityError):
        top_logprobs_of(backend, MESSAGES)


def test_top_logprobs_missing_is_a_capability_error(fake: FakeOpenAIServer) -> None:
    fake.script(
        {
            "status": 200,
            "body": {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": "3"},
                    }
                ],
            },
        }
    )
    with pytest.raises(CapabilityError, match="does not expose token probabilities"):
        backend_for(fake).top_logprobs(MESSAGES)


def test_fake_server_caps_requests() -> None:
    with FakeOpenAIServer(max_requests=1) as server:
        backend = backend_for(server, max_retries=0)
        backend.chat(MESSAGES)
        with pytest.raises(BackendError, match="HTTP 503"):
            backend.chat(MESSAGES)
        assert server.stopped.wait(2.0)


def test_make_backend_and_describe() -> None:
    local = make_backend()
    assert isinstance(local, LocalLlamaBackend)
    assert local.describe() == {"kind": "local", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "n_ctx": 8192, "seed": 0}
    remote = make_backend("openai", model="m", base_url="http://127.0.0.1:9/v1?token=abc", concurrency=3)
    assert remote.concurrency == 3 and remote.describe()["base_url"] == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="unknown backend kind 'ollama'"):
        make_backend("ollama")
    with pytest.raises(ConfigError, match="needs a model name"):
        make_backend("openai")


def test_safe_url_strips_credentials() -> None:
    assert safe_url("https://user:secret@example.test:8443/v1?key=abc#x") == "https://example.test:8443/v1"


def test_missing_gguf_is_backend_unavailable(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(BackendUnavailable, match="model file not found"):
        LocalLlamaBackend(tmp_path / "nope.gguf").chat(MESSAGES)
