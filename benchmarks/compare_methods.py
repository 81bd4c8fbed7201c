"""Run several selection methods on one real pool and print their comparison as markdown.

    python benchmarks/compare_methods.py --data DIR            # DIR: the shared instruction-data folder
    python benchmarks/compare_methods.py --data DIR --rows 600 --budget 30 --subset-size 20

Methods: random, length (longest and shortest first), k-center coreset, DEITA-like (length score), and SelectLLM
with the bundled SmolLM2-135M, with and without shuffling (for the position-bias report). The bundled model is far
too small to judge instructions: its SelectLLM runs show the pipeline, the costs and the position bias, not what a
capable model would pick. `--with-rating` adds AlpaGasus and SelectIT (one rating call per row, resp. k per row).
Everything goes to a fresh workspace under --workdir (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import data_dir  # noqa: E402
from selectllm_core import methods
from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts  # noqa: E402
from selectllm_core.llm import make_backend  # noqa: E402
from selectllm_core.pipeline import RunConfig  # noqa: E402
from selectllm_core.pipeline import run as run_selectllm  # noqa: E402
from selectllm_core.pool.load import load_pool  # noqa: E402
from selectllm_core.runs import compare  # noqa: E402
from selectllm_core.runs.compare import markdown_table  # noqa: E402
from selectllm_core.store import Store  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--file", default="dolly_alpagasus_3k.jsonl.gz", help="pool file inside the data folder")
    p.add_argument("--rows", type=int, default=600, help="first rows of the file used as the pool")
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--subset-size", type=int, default=20, help="SelectLLM candidates per query")
    p.add_argument("--max-input-chars", type=int, default=300, help="SelectLLM: cut long inputs in the prompt")
    p.add_argument("--with-rating", action="store_true", help="also run AlpaGasus and SelectIT (slow locally)")
    p.add_argument("--workdir", default=None, help="workspace folder (default: a temporary one)")
    return p.parse_args()


def first_rows(path: Path, rows: int) -> pd.DataFrame:
    """The first `rows` records of a gzip JSONL file."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return pd.DataFrame([json.loads(line) for _, line in zip(range(rows), handle, strict=False)])


def main() -> None:
    args = parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="selectllm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store, cache = Store(work / "workspace.sqlite"), EmbeddingCache(work / "cache")
    embedder, backend = SentenceTransformerEmbedder(), make_backend("local")
    pool = load_pool(first_rows(data_dir(args.data) / args.file, args.rows), name=f"{args.file}:{args.rows}")
    timings: list[dict] = []

    def timed(label: str, call) -> str:  # noqa: ANN001
        t0 = time.perf_counter()
        run_id = call()
        timings.append({"run": run_id, "label": label, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{label}: {run_id} in {timings[-1]['seconds']} s", file=sys.stderr)
        return run_id

    t0 = time.perf_counter()
    emb = embed_texts(pool.frame["text"].tolist(), embedder=embedder, cache=cache)
    timings.append({"run": "", "label": f"embed the pool ({emb.computed} new vectors)",
                    "seconds": round(time.perf_counter() - t0, 1)})
    budget = args.budget
    runs = [
        timed("random", lambda: methods.run_method("random", pool, budget=budget, store=store).run_id),
        timed("length longest", lambda: methods.run_method("length", pool, budget=budget, store=store).run_id),
        timed("length shortest", lambda: methods.run_method("length", pool, budget=budget, store=store,
                                                            order="shortest").run_id),
        timed("coreset", lambda: methods.run_method("coreset", pool, budget=budget, store=store, embedder=embedder,
                                                    cache=cache).run_id),
        timed("deita (length)", lambda: methods.run_method("deita", pool, budget=budget, store=store,
                                                           embedder=embedder, cache=cache).run_id),
    ]
    for shuffle in (True, False):
        config = RunConfig(budget=budget, subset_size=args.subset_size, shuffle=shuffle,
                           max_input_chars=args.max_input_chars)
        runs.append(timed(f"selectllm shuffle={shuffle}", lambda c=config: run_selectllm(
            pool, c, store=store, backend=backend, embedder=embedder, cache=cache).run_id))
    if args.with_rating:
        runs.append(timed("alpagasus", lambda: methods.run_method("alpagasus", pool, budget=budget, store=store,
                                                                  backend=backend).run_id))
        runs.append(timed("selectit", lambda: methods.run_method("selectit", pool, budget=budget, store=store,
                                                                 backend=backend).run_id))
    result = compare.compare_runs(store, runs, embedder=embedder, cache=cache)
    print(f"Pool: first {len(pool.frame)} rows of {args.file} (after dropping duplicates), budget {budget}; "
          f"SelectLLM: subsets of {args.subset_size}, bundled SmolLM2-135M (too small to judge quality).\n")
    print(compare.to_markdown(result))
    print("\n### Wall time (seconds on a shared 2-core machine; the methods reuse the cached embeddings)\n")
    print(markdown_table(pd.DataFrame(timings), digits=1))
    print(f"\nWorkspace: {work / 'workspace.sqlite'}", file=sys.stderr)


if __name__ == "__main__":
    main()
