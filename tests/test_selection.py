"""The selection runner: shuffling, validation, repair retry, failures kept raw, concurrency, resume, trim."""

from __future__ import annotations

import json

import pytest

from selectllm_core.errors import BackendError
from selectllm_core.select.listwise import Candidate, PromptSpec, execute, finalize, presentation_order, trim_picks
from selectllm_core.select.prompts import PRESETS
from selectllm_core.store import Store
from tests.fakes import ScriptedBackend, shown_instructions

PROMPT = PromptSpec(PRESETS["default"].template, "json")


def make_subsets(n_subsets: int = 6, size: int = 5) -> dict[int, list[Candidate]]:
    return {
        s: [Candidate(f"r{s}-{i}", f"instruction {s}-{i}", "") for i in range(size)] for s in range(n_subsets)
    }


@pytest.fixture
def store(tmp_path) -> Store:
    st = Store(tmp_path / "ws.sqlite")
    st.create_run("run-x", pool_id="p", method="selectllm", params={}, prompt="t", backend={"kind": "fake"})
    return st


def test_shuffle_is_seeded_per_subset_and_changes_order() -> None:
    members = [Candidate(str(i), f"i{i}", "") for i in range(12)]
    a = presentation_order(members, subset=3, seed=7, shuffle=True)
    assert a == presentation_order(members, subset=3, seed=7, shuffle=True)
    assert a != members
    assert a != presentation_order(members, subset=4, seed=7, shuffle=True)
    assert presentation_order(members, subset=3, seed=7, shuffle=False) == members
    assert sorted(c.row_id for c in a) == sorted(c.row_id for c in members)


def test_picks_map_back_to_the_rows_shown(store: Store) -> None:
    backend = ScriptedBackend()
    execute(store, "run-x", make_subsets(), backend=backend, k=2, prompt=PROMPT, seed=1)
    for result in store.subset_results("run-x"):
        assert result["status"] == "ok"
        # picks are the first two rows *as shown* (the shuffled order is what `members` keeps)
        assert result["picks"] == result["members"][:2]
        for rid in result["picks"]:
            s, i = rid[1:].split("-")
            assert f"instruction {s}-{i}" in result["reasons"][rid]


def test_bad_answer_is_repaired_once(store: Store) -> None:
    def answer(prompt: str, n: int, k: int, attempt: int) -> str:
        return "[99]" if attempt == 1 else json.dumps({"picks": [{"id": 2, "reason": "ok"}]})

    backend = ScriptedBackend(answer)
    counts = execute(store, "run-x", make_subsets(1), backend=backend, k=1, prompt=PROMPT)
    [result] = store.subset_results("run-x")
    assert counts["ok"] == 1 and result["attempts"] == 2
    assert result["raw"][0] == "[99]"
    second = backend.calls[1]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == "[99]" and "99" in second[2]["content"]
    assert result["picks"] == [result["members"][1]]


def test_unusable_answer_fails_without_invented_picks(store: Store) -> None:
    backend = ScriptedBackend(lambda p, n, k, a: "I like all of them, they are great.")
    execute(store, "run-x", make_subsets(2), backend=backend, k=1, prompt=PROMPT)
    results = store.subset_results("run-x")
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert all(r["picks"] == [] and len(r["raw"]) == 2 and r["error"] for r in results)
    summary = finalize(store, "run-x", budget=2)
    assert summary["selected"] == 0 and summary["short_by"] == 2


def test_backend_errors_stop_the_run_and_resume_calls_only_the_rest(store: Store) -> None:
    calls = {"n": 0}

    class Flaky(ScriptedBackend):
        def chat(self, messages, **kw):  # noqa: ANN001, ANN003
            calls["n"] += 1
            if calls["n"] > 2:
                raise BackendError("server down")
            return super().chat(messages, **kw)

    with pytest.raises(BackendError, match="run the same command again"):
        execute(store, "run-x", make_subsets(8), backend=Flaky(), k=1, prompt=PROMPT)
    assert store.done_subsets("run-x") == {0, 1}
    fresh = ScriptedBackend()
    execute(store, "run-x", make_subsets(8), backend=fresh, k=1, prompt=PROMPT)
    assert len(fresh.calls) == 6
    assert store.done_subsets("run-x") == set(range(8))
    calls_log = store.calls("run-x")
    ok_calls = calls_log[calls_log["ok"] == 1]
    assert not ok_calls.duplicated(["subset", "attempt"]).any()


def test_remote_backends_are_called_concurrently_and_usage_is_recorded(store: Store) -> None:
    backend = ScriptedBackend(concurrency=4, delay=0.05)
    execute(store, "run-x", make_subsets(12), backend=backend, k=1, prompt=PROMPT)
    assert backend.max_in_flight > 1
    usage = store.usage("run-x")
    assert usage["calls"] == 12 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_trim_takes_first_picks_of_every_subset_first() -> None:
    results = [
        {"subset": 0, "status": "ok", "picks": ["a1", "a2"], "reasons": {}},
        {"subset": 1, "status": "failed", "picks": [], "reasons": {}},
        {"subset": 2, "status": "ok", "picks": ["c1", "c2"], "reasons": {"c2": "why"}},
    ]
    assert [r[0] for r in trim_picks(results, 3)] == ["a1", "c1", "a2"]
    assert trim_picks(results, 10)[-1] == ("c2", 2, "why")


def test_prompt_shows_every_member_once(store: Store) -> None:
    backend = ScriptedBackend()
    subsets = make_subsets(1, size=7)
    execute(store, "run-x", subsets, backend=backend, k=1, prompt=PROMPT, seed=3)
    shown = shown_instructions(backend.calls[0][0]["content"])
    assert sorted(shown) == sorted(c.instruction for c in subsets[0])
