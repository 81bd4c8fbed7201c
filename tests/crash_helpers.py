"""Worker processes for the crash-safety and concurrency tests (run as a script, or imported by the tests).

    python tests/crash_helpers.py serve      # a fork server: one JSON job per stdin line, one JSON reply per job
    python tests/crash_helpers.py session WORKSPACE RUN_ID NAME PEER ROUNDS

`serve` imports the core once, then forks a fresh worker process per job, so twenty-odd kill -9 trials do not
pay twenty-odd interpreter and pandas start-ups. A job is {"job": "run" | "decide", "args": {...},
"kill_after": seconds or null}: the server forks the worker, waits, sends SIGKILL to its own child if it is
still running (an unreaped child keeps its pid, so the signal cannot reach another process), reaps it and
replies {"killed": bool, "exit": code or null, "elapsed": seconds}.

Jobs:
- run: pipeline.run over a small fixture pool with the FakeEmbedder and a ScriptedBackend that waits a little
  per call, in the given workspace and cache.
- decide: store.set_decisions in batches `start..stop-1` (see `batch_decisions`), appending each batch number
  to a log file and flushing it only after the batch is committed.

`session` edits decisions as one of two curators sharing a workspace (see `edit_session`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from selectllm_core import pipeline  # noqa: E402
from selectllm_core.embed import EmbeddingCache  # noqa: E402
from selectllm_core.llm.cache import ResponseCache  # noqa: E402
from selectllm_core.pool.load import load_pool  # noqa: E402
from selectllm_core.store import Store  # noqa: E402
from tests.conftest import FakeEmbedder  # noqa: E402
from tests.fakes import ScriptedBackend  # noqa: E402

POOL = REPO / "tests" / "fixtures" / "pools" / "dolly.jsonl"  # 30 real Dolly rows
CONFIG = pipeline.RunConfig(budget=10, subset_size=3, seed=7)  # 10 subsets of 3, one pick each
N_SUBSETS = 10
DECISION_ROWS = 300
BATCH = 40
SHARED_ROW = "row-shared"


Outcome = tuple[pipeline.RunResult, ScriptedBackend]


def run_pipeline(workspace: Path | str, cache: Path | str, *, delay: float = 0.0) -> Outcome:
    """The crash test's run: fixture pool, FakeEmbedder, a ScriptedBackend waiting `delay` s per call."""
    backend = ScriptedBackend(delay=delay, label="crash-test")
    result = pipeline.run(load_pool(POOL), CONFIG, store=Store(workspace), backend=backend, embedder=FakeEmbedder(),
                          cache=EmbeddingCache(cache), responses=ResponseCache(cache))
    return result, backend


def batch_decisions(batch: int) -> dict[str, tuple[str, str]]:
    """Decisions of one batch: 40 rows (overlapping the next batches' rows) and the shared row, noted "b<batch>"."""
    rows = {f"row-{(batch * 7 + j) % DECISION_ROWS:03d}": ("accepted" if (batch + j) % 2 else "rejected", f"b{batch}")
            for j in range(BATCH)}
    return rows | {SHARED_ROW: ("accepted" if batch % 2 else "rejected", f"b{batch}")}


def save_decisions(workspace: Path | str, run_id: str, log: Path | str, start: int, stop: int) -> None:
    """Commit batches start..stop-1, logging each batch number once it is committed."""
    store = Store(workspace)
    with open(log, "a", encoding="utf-8") as fh:
        for batch in range(start, stop):
            store.set_decisions(run_id, batch_decisions(batch))
            fh.write(f"{batch}\n")
            fh.flush()


def edit_session(workspace: Path | str, run_id: str, name: str, peer: str, rounds: int,
                 timeout: float = 60.0) -> None:
    """One curator: every round upserts one of its own 40 rows; on its turns it also sets the shared row.

    Rounds alternate turns (even rounds: the session named first in sorted order). Before its turn a session
    waits until it reads the peer's previous shared value, so the shared row's last committed value is known:
    the one written in the last round. Own rows are upserted again every 40 rounds.
    """
    store = Store(workspace)
    first = min(name, peer)
    deadline = time.monotonic() + timeout
    for r in range(rounds):
        batch = {f"{name}-{r % 40:02d}": ("accepted" if r % 3 else "rejected", f"{name}:{r}")}
        if (r % 2 == 0) == (name == first):
            if r:
                while _note(store, run_id, SHARED_ROW) != f"{peer}:{r - 1}":
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} waited too long for {peer}'s round {r - 1}")
                    time.sleep(0.001)
            batch[SHARED_ROW] = ("accepted", f"{name}:{r}")
        store.set_decisions(run_id, batch)
    store.close()


def _note(store: Store, run_id: str, row_id: str) -> str | None:
    frame = store.decisions(run_id)
    hit = frame[frame["id"] == row_id]
    return None if hit.empty else hit["note"].item()


# -- fork server --------------------------------------------------------------------------------------------

def _do_job(job: dict) -> None:
    args = job["args"]
    if job["job"] == "run":
        run_pipeline(args["workspace"], args["cache"], delay=args.get("delay", 0.0))
    elif job["job"] == "decide":
        save_decisions(args["workspace"], args["run_id"], args["log"], args["start"], args["stop"])
    else:
        raise ValueError(f"unknown job {job['job']!r}")


def _fork_job(job: dict) -> dict:
    """Run one job in a forked child; kill it after job["kill_after"] seconds if it is still running."""
    stderr = os.open(job.get("stderr", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the server's loop
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(stderr, 2)
            _do_job(job)
        except BaseException:  # noqa: BLE001 - report anything, then leave without running the parent's cleanup
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(stderr)
    killed = False
    if job.get("kill_after") is not None:
        time.sleep(job["kill_after"])
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            killed = True
            _, status = os.waitpid(pid, 0)
    else:
        _, status = os.waitpid(pid, 0)
    return {"killed": killed, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "elapsed": time.monotonic() - start}


def _warm_up() -> None:
    """Import and exercise the clustering libraries once (no files opened), so forked workers start fast."""
    from selectllm_core.split import make_subsets, plan_budget

    vectors = FakeEmbedder().encode([f"warm-up {i}" for i in range(30)])
    budget = plan_budget(len(vectors), CONFIG.budget, subset_size=CONFIG.subset_size)
    make_subsets(vectors, budget, strategy=CONFIG.split, random_state=0)


def serve() -> None:
    """Answer jobs from stdin until it closes."""
    _warm_up()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_fork_job(json.loads(line))), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] == "session":
        ws, run_id, name, peer, rounds = sys.argv[2:7]
        edit_session(ws, run_id, name, peer, int(rounds))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}; use serve or session")
