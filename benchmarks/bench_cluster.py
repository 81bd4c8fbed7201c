"""Benchmark equal-size K-means: the "fast" method against k-means-constrained (the reference).

Each run happens in its own subprocess, so that its peak memory (ru_maxrss) is its own. Pools are
jittered copies of real instruction embeddings (see _data.py and the README). Prints a markdown table.

    python benchmarks/bench_cluster.py --data DIR            # or set SELECTLLM_DATA_DIR
    python benchmarks/bench_cluster.py --data DIR --cases 52k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SIGMA = 0.02
CASES = {  # name: (rows, clusters, methods)
    "52k": (52_020, 51, ["constrained", "fast"]),
    "1m": (1_000_000, 1_000, ["fast"]),
}
SKIPPED = {
    ("1m", "constrained"): "not run: its flow graph has n * k = 10^9 arcs; the int32 edge list alone "
                           "is 8 GB, the float64 cost and distance arrays 16 GB more (machine: 23 GiB)",
}


def worker(data: str, case: str, method: str, seed: int) -> dict:
    """Build the pool, run one clustering, and report time, quality and memory."""
    import importlib

    import _data
    import numpy as np

    from selectllm_core.split.kmeans import equal_size_kmeans

    # import what either method uses up front, so that neither pays for imports inside the timing
    for name in ("k_means_constrained", "ortools.graph.python.min_cost_flow", "scipy.sparse.csgraph",
                 "sklearn.cluster"):
        importlib.import_module(name)
    rows, k, _ = CASES[case]
    base = _data.base_embeddings(_data.data_dir(data))
    X = _data.jittered_pool(base, rows, sigma=SIGMA, seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    result = equal_size_kmeans(X, n_clusters=k, random_state=seed, method=method)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sizes = np.bincount(result.labels, minlength=k)
    return {"case": case, "method": result.method, "rows": rows, "dims": X.shape[1], "k": k,
            "wall_s": wall, "cpu_s": cpu, "inertia": result.inertia, "n_iter": result.n_iter,
            "exact_sizes": bool((sizes == rows // k).all()), "base_rows": len(base),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_before_gib": rss_before / 2**20}


def run_case(data: str, case: str, method: str, seed: int) -> dict:
    """Run one worker in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--data", data, "--worker", case, method,
           "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{case} {method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    """Markdown table; ratios are against the reference run of the same case."""
    lines = ["| pool | clusters | method | wall s | CPU s | steps | inertia | inertia / ref | speed-up (wall) "
             "| peak RSS GiB (pool alone) | exact sizes |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case, (rows, k, _) in CASES.items():
        ref = next((r for r in results if r["case"] == case and r["method"] == "constrained"), None)
        for r in (r for r in results if r["case"] == case):
            ratio = f"{r['inertia'] / ref['inertia']:.4f}" if ref else "n/a"
            speed = f"{ref['wall_s'] / r['wall_s']:.1f}x" if ref and r is not ref else ("1x" if ref else "n/a")
            lines.append(f"| {rows:,} x {r['dims']} | {k} | {r['method']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                         f"| {r['n_iter']} | {r['inertia']:,.1f} | {ratio} | {speed} "
                         f"| {r['peak_rss_gib']:.2f} ({r['rss_before_gib']:.2f}) | {r['exact_sizes']} |")
        for (c, method), why in SKIPPED.items():
            if c == case:
                lines.append(f"| {rows:,} x 384 | {k} | {method} | {why} |" + " — |" * 7)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="instruction-data folder (default: env SELECTLLM_DATA_DIR)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--seed", type=int, default=0, help="random_state for both methods")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.data, *args.worker, args.seed)))
        return
    data = str(__import__("_data").data_dir(args.data))
    load = os.getloadavg()
    results = []
    for case in args.cases.split(","):
        for method in CASES[case][2]:
            print(f"running {case} {method} ...", file=sys.stderr, flush=True)
            results.append(run_case(data, case, method, args.seed))
    print(table(results))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; sigma={SIGMA}, seed={args.seed}; "
          f"base pool {results[0]['base_rows']:,} real instructions")


if __name__ == "__main__":
    main()
