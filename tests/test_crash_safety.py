"""kill -9 at random points, during a run and while decisions are saved: nothing committed is lost.

Workers are forked by `crash_helpers.py serve` (the core imported once, a fresh process per trial) and killed
with SIGKILL after a seeded random delay. After every kill the workspace passes SQLite's integrity check and
opens; a killed run resumes to the picks of an uninterrupted run, calling only the subsets it had not stored;
every decision batch the worker logged as committed is there, and the batch in flight is all or nothing.
"""

from __future__ import annotations

import json
import os
import random
import select
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectllm_core.store import Store
from tests.crash_helpers import N_SUBSETS, batch_decisions, run_pipeline

HELPERS = Path(__file__).with_name("crash_helpers.py")
DELAY = 0.02  # seconds per fake LLM call in the worker: a whole run takes about half a second
TRIALS = 24  # half runs, half decision loops
DECISIONS_RUN = "run-decisions"


class ForkServer:
    """Client of `crash_helpers.py serve`: one JSON job in, one JSON reply out."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, str(HELPERS), "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
        assert self._reply(timeout=120) == {"ready": True}

    def job(self, job: str, kill_after: float | None = None, stderr: str = os.devnull, **args: object) -> dict:
        """Run one job in a fresh worker; SIGKILL it after `kill_after` seconds if it is still running."""
        self.proc.stdin.write(json.dumps({"job": job, "args": args, "kill_after": kill_after,
                                          "stderr": stderr}) + "\n")
        self.proc.stdin.flush()
        return self._reply(timeout=60)

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the fork server did not answer in time"
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fork_server(tmp_path: Path) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path)
    yield server
    server.close()


def assert_intact(path: Path) -> None:
    """The file (if the worker got as far as creating it) passes integrity_check and opens as a workspace."""
    if not path.exists():
        return
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path


def stored_subsets(workspace: Path) -> int:
    if not workspace.exists():
        return 0
    with sqlite3.connect(workspace) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM subset_results").fetchone()[0]
        except sqlite3.OperationalError:  # killed before the schema was written
            return 0


def committed_batches(log: Path) -> list[int]:
    """Batches the worker logged after their commit (complete lines only)."""
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    return [int(line) for line in text.split("\n")[:-1]]


def decisions_state(workspace: Path) -> dict[str, tuple[str, str]]:
    store = Store(workspace)
    frame = store.decisions(DECISIONS_RUN)
    store.close()
    return {r.id: (r.decision, r.note) for r in frame.itertuples()}


def expected_after(last: int) -> dict[str, tuple[str, str]]:
    """Decisions after batches 0..last, in order."""
    state: dict[str, tuple[str, str]] = {}
    for batch in range(last + 1):
        state.update(batch_decisions(batch))
    return state


def resume_and_check(workspace: Path, cache: Path, reference: list[str]) -> int:
    """Resume a killed run in this process; returns how many subsets it had stored before."""
    before = stored_subsets(workspace)
    result, backend = run_pipeline(workspace, cache)
    store = result.store
    try:
        # answers received before the kill but not yet stored come back from the response cache, unpaid
        asked = result.stats["llm_calls_sent"] + result.stats["llm_answers_cached"]
        assert asked == N_SUBSETS - before, "a stored subset was asked again"
        assert len(backend.calls) == result.stats["llm_calls_sent"]
        assert result.summary["short_by"] == 0
        results = store.subset_results(result.run_id)
        assert [(r["subset"], r["status"]) for r in results] == [(s, "ok") for s in range(N_SUBSETS)]
        calls = store.calls(result.run_id)
        assert not calls[calls["ok"] == 1].duplicated(["subset", "attempt"]).any()
        assert store.selection(result.run_id)["id"].tolist() == reference
    finally:
        store.close()
    return before


def test_kill_9_during_runs_and_decision_saves_loses_nothing_committed(tmp_path: Path,
                                                                       fork_server: ForkServer) -> None:
    rng = random.Random(1729)
    # an uninterrupted run in a worker: the picks every resumed run must reach, and how long a run takes
    ref = fork_server.job("run", workspace=str(tmp_path / "ref.sqlite"), cache=str(tmp_path / "ref-cache"),
                          delay=DELAY, stderr=str(tmp_path / "ref.err"))
    assert ref["exit"] == 0, (tmp_path / "ref.err").read_text()
    ref_store = Store(tmp_path / "ref.sqlite")
    reference = ref_store.selection(ref_store.list_runs()["run_id"].item())["id"].tolist()
    ref_store.close()
    assert len(reference) == N_SUBSETS
    decisions_ws, log = tmp_path / "decisions.sqlite", tmp_path / "decisions.log"
    stored_at_kill: list[int] = []
    kills = Counter()
    for trial in range(TRIALS):
        if trial % 2 == 0:
            ws, cache = tmp_path / f"run-{trial}.sqlite", tmp_path / f"cache-{trial}"
            reply = fork_server.job("run", kill_after=rng.uniform(0.0, 0.9 * ref["elapsed"]), workspace=str(ws),
                                    cache=str(cache), delay=DELAY)
            assert reply["killed"] or reply["exit"] == 0, reply
            kills["run"] += reply["killed"]
            assert_intact(ws)
            assert_intact(cache / "embeddings.sqlite")
            assert_intact(cache / "responses.sqlite")
            stored_at_kill.append(resume_and_check(ws, cache, reference))
        else:
            start = len(committed_batches(log))
            reply = fork_server.job("decide", kill_after=rng.uniform(0.0, 0.25), workspace=str(decisions_ws),
                                    run_id=DECISIONS_RUN, log=str(log), start=start, stop=start + 10**6)
            assert reply["killed"], reply
            kills["decide"] += 1
            assert_intact(decisions_ws)
            logged = committed_batches(log)
            assert logged == list(range(len(logged))), "the log must list batches 0..n once each"
            last = len(logged) - 1
            state = decisions_state(decisions_ws) if decisions_ws.exists() else {}
            done = expected_after(last)
            # every logged batch is there; the batch in flight at the kill is either fully there or absent
            assert state in (done, done | batch_decisions(last + 1)), f"trial {trial}: decisions lost or torn"
    # the decision loop then runs to completion
    start = len(committed_batches(log))
    reply = fork_server.job("decide", workspace=str(decisions_ws), run_id=DECISIONS_RUN, log=str(log), start=start,
                            stop=start + 50, stderr=str(tmp_path / "decide.err"))
    assert reply["exit"] == 0, (tmp_path / "decide.err").read_text()
    assert decisions_state(decisions_ws) == expected_after(start + 49)
    assert sum(kills.values()) >= 20, kills
    assert any(0 < n < N_SUBSETS for n in stored_at_kill), f"no kill landed mid-run: {stored_at_kill}"
    print(f"kills: {dict(kills)}; subsets stored when each run was killed: {stored_at_kill}; "
          f"decision batches committed: {start}")
