"""The workspace queries the pages make cost what the run has, not what the pool has (a 1M-row pool's picks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store


def _vm_steps(store: Store, call) -> int:  # noqa: ANN001 - a function of no arguments
    """SQLite virtual-machine instructions (in thousands) that `call` makes the workspace run."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    store._db.set_progress_handler(tick, 1000)
    try:
        call()
    finally:
        store._db.set_progress_handler(None, 1000)
    return ticks[0]


def test_the_selection_query_reads_the_picks_not_the_pool(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws.sqlite")

    def seeded(n: int) -> str:
        frame = pd.DataFrame({"instruction": [f"instruction {i} of {n}" for i in range(n)], "input": [""] * n})
        pool = load_pool(frame, name=f"pool of {n}")
        store.save_pool(pool)
        ids, run_id = pool.frame["id"].tolist(), f"run-{n}"
        store.create_run(run_id, pool_id=pool.pool_id, method="selectllm", params={}, prompt="", backend={})
        store.save_plan(run_id, [(ids[p], p, p % 10, p // 20) for p in range(n)])
        picks = range(0, n, n // 20)
        store.save_selection(run_id, [(ids[p], rank, None, "why", p // 20) for rank, p in enumerate(picks, start=1)])
        return run_id

    small, large = seeded(400), seeded(40_000)
    assert len(store.selection(small)) == len(store.selection(large)) == 20
    steps_small = _vm_steps(store, lambda: store.selection(small))
    steps_large = _vm_steps(store, lambda: store.selection(large))
    # a walk over the pool's rows would cost 100x more for the 100x pool; an index lookup per pick costs the same
    assert steps_large <= 2 * steps_small + 5, (steps_small, steps_large)
