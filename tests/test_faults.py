"""LLM faults over real HTTP: a whole pipeline.run against the fault-injecting fake server on 127.0.0.1.

Every test runs OpenAICompatibleBackend (short timeout, few retries) over 60 real Dolly rows split into
6 subsets of 10 (one pick each), with the deterministic FakeEmbedder. Faults: connection refused, dropped
connections, timeouts, 429 with Retry-After, 500s, truncated JSON, empty content, ids out of range and a
model repeating the prompt. Each test checks that the run goes on, marks what failed (statuses, raw
answers kept, no invented picks) and later resumes with no subset lost and none called twice.
"""

from __future__ import annotations

import gzip
import json
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer

from selectllm_core import pipeline
from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import BackendError
from selectllm_core.llm import OpenAICompatibleBackend
from selectllm_core.pool.load import load_pool
from selectllm_core.select.listwise import presentation_order
from selectllm_core.select.prompts import PRESETS, render
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder

CANARY = "sk-faults-canary-0d9e8f7a6b5c"
CONFIG = pipeline.RunConfig(budget=6, subset_size=10, seed=3)
N_SUBSETS = 6
GOOD = '{"picks": [{"id": 2, "reason": "clear and useful"}]}'
TIMEOUT = 0.8  # seconds the client waits for one answer


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The first 60 rows of the Dolly AlpaGasus 3k file."""
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(60)]
    path = tmp_path_factory.mktemp("faults") / "pool.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=GOOD, lifetime=60.0, max_requests=200) as fake:
        yield fake


def backend_at(url: str, **kwargs: Any) -> OpenAICompatibleBackend:
    options = {"model": "fake-model", "api_key": CANARY, "timeout": TIMEOUT, "max_retries": 1, "concurrency": 1,
               "json_mode": "schema"} | kwargs
    return OpenAICompatibleBackend(base_url=url, **options)


def run(pool_file: Path, tmp_path: Path, url: str, **kwargs: Any) -> pipeline.RunResult:
    """One pipeline.run over the pool with a workspace and cache under tmp_path."""
    return pipeline.run(load_pool(pool_file), CONFIG, store=Store(tmp_path / "ws.sqlite"),
                        backend=backend_at(url, **kwargs), embedder=FakeEmbedder(),
                        cache=EmbeddingCache(tmp_path / "cache"))


def prompts_by_subset(store: Store, run_id: str, pool_file: Path) -> dict[str, int]:
    """Rendered first prompt -> subset, rebuilt from the stored plan and the seeded presentation order."""
    subsets = pipeline.subsets_from_plan(store, run_id, load_pool(pool_file))
    out = {}
    for s, members in subsets.items():
        shown = presentation_order(members, subset=s, seed=CONFIG.seed, shuffle=True)
        out[render(PRESETS["default"].template, [(c.instruction, c.input) for c in shown], k=1)] = s
    return out


def first_prompt(request: dict) -> str:
    return request["body"]["messages"][0]["content"]


def answered(server: FakeOpenAIServer, prompts: dict[str, int], since: int = 0) -> Counter:
    """How many answers each subset received (200s sent before the client's timeout; from request `since`)."""
    return Counter(prompts[first_prompt(r)] for r in server.requests[since:]
                   if r["status"] == 200 and r["fault"].get("sleep", 0) < TIMEOUT)


def assert_complete(store: Store, run_id: str) -> None:
    """Every subset ends ok with a pick of its own, and no (subset, attempt) is logged twice as ok."""
    results = store.subset_results(run_id)
    assert [r["subset"] for r in results] == list(range(N_SUBSETS)), "a subset was lost"
    assert all(r["status"] == "ok" and set(r["picks"]) <= set(r["members"]) for r in results)
    calls = store.calls(run_id)
    ok_calls = calls[calls["ok"] == 1]
    assert not ok_calls.duplicated(["subset", "attempt"]).any(), ok_calls
    assert len(store.selection(run_id)) == CONFIG.budget


def assert_no_canary(store: Store, run_id: str) -> None:
    stored = json.dumps(store.subset_results(run_id)) + json.dumps(store.get_run(run_id))
    assert CANARY not in stored


# -- transport faults: the client retries with backoff, up to its cap; the subset is "error", resumed later ---

TRANSPORT = {
    "http_500": {"status": 500, "headers": {}, "body": {"error": {"message": "internal error"}}},
    "http_429_retry_after": {"status": 429, "headers": {"Retry-After": "1"},
                             "body": {"error": {"message": "rate limited", "type": "rate_limit_error"}}},
    "timeout": {"sleep": TIMEOUT + 0.5},
    "dropped_connection": {"drop": True},
}


@pytest.mark.parametrize("kind", list(TRANSPORT))
def test_transport_fault_is_retried_marked_and_resumed(kind: str, pool_file: Path, tmp_path: Path,
                                                       server: FakeOpenAIServer) -> None:
    fault = TRANSPORT[kind]
    # subset 0: fails on the first try and on its one retry (error); subset 1: fails once, then succeeds.
    server.script(fault, fault, fault, {})
    first = run(pool_file, tmp_path, server.base_url)
    store, run_id = first.store, first.run_id
    prompts = prompts_by_subset(store, run_id, pool_file)
    by_subset = [prompts[first_prompt(r)] for r in server.requests]
    assert by_subset == [0, 0, 1, 1, 2, 3, 4, 5], "capped at 1 + max_retries calls per subset, in order"
    gap = server.requests[3]["time"] - server.requests[2]["time"]
    assert gap >= (0.9 if "Retry-After" in fault.get("headers", {}) else 0.3), "retry came without backoff"
    # marked: subset 0 is an error with the reason and nothing invented; the run went on past it
    results = {r["subset"]: r for r in store.subset_results(run_id)}
    assert results[0]["status"] == "error" and results[0]["picks"] == [] and results[0]["raw"] == []
    assert "after 1 retries" in results[0]["error"]
    assert all(results[s]["status"] == "ok" for s in range(1, N_SUBSETS))
    assert first.summary["short_by"] == 1 and first.summary["subsets"] == {"error": 1, "ok": 5}
    assert_no_canary(store, run_id)
    # resumed by the very same call against a healthy server: only subset 0 is called again
    seen = len(server.requests)
    again = run(pool_file, tmp_path, server.base_url)
    assert again.run_id == run_id and again.stats["llm_calls_new"] == 1
    assert [prompts[first_prompt(r)] for r in server.requests[seen:]] == [0]
    assert answered(server, prompts) == Counter(range(N_SUBSETS)), "a subset was answered twice"
    assert_complete(store, run_id)


def test_connection_refused_stops_after_three_subsets_then_resumes(pool_file: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendError, match="3 subsets in a row could not reach the model") as info:
        run(pool_file, tmp_path, url)
    assert "cannot reach" in str(info.value) and CANARY not in str(info.value)
    store = Store(tmp_path / "ws.sqlite")
    run_id = store.list_runs()["run_id"].item()
    assert store.get_run(run_id)["status"] == "interrupted"
    results = store.subset_results(run_id)
    assert [(r["subset"], r["status"], r["picks"]) for r in results] == [(s, "error", []) for s in range(3)]
    assert store.done_subsets(run_id) == set()
    # the server comes up on that port; the same call finishes the run, each subset answered once
    with FakeOpenAIServer(reply=GOOD, port=port, lifetime=30.0) as fake:
        again = run(pool_file, tmp_path, url)
        prompts = prompts_by_subset(store, run_id, pool_file)
        assert again.run_id == run_id
        assert answered(fake, prompts) == Counter(range(N_SUBSETS))
        assert len(fake.requests) == N_SUBSETS
    assert_complete(store, run_id)
    assert store.get_run(run_id)["status"] == "complete"


# -- content faults: the answer arrives but is unusable; one repair message, then "failed" with raw kept ------

TRUNCATED = '{"picks": [{"id": 3, "reason": "detailed and'
OUT_OF_RANGE = '{"picks": [{"id": 99, "reason": "the best"}]}'


def test_unusable_answers_fail_with_raw_kept_and_nothing_invented(pool_file: Path, tmp_path: Path,
                                                                  server: FakeOpenAIServer) -> None:
    server.script(
        {"content": TRUNCATED}, {"content": TRUNCATED},          # subset 0: cut off twice
        {"content": None}, {"content": ""},                      # subset 1: no content, then empty
        {"content": OUT_OF_RANGE}, {"content": OUT_OF_RANGE},    # subset 2: id 99 of 10
        {"echo": True}, {"echo": True},                          # subset 3: repeats the prompt
        {"content": TRUNCATED}, {"content": GOOD},               # subset 4: repaired on the second call
    )                                                            # subset 5: fine
    first = run(pool_file, tmp_path, server.base_url)
    store, run_id = first.store, first.run_id
    results = {r["subset"]: r for r in store.subset_results(run_id)}
    expected_error = {0: "cut off", 1: "empty", 2: "named id 99 but the subset has 10", 3: "repeated"}
    for subset, needle in expected_error.items():
        r = results[subset]
        assert r["status"] == "failed" and r["picks"] == [] and r["reasons"] == {}
        assert needle in r["error"], r["error"]
        assert len(r["raw"]) == 2 and r["attempts"] == 2
    assert results[0]["raw"] == [TRUNCATED, TRUNCATED] and results[1]["raw"] == ["", ""]
    assert results[2]["raw"] == [OUT_OF_RANGE] * 2 and results[3]["raw"][0].startswith("The following are")
    assert results[4]["status"] == "ok" and results[4]["raw"] == [TRUNCATED, GOOD]
    repair = server.requests[9]["body"]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"] and repair[1]["content"] == TRUNCATED
    assert "could not be used" in repair[2]["content"]
    # no invented picks: only subsets 4 and 5 contribute, each with a row of its own
    selected = store.selection(run_id)
    assert sorted(selected["subset"]) == [4, 5] and first.summary["short_by"] == 4
    for row in selected.itertuples():
        assert row.id in results[row.subset]["picks"]
    # resuming does not call settled subsets again ("failed" is final until the curator retries) ...
    seen = len(server.requests)
    again = run(pool_file, tmp_path, server.base_url)
    assert again.stats["llm_calls_new"] == 0 and len(server.requests) == seen
    # ... and `retry` against a healthy server calls exactly the failed ones, once each
    out = pipeline.retry_failed(store, run_id, backend=backend_at(server.base_url))
    prompts = prompts_by_subset(store, run_id, pool_file)
    assert answered(server, prompts, since=seen) == Counter([0, 1, 2, 3])
    assert out["selected"] == CONFIG.budget and out["subsets"] == {"ok": N_SUBSETS}
    results = store.subset_results(run_id)
    assert [r["subset"] for r in results] == list(range(N_SUBSETS))
    assert all(r["status"] == "ok" and set(r["picks"]) <= set(r["members"]) for r in results)


def test_answers_in_flight_are_kept_when_the_error_streak_stops_the_run(pool_file: Path, tmp_path: Path) -> None:
    """Concurrency 4: three calls fail fast while a fourth is still being answered; its answer must be kept."""

    healthy = {"now": False}

    def respond(body: dict, index: int) -> dict:
        if healthy["now"]:
            return {}
        if index < 3:
            return {"status": 500, "headers": {"x-should-retry": "false"}, "body": {"error": {"message": "down"}}}
        return {"sleep": 0.4}  # slow but fine: still in flight when the third error arrives

    with FakeOpenAIServer(reply=GOOD, responder=respond, lifetime=30.0) as fake:
        with pytest.raises(BackendError, match="3 subsets in a row"):
            run(pool_file, tmp_path, fake.base_url, concurrency=4, max_retries=0)
        store = Store(tmp_path / "ws.sqlite")
        run_id = store.list_runs()["run_id"].item()
        prompts = prompts_by_subset(store, run_id, pool_file)
        paid_for = answered(fake, prompts)
        assert sum(paid_for.values()) >= 1, "a slow call was answered before the run stopped"
        healthy["now"] = True
        run(pool_file, tmp_path, fake.base_url, concurrency=4, max_retries=0)
        assert answered(fake, prompts) == Counter(range(N_SUBSETS)), (
            f"answered before the stop: {dict(paid_for)}; those answers were thrown away and paid for again")
    assert_complete(store, run_id)


def test_calls_log_keeps_attempts_distinct_across_resume_and_retry(pool_file: Path, tmp_path: Path,
                                                                  server: FakeOpenAIServer) -> None:
    server.script(
        {"content": OUT_OF_RANGE}, {"status": 500, "body": {}}, {"status": 500, "body": {}},  # subset 0: error
        {"content": ""}, {"content": ""},                                                     # subset 1: failed
    )
    first = run(pool_file, tmp_path, server.base_url)
    store, run_id = first.store, first.run_id
    results = {r["subset"]: r for r in store.subset_results(run_id)}
    assert results[0]["status"] == "error" and results[0]["raw"] == [OUT_OF_RANGE], "the first answer is kept"
    assert results[1]["status"] == "failed"
    run(pool_file, tmp_path, server.base_url)  # resumes subset 0
    pipeline.retry_failed(store, run_id, backend=backend_at(server.base_url))  # retries subset 1
    assert all(r["status"] == "ok" for r in store.subset_results(run_id))
    calls = store.calls(run_id)
    # first run (a failed HTTP call is one entry); the resume reads subset 0's first answer from the response
    # cache (it was paid for) and sends only the repair; the retry asks subset 1 anew
    assert len(calls) == (2 + 2 + 4) + 2 + 1
    assert calls["cached"].sum() == 1 and calls[calls["cached"] == 1]["subset"].tolist() == [0]
    assert not calls[calls["ok"] == 1].duplicated(["subset", "attempt"]).any(), calls
