"""Embedding throughput and agreement, as ratios measured in one run (the machine is shared: no absolute claims).

    python benchmarks/bench_embed.py --data DIR                          # all sections, 1000 texts, 3 rounds
    python benchmarks/bench_embed.py --data DIR --sections misses,hits --rows 1000 --rounds 3
    python benchmarks/bench_embed.py --data DIR --sections fast --pca-dims 256 0

Sections:
- misses: raw sentence-transformers `encode` vs our `embed_texts` on an empty cache (same model object, same
  texts, same batch size), plus the two suspects of any gap: chunking (encode called per cache-write chunk) and
  hashing + SQLite writes. Variants run interleaved, their order rotated each round; ratios are medians of the
  per-round ratios.
- hits: `embed_texts` on a warm cache (same connection, and a freshly opened one) vs computing.
- fast: the model2vec distillation of all-MiniLM-L6-v2 (selectllm_core.embed.model2vec): one-off build time, encode
  speed vs MiniLM on the same texts, and neighbour overlap at 10 with MiniLM on real instructions.
- ray (not in the default list): the Ray engine's embedding on this machine vs in-process, same texts.
Texts: a seeded sample of the real instructions in benchmarks/_data.SOURCES, in the paper's text format.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import CACHE_DIR, base_embeddings, data_dir, load_texts  # noqa: E402
from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts, text_key  # noqa: E402
from selectllm_core.embed.model2vec import Model2VecEmbedder, fast_model_id  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--sections", default="misses,hits,fast", help="comma list of: misses, hits, fast, ray")
    p.add_argument("--rows", type=int, default=1000, help="texts timed per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (ratios are per-round medians)")
    p.add_argument("--batch-size", type=int, default=64, help="forward-pass batch (our embedder's default: 64)")
    p.add_argument("--pca-dims", type=int, nargs="+", default=[256], help="model2vec variants (0: no PCA)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    """n distinct texts drawn with a fixed seed (distinct: a repeat would be a cache hit)."""
    unique = list(dict.fromkeys(texts))
    idx = np.random.default_rng(seed).choice(len(unique), size=min(n, len(unique)), replace=False)
    return [unique[i] for i in idx]


def timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def rounds(variants: dict[str, Callable[[int], object]], n_rounds: int) -> dict[str, list[float]]:
    """Seconds per variant per round; the variant order rotates each round against drift in machine load."""
    names = list(variants)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(timed(lambda v=variants[name], r=r: v(r)))
        print(f"round {r + 1}/{n_rounds}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in out.items()), file=sys.stderr)
    return out


def ratio_rows(times: dict[str, list[float]], base: str, n: int) -> pd.DataFrame:
    """One row per variant: median seconds, texts/s, and median per-round time ratio to `base`."""
    rows = []
    for name, secs in times.items():
        ratios = [s / b for s, b in zip(secs, times[base], strict=True)]
        rows.append({"variant": name, "median s": round(statistics.median(secs), 2),
                     "texts/s": round(n / statistics.median(secs), 1),
                     f"time / {base}": round(statistics.median(ratios), 3),
                     "per-round ratios": " ".join(f"{x:.3f}" for x in ratios)})
    return pd.DataFrame(rows)


def embed_texts_length_sorted(texts: Sequence[str], *, embedder, cache: EmbeddingCache,  # noqa: ANN001
                              batch_size: int = 256):  # noqa: ANN201
    """embed_texts with the proposed fix: misses sorted by length before chunking (the diff in the README)."""
    keys = [text_key(t) for t in texts]
    found = cache.get_many(embedder.model_id, keys)
    misses = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
    todo = sorted(misses.items(), key=lambda kt: -len(kt[1]))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        new = dict(zip([k for k, _ in chunk], embedder.encode([t for _, t in chunk]), strict=True))
        cache.put_many(embedder.model_id, new)
        found.update(new)
    return np.stack([found[k] for k in keys])


def padded_tokens(st, calls: list[list[str]], batch_size: int) -> int:  # noqa: ANN001
    """Tokens the model runs, padding included, when `encode` is called once per list in `calls`.

    sentence-transformers sorts each call's texts by length (longest first) and pads each batch to its
    longest text, so this count, unlike a timing, is the same on a busy and on an idle machine.
    """
    total = 0
    for texts in calls:
        lengths = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            total += len(batch) * max(lengths[i] for i in batch)
    return total


def section_misses(texts: list[str], args: argparse.Namespace, work: Path) -> tuple[pd.DataFrame, float]:
    """Raw encode vs embed_texts on empty caches; returns the table and the median compute time of ours."""
    embedder = SentenceTransformerEmbedder(batch_size=args.batch_size)
    st = embedder._load()  # the same model object for every variant
    st.encode(texts[:64], batch_size=args.batch_size)  # warm-up outside the timings

    def raw(_r: int) -> object:
        return st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)

    def raw_chunked(_r: int) -> object:
        return [embedder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)]

    def ours(r: int) -> object:
        return embed_texts(texts, embedder=embedder, cache=EmbeddingCache(work / f"misses-{r}"))

    def ours_sorted(r: int) -> object:
        return embed_texts_length_sorted(texts, embedder=embedder, cache=EmbeddingCache(work / f"sorted-{r}"))

    variants = {"raw encode": raw, "raw encode per 256-chunk": raw_chunked, "embed_texts (now)": ours,
                "embed_texts, misses length-sorted (proposed)": ours_sorted}
    times = rounds(variants, args.rounds)
    vectors = np.random.default_rng(0).standard_normal((len(texts), 384)).astype(np.float32)
    hashing = timed(lambda: [text_key(t) for t in texts])
    items = dict(zip(map(text_key, texts), vectors, strict=True))
    writing = timed(lambda: EmbeddingCache(work / "writes").put_many("m", items))
    table = ratio_rows(times, "raw encode", len(texts))
    chunks = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    by_length = sorted(texts, key=len, reverse=True)
    sorted_chunks = [by_length[i : i + 256] for i in range(0, len(texts), 256)]
    calls = {"raw encode": [texts], "raw encode per 256-chunk": chunks, "embed_texts (now)": chunks,
             "embed_texts, misses length-sorted (proposed)": sorted_chunks}
    padded = {name: padded_tokens(st, c, args.batch_size) for name, c in calls.items()}
    table["padded tokens / raw (exact)"] = [round(padded[v] / padded["raw encode"], 3) for v in table["variant"]]
    extra = pd.DataFrame([{"variant": "sha256 keys only (once)", "median s": round(hashing, 4)},
                          {"variant": "SQLite put_many only (once)", "median s": round(writing, 4)}])
    return pd.concat([table, extra], ignore_index=True), statistics.median(times["embed_texts (now)"])


def section_hits(texts: list[str], args: argparse.Namespace, work: Path, compute_s: float | None) -> pd.DataFrame:
    """Warm-cache embed_texts vs computing the same texts."""
    embedder = SentenceTransformerEmbedder(batch_size=args.batch_size)
    cache = EmbeddingCache(work / "hits")
    first = timed(lambda: embed_texts(texts, embedder=embedder, cache=cache))
    compute = compute_s if compute_s is not None else first
    warm = [timed(lambda: embed_texts(texts, embedder=embedder, cache=cache)) for _ in range(args.rounds)]
    cold = [timed(lambda: embed_texts(texts, embedder=embedder, cache=EmbeddingCache(work / "hits")))
            for _ in range(args.rounds)]
    assert cache.misses == len(texts) and cache.hits == len(texts) * args.rounds
    rows = [{"case": "compute (cache misses)", "median s": round(compute, 3), "speed-up vs compute": 1.0}]
    for label, secs in (("hits, same cache object", warm), ("hits, cache file reopened", cold)):
        med = statistics.median(secs)
        rows.append({"case": label, "median s": round(med, 4), "speed-up vs compute": round(compute / med)})
    return pd.DataFrame(rows)


def overlap_at(a: np.ndarray, b: np.ndarray, *, k: int = 10, queries: int = 3000, seed: int = 0) -> float:
    """Mean share of each query's k nearest neighbours (cosine, itself excluded) found by both embeddings."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(a), size=min(queries, len(a)), replace=False)
    found = []
    for x in (a, b):
        sims = x[idx] @ x.T
        sims[np.arange(len(idx)), idx] = -np.inf
        found.append(np.argpartition(-sims, k, axis=1)[:, :k])
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(*found, strict=True)]))


