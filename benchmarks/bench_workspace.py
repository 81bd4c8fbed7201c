"""The workspace at 1M rows: load time, peak memory, file size, and the queries the pages make.

    python benchmarks/bench_workspace.py --data DIR                       # 1,000,000 rows, 1,000 and 10,000 picks
    python benchmarks/bench_workspace.py --data DIR --rows 100000 --rounds 5

The pool is built as `bench_scale` builds it: the ~14.6k real shared instructions, repeated with a
"(variant i)" suffix beyond them. It is saved into a real SQLite workspace file with `Store.save_pool`. A run is
recorded as the run driver records one (every row's cluster and subset, then the selection) without asking a
model: the queries below read the same tables either way. A tenth of the picks get a decision.

Each query is timed against what a page did before, in the same process, rounds interleaved, median:
- pool summary (the sidebar, a new session): `Store.list_pools`, against loading the whole pool
  (`Store.load_pool`, which the sidebar used to call for the name and the row count);
- the run's selection (Review, Export, the Select page's picks): `Store.selection`, against the same SQL with a
  plain JOIN, which SQLite planned as a walk over every row of the pool;
- the review filter: `studio.review.filter_picks` over the selection (one cluster, pending decisions).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._data import data_dir, load_texts  # noqa: E402
from benchmarks.bench_scale import pool_frame  # noqa: E402
from selectllm_core.pool.load import load_pool  # noqa: E402
from selectllm_core.store import Store  # noqa: E402
from selectllm_core.studio import review  # noqa: E402

OLD_SELECTION = (  # Store.selection's SQL before the CROSS JOIN
    "SELECT s.row_id AS id, p.instruction, p.input, rr.cluster, COALESCE(s.subset, rr.subset) AS subset, s.reason, "
    "s.score, s.rank, COALESCE(s.origin, 'model pick') AS origin, COALESCE(d.decision, 'pending') AS decision, "
    "COALESCE(d.note, '') AS note, p.extra FROM selection s JOIN pool_rows p ON p.pool_id = ? AND p.row_id = s.row_id "
    "LEFT JOIN run_rows rr ON rr.run_id = s.run_id AND rr.row_id = s.row_id "
    "LEFT JOIN decisions d ON d.run_id = s.run_id AND d.row_id = s.row_id WHERE s.run_id = ? ORDER BY s.rank")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each call, the calls interleaved round by round."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="the shared instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--picks", default="1000,10000", help="selection sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    texts = load_texts(data_dir(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ws.sqlite"
        store = Store(path)
        frame = pool_frame(texts, args.rows)
        start = time.perf_counter()
        pool = load_pool(frame, name="bench")
        store.save_pool(pool)
        load_s = time.perf_counter() - start
        ids, n = pool.frame["id"].tolist(), len(pool.frame)
        del frame
        print(f"{n:,} rows after loading; load_pool + save_pool {load_s:.1f} s; peak memory {peak_gib():.2f} GiB")
        for k in (int(x) for x in args.picks.split(",")):
            run_id = f"run-{k}"
            store.create_run(run_id, pool_id=pool.pool_id, method="selectllm", params={}, prompt="", backend={})
            store.save_plan(run_id, [(ids[i], i, i % 1000, i // 20) for i in range(n)])
            step = n // k
            store.save_selection(run_id, [(ids[i], rank, None, "a reason", i // 20)
                                          for rank, i in enumerate(range(0, step * k, step), start=1)])
            store.set_decisions(run_id, {ids[i]: ("accepted", "") for i in range(0, step * k, 10 * step)})
            picks = store.selection(run_id)
            old = timed({"summary": store.list_pools, "whole pool": lambda: store.load_pool(pool.pool_id)}, 1)
            t = timed({"selection": lambda: store.selection(run_id),  # noqa: B023 - called in this iteration
                       "old selection": lambda: store._frame(OLD_SELECTION, (pool.pool_id, run_id)),  # noqa: B023
                       "review filter": lambda: review.filter_picks(picks, [int(picks["cluster"].iloc[0])],  # noqa: B023
                                                                    ["pending"])}, args.rounds)
            print(f"{k:,} picks: pool summary {old['summary'] * 1000:.1f} ms (whole pool {old['whole pool']:.1f} s, "
                  f"{old['whole pool'] / old['summary']:,.0f}x); selection {t['selection'] * 1000:.0f} ms "
                  f"(plain JOIN {t['old selection'] * 1000:.0f} ms, {t['old selection'] / t['selection']:.1f}x); "
                  f"review filter {t['review filter'] * 1000:.1f} ms")
        store.close()
        size = sum(f.stat().st_size for f in Path(tmp).glob("ws.sqlite*")) / 2**20
        print(f"workspace file {size:,.0f} MiB; peak memory {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
