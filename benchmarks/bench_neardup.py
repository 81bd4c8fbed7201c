"""Near-duplicate groups on the real pools: how many at τ = 0.90 / 0.95 / 0.98, and what finding them costs.

    SELECTLLM_DATA_DIR=<shared data folder> python benchmarks/bench_neardup.py
    python benchmarks/bench_neardup.py --data DIR --fresh-embed --scale 52002

Per pool (each file of the shared data folder that loads as a pool, and all of them as one pool, which drops the
exact duplicates between files): rows kept by `load_pool`, the exact duplicates it dropped, the groups of
`near_duplicate_groups` and the rows "keep one per group" drops at each τ. Then, at τ = 0.95, the time of our
search (faiss `IndexFlatIP.range_search` and the stars in pool order) against the obvious alternative, a numpy
similarity matrix `X @ X.T` thresholded, with the same grouping (both give the same groups, checked), rounds
interleaved, median; the matrix's size; a second `pool_near_duplicates` call, which reads the result cache;
and the embedding time for reference (the bundled all-MiniLM-L6-v2, cached in `benchmarks/.cache/embeddings`;
`--fresh-embed` embeds into an empty cache so the time is the model's).

`--scale N`: jittered copies of the combined pool's vectors (`_data.jittered_pool`, sigma 0.02), for the time
at a size the shared data does not have (counts there mean nothing: copies of one row are close by design).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import CACHE_DIR, data_dir, jittered_pool  # noqa: E402
from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts  # noqa: E402
from selectllm_core.embed.neardup import EPS, LIBRARY, near_duplicate_groups, pool_near_duplicates  # noqa: E402
from selectllm_core.pool.load import ColumnMap, Pool, load_pool  # noqa: E402

# file -> explicit instruction column (None: detected); hh_rlhf holds whole dialogues, not instructions
FILES = {
    "selectllm_dolly_test.jsonl.gz": None, "selectllm_cleaned_alpaca_test.jsonl.gz": None,
    "dolly_alpagasus_3k.jsonl.gz": None, "alpaca_alpagasus_random_9k.jsonl.gz": None,
    "self_instruct_seed_tasks.jsonl.gz": None, "self_instruct_user_oriented_instructions.jsonl.gz": None,
    "alpaca_eval_text_davinci_003.jsonl.gz": None, "lima_test_set.jsonl.gz": "conversations",
    "xstest_prompts.jsonl.gz": None,
}
TAUS = (0.90, 0.95, 0.98)


def pools(folder: Path) -> list[Pool]:
    """Each file as a pool, then all of them as one (exact duplicates between files dropped)."""
    out = [load_pool(folder / name, columns=ColumnMap(col) if col else None) for name, col in FILES.items()]
    every = pd.concat([p.frame[["instruction", "input"]] for p in out], ignore_index=True)
    out.append(load_pool(every, name="all of the above"))
    return out


def numpy_groups(x: np.ndarray, tau: float) -> list[tuple[int, ...]]:
    """The alternative: the full similarity matrix, thresholded, grouped as ours (stars in pool order)."""
    sims = x @ x.T
    rows, cols = np.nonzero(sims >= tau - EPS)
    later = cols > rows
    rows, cols = rows[later], cols[later]
    taken, groups = np.zeros(len(x), dtype=bool), []
    starts = np.searchsorted(rows, np.arange(len(x) + 1))
    for row in np.unique(rows):
        if taken[row]:
            continue
        mine = cols[starts[row]:starts[row + 1]]
        mine = mine[~taken[mine]]
        if len(mine):
            groups.append((int(row), *map(int, mine)))
            taken[row], taken[mine] = True, True
    return groups


def timed(fn, rounds: int) -> tuple[float, object]:  # noqa: ANN001
    """Median seconds of `rounds` calls, and the last result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(pool: Pool, x: np.ndarray, *, rounds: int, numpy_alt: bool) -> dict:
    """Counts at each τ, and the times at 0.95 (ours and numpy interleaved, round by round)."""
    ids = pool.frame["id"].astype(str).tolist()
    row = {"pool": pool.name, "rows": len(ids), "exact duplicates dropped at load": pool.report.duplicates_dropped}
    for tau in TAUS:
        dups = near_duplicate_groups(x, ids, tau=tau)
        row[f"groups {tau:.2f}"], row[f"drops {tau:.2f}"] = dups.n_groups, dups.n_dropped
    ours, alt = [], []
    for _ in range(rounds):
        ours.append(timed(lambda: near_duplicate_groups(x, ids, tau=0.95), 1))
        if numpy_alt:
            alt.append(timed(lambda: numpy_groups(x, 0.95), 1))
    row["faiss s"] = statistics.median(t for t, _ in ours)
    if numpy_alt:
        position = {rid: k for k, rid in enumerate(ids)}
        same = [tuple(position[i] for i in g) for g in ours[-1][1].groups] == alt[-1][1]
        row["numpy s"] = statistics.median(t for t, _ in alt)
        row["numpy / faiss"] = row["numpy s"] / row["faiss s"]
        row["same groups"] = "yes" if same else "NO"
    row["numpy matrix MB"] = len(x) ** 2 * 4 / 2**20
    with tempfile.TemporaryDirectory() as root:
        pool_near_duplicates(pool, vectors=x, cache_root=root)
        row["cached call s"], again = timed(lambda: pool_near_duplicates(pool, vectors=x, cache_root=root), rounds)
        assert again.from_cache
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="instruction-data folder (default: env SELECTLLM_DATA_DIR)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method (median)")
    parser.add_argument("--fresh-embed", action="store_true", help="embed into an empty cache (times the model)")
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="jittered pools of these sizes (time only)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    embedder = SentenceTransformerEmbedder()
    with tempfile.TemporaryDirectory() as fresh:
        cache = EmbeddingCache(fresh if args.fresh_embed else CACHE_DIR / "embeddings")
        rows, combined = [], None
        for pool in pools(data_dir(args.data)):
            start = time.perf_counter()
            res = embed_texts(pool.frame["text"].tolist(), embedder=embedder, cache=cache)
            embed_s = time.perf_counter() - start
            row = measure(pool, res.vectors, rounds=args.rounds, numpy_alt=True)
            row["embed s"] = f"{embed_s:.1f} ({res.computed:,} computed)" if res.computed else f"{embed_s:.2f} (cached)"
            rows.append(row)
            combined = res.vectors
            print(f"{pool.name}: {row}", file=sys.stderr, flush=True)
    for n in args.scale:
        x = jittered_pool(combined, n, sigma=0.02)
        pool = load_pool(pd.DataFrame({"instruction": [f"row {i}" for i in range(n)]}), name=f"jittered x{n:,}")
        row = measure(pool, x, rounds=1, numpy_alt=False)
        rows.append({**row, "numpy s": "-", "numpy / faiss": "-", "same groups": "-", "embed s": "-"})
        print(f"{pool.name}: {row}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{LIBRARY}; {os.cpu_count()} CPUs; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    counts = ["pool", "rows", "exact duplicates dropped at load", *(c for t in TAUS for c in (f"groups {t:.2f}",
                                                                                            f"drops {t:.2f}"))]
    print(table[counts].to_markdown(index=False, intfmt=","))
    print()
    times = table[["pool", "rows", "faiss s", "numpy s", "numpy / faiss", "same groups", "numpy matrix MB",
                   "cached call s", "embed s"]].copy()
    for col, fmt in (("faiss s", "{:.3f}"), ("numpy s", "{:.3f}"), ("numpy / faiss", "{:.2f}"),
                     ("numpy matrix MB", "{:,.0f}"), ("cached call s", "{:.3f}"), ("rows", "{:,}")):
        times[col] = [fmt.format(v) if isinstance(v, int | float) else v for v in times[col]]
    print(times.to_markdown(index=False, colalign=("left", *["right"] * 8), disable_numparse=True))


if __name__ == "__main__":
    main()