def section_fast(texts: list[str], args: argparse.Namespace, folder: Path) -> pd.DataFrame:
    """model2vec vs MiniLM: build time, encode speed ratio on the same texts, neighbour overlap at 10."""
    all_texts = load_texts(folder)
    minilm_all = base_embeddings(folder)  # cached MiniLM vectors of every text in _data.SOURCES
    st = SentenceTransformerEmbedder(batch_size=args.batch_size)
    st.encode(texts[:64])
    rows = []
    for dims in args.pca_dims:
        pca = dims or None
        fast = Model2VecEmbedder(CACHE_DIR / "models" / fast_model_id(pca_dims=pca), pca_dims=pca)
        build = timed(lambda f=fast: f.encode(["warm-up"])) if not fast.built else None
        fast.encode(texts[:64])
        times = rounds({"MiniLM": lambda _r: st.encode(texts), "model2vec": lambda _r, f=fast: f.encode(texts)},
                       args.rounds)
        fast_all = fast.encode(all_texts)
        rng = np.random.default_rng(args.seed)
        agree = {}
        for n in (300, 3000, len(all_texts)):
            idx = rng.choice(len(all_texts), size=n, replace=False)
            agree[n] = overlap_at(minilm_all[idx], fast_all[idx], queries=min(n, 3000), seed=args.seed)
        speed = statistics.median([m / f for m, f in zip(times["MiniLM"], times["model2vec"], strict=True)])
        rows.append({"model": fast.model_id, "dim": fast_all.shape[1],
                     "build s (once)": "cached" if build is None else round(build),
                     "speed-up vs MiniLM": round(speed, 1),
                     **{f"overlap@10, pool {n}": round(v, 3) for n, v in agree.items()},
                     "chance, pool 300": round(10 / 299, 3)})
    return pd.DataFrame(rows)


