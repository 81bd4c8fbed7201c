"""A whole SelectLLM run at 10k, 100k and 1M rows on one machine: each stage's time, peak memory, workspace size,
calls and tokens.

    python benchmarks/bench_scale.py --data DIR                                  # 10k and 100k
    python benchmarks/bench_scale.py --data DIR --sizes 10000,100000,1000000     # and 1M (about half an hour)

Each size runs in a child process of its own, so its peak memory (the child's max RSS) is its own.

What is real and what is not, per stage:
- load: `load_pool` (validation, duplicates, ids) and `Store.save_pool` into a real SQLite workspace file. The
  pools are built from the ~14.6k real shared instructions; rows beyond them repeat them with a
  "(variant i)" suffix, so every row is distinct.
- embed: precomputed vectors, NOT a model: the real MiniLM vectors of the shared rows jittered (as `bench_map`
  does), written to and read from the real embedding cache. Model speed is `bench_embed`'s.
- plan: `pipeline.plan`, which sizes subsets to the model's context (4 characters a token for this remote
  backend) and plans the rounds.
- cluster and LLM: `pipeline.run` end to end with the real OpenAI-compatible client against the test suite's fake
  server, which answers at once with the first k candidates and charges 4 characters a token; at most
  `--subset-size` candidates a prompt (a context's cap), so for N / S above the budget the run plays rounds.
- map: the studio's map build with the PCA layout (UMAP at 1M rows takes hours on two cores); `bench_map`
  measures drawing in the browser.
- queries: the workspace reads the pages make: the pool list, the run's selection, the review filter.
- export: `export_run` to CSV.

Linear growth: calls and tokens per 1k rows stay flat as N grows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fake server lives with the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._data import base_embeddings, data_dir, jittered_pool, load_texts  # noqa: E402

K = re.compile(r"select (\d+) instructions")


class Precomputed:
    """An Embedder that returns the benchmark's vectors for the pool's texts (no model)."""

    model_id = "precomputed-jittered-minilm"

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors
        self.dim = vectors.shape[1]

    def encode(self, texts):  # noqa: ANN001, ANN201 - the Embedder protocol
        return self.vectors[[self.row[t] for t in texts]]


def first_k(body: dict, index: int) -> dict:
    """The fake server's answer: the first k candidates, k read from the prompt."""
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    k = int(K.search(text).group(1))
    return {"content": json.dumps({"picks": [{"id": i, "reason": "first"} for i in range(1, k + 1)]})}


def pool_frame(texts: list[str], n: int) -> pd.DataFrame:
    """n distinct rows: the real instructions, repeated with a variant number beyond the first pass."""
    rows = [texts[i % len(texts)] + ("" if i < len(texts) else f" (variant {i // len(texts)})") for i in range(n)]
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "instruction": rows, "input": [""] * n})