def one_thread(call: Callable[[list[str]], object], texts: list[str]) -> object:
    """Run call(texts) with torch limited to one thread (what each Ray actor gets), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return call(texts)
    finally:
        torch.set_num_threads(before)


def section_ray(texts: list[str], args: argparse.Namespace) -> pd.DataFrame:
    """RayEmbedder (one actor per CPU, one torch thread each) vs in-process encode, on this machine."""
    import ray

    from selectllm_core.engines.ray import RayEmbedder

    ray.init(include_dashboard=False, log_to_driver=False)
    local = SentenceTransformerEmbedder(batch_size=args.batch_size)
    local.encode(texts[:64])
    with RayEmbedder(SentenceTransformerEmbedder, batch_size=2 * args.batch_size) as on_ray:
        on_ray.encode(texts)  # starts the actors and loads their models outside the timings
        times = rounds({"in-process encode": lambda _r: local.encode(texts),
                        "in-process encode, 1 torch thread": lambda _r: one_thread(local.encode, texts),
                        f"Ray, {len(on_ray._actors)} actors x 1 thread": lambda _r: on_ray.encode(texts)},
                       args.rounds)
    ray.shutdown()
    return ratio_rows(times, "in-process encode", len(texts))


def main() -> None:
    args = parse_args()
    folder = data_dir(args.data)
    sections = {s.strip() for s in args.sections.split(",")}
    texts = sample(load_texts(folder), args.rows, args.seed)
    import torch

    print(f"{len(texts)} distinct real instructions (seed {args.seed}), mean {np.mean([len(t) for t in texts]):.0f} "
          f"chars; batch {args.batch_size}; torch threads {torch.get_num_threads()}; {args.rounds} rounds\n")
    compute_s = None
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        if "misses" in sections:
            table, compute_s = section_misses(texts, args, work)
            print("### Cache misses: embed_texts vs raw sentence-transformers encode\n")
            print(table.to_markdown(index=False) + "\n")
        if "hits" in sections:
            print("### Cache hits vs computing\n")
            print(section_hits(texts, args, work, compute_s).to_markdown(index=False) + "\n")
    if "ray" in sections:
        print("### Ray engine on this machine (embedding)\n")
        print(section_ray(texts, args).to_markdown(index=False) + "\n")
    if "fast" in sections:
        print("### Fast embedder (model2vec distillation of all-MiniLM-L6-v2)\n")
        print(section_fast(texts, args, folder).to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