def peak_gib() -> float:
    """This process's peak resident memory so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one(n: int, *, folder: Path, budget: int, subset_size: int, work: Path) -> dict:
    """Every stage at one size, in this process."""
    from fake_openai_server import FakeOpenAIServer

    from selectllm_core import pipeline
    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.llm.openai_compat import OpenAICompatibleBackend
    from selectllm_core.pool.load import load_pool
    from selectllm_core.store import Store
    from selectllm_core.studio import review
    from selectllm_core.studio.map_build import build_map

    texts, base = load_texts(folder), base_embeddings(folder)
    out: dict = {"rows": n}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        out[f"{name}_s"], clock = now - clock, now
        out[f"{name}_peak_gib"] = peak_gib()

    frame = pool_frame(texts, n)
    vectors = jittered_pool(base, n, sigma=0.02, seed=n)
    clock = time.perf_counter()
    workspace = work / f"ws-{n}.sqlite"
    store = Store(workspace)
    pool = load_pool(frame, name=f"bench-{n}")
    store.save_pool(pool)
    out["pool_rows"] = len(pool.frame)  # the shared rows hold some duplicates, which loading drops
    del frame
    stage("load")
    cache = EmbeddingCache(work / f"cache-{n}")
    embedder = Precomputed(pool.frame["text"].tolist(), vectors)
    pipeline.embed(pool, embedder=embedder, cache=cache)
    stage("embed")
    config = pipeline.RunConfig(budget=budget, subset_size=subset_size)
    with FakeOpenAIServer(responder=first_k, max_requests=10 * n, lifetime=24 * 3600,
                          price_per_mtok=(1.0, 2.0)) as server:
        backend = OpenAICompatibleBackend(model="fake-model", base_url=server.base_url, api_key="bench",
                                          concurrency=4)
        plan = pipeline.plan(pool, config, backend=backend)
        out["rounds"] = " + ".join(f"{r.n_subsets:,}" for r in plan.rounds)
        stage("plan")
        res = pipeline.run(pool, config, store=store, backend=backend, embedder=embedder, cache=cache,
                           responses=False)
        server.requests.clear()
    out["cluster_s"], out["llm_s"] = res.stats["cluster_seconds"], res.stats["llm_seconds"]
    stage("run")
    build_map(pool, config, embedder=embedder, cache=cache, budget=plan, backend=backend, layout="pca",
              projection_root=work / f"layouts-{n}")
    stage("map")
    store.list_pools()
    stage("query_pools")
    picks = store.selection(res.run_id)
    stage("query_selection")
    review.filter_picks(picks, [int(picks["cluster"].iloc[0])], ["pending"])
    stage("query_review_filter")
    pipeline.export_run(store, res.run_id, work / f"picks-{n}.csv")
    stage("export")
    usage = store.usage(res.run_id)
    store.close()
    out.update(calls=usage["calls"], prompt_tokens=usage["prompt_tokens"], answer_tokens=usage["completion_tokens"],
               calls_per_1k=1000 * usage["calls"] / n,
               tokens_per_1k=1000 * (usage["prompt_tokens"] + usage["completion_tokens"]) / n,
               selected=res.summary["selected"], peak_gib=peak_gib(),
               workspace_mib=sum(p.stat().st_size for p in work.glob(f"ws-{n}.sqlite*")) / 2**20,
               embedding_cache_mib=sum(p.stat().st_size for p in (work / f"cache-{n}").rglob("*") if p.is_file())
               / 2**20)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="the shared instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--subset-size", type=int, default=20, help="candidates per prompt (a context's cap)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: measure this size, print JSON
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    folder = data_dir(args.data)
    if args.one:
        print(json.dumps(one(args.one, folder=folder, budget=args.budget, subset_size=args.subset_size,
                             work=Path(args.work))))
        return
    base_embeddings(folder)  # computed once, before the children read it
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            child = subprocess.run([sys.executable, __file__, "--data", str(folder), "--one", str(n), "--work", tmp,
                                    "--budget", str(args.budget), "--subset-size", str(args.subset_size)],
                                   capture_output=True, text=True, check=False)
            if child.returncode:
                raise SystemExit(f"{n:,} rows failed:\n{child.stderr[-3000:]}")
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).set_index("rows")
    fmt = {"float_format": lambda v: f"{v:,.2f}"}
    stages = [c for c in table.columns if c.endswith("_s")]
    print(f"\nbudget {args.budget}, at most {args.subset_size} candidates a prompt; seconds per stage:")
    print(table[stages].to_string(**fmt))
    print("\npeak memory (GiB; after each stage in the JSON lines above) and sizes on disk (MiB):")
    print(table[["peak_gib", "workspace_mib", "embedding_cache_mib"]].to_string(**fmt))
    print("\nLLM: rounds (subsets each), calls and tokens:")
    print(table[["pool_rows", "rounds", "calls", "prompt_tokens", "answer_tokens", "calls_per_1k", "tokens_per_1k",
                 "selected"]].to_string(**fmt))


if __name__ == "__main__":
    main()
