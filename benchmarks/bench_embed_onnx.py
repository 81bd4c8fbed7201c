"""int8 MiniLM on ONNX Runtime against fp32 MiniLM on torch: speed ratios and agreement, measured in one run.

    python benchmarks/bench_embed_onnx.py --data DIR                  # 3000 texts, 2 rounds
    python benchmarks/bench_embed_onnx.py --data DIR --rows 2000 --rounds 3 --variants torch,int8
    python benchmarks/bench_embed_onnx.py --data DIR --whole      # also: agreement on all 14,652 texts

Variants (every one the bundled all-MiniLM-L6-v2 on the same number of threads):
- torch: sentence-transformers fp32 on torch, forward batches of 64 longest first: what the studio runs by
  default (the reference);
- onnx-fp32: the same model exported to ONNX (selectllm_core.embed.int8.export_onnx), fp32: checks the export
  and our tokenisation and pooling against sentence-transformers, and separates ONNX Runtime's speed from int8's;
- int8: the shipped int8 model (selectllm_core.embed.int8: the config this CPU gets, each layer's FFN output
  projection in fp32);
- int8-portable: the same with the portable config (uint8 weights), what a CPU without VNNI gets;
- int8-all: every MatMul int8, as optimum's export_dynamic_quantized_onnx_model quantises (the config this CPU gets);
- int8-batched: the shipped int8 model in forward batches of 64 longest first, as sentence-transformers runs it.
The ONNX variants but int8-batched run each text alone, THREADS texts at once (OnnxMiniLM's way).

Speed: seconds per variant on the same texts, rounds interleaved with the order rotated; ratios are medians of
per-round ratios to torch. Agreement with torch fp32 on the same texts: cosine of each row's two vectors (mean,
min), and neighbour overlap@10 = mean over rows of |kNN10_fp32 ∩ kNN10_variant| / 10 (exact brute-force cosine
kNN within the pool, the row itself excluded), on the whole sample and on a random sub-pool of 300. Stability:
each variant again on the same texts cut into other chunks (a seeded shuffle, chunks of 256, as embed_texts cuts a
pool whose cache already holds other rows): cosine min and overlap@10 of the two runs' vectors (1.0: a text's
vector does not depend on the texts beside it). --whole: int8 and int8-all on every text of _data.SOURCES against
the cached MiniLM vectors (_data.base_embeddings), overlap@10 within random pools of 300, 3,000 and all rows (up to
3,000 query rows), as the model2vec section of bench_embed.py measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import base_embeddings, data_dir, load_texts  # noqa: E402
from benchmarks.bench_embed import overlap_at, rounds, sample  # noqa: E402
from selectllm_core.embed import SentenceTransformerEmbedder, bundled_model_path  # noqa: E402
from selectllm_core.embed.int8 import (  # noqa: E402
    KEEP_FP32,
    PORTABLE,
    OnnxMiniLM,
    choose_config,
    cpu_report,
    export_onnx,
    quantize,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--rows", type=int, default=3000, help="distinct real texts, timed per variant and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (ratios are per-round medians)")
    p.add_argument("--variants", default="torch,onnx-fp32,int8,int8-portable,int8-all,int8-batched")
    p.add_argument("--whole", action="store_true", help="also agreement on every text, against cached MiniLM")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_models(work: Path, config: str, wanted: set[str]) -> dict[str, str]:
    """Export once and quantise each wanted variant into `work`; file name per variant."""
    source = Path(bundled_model_path())
    for name in ("tokenizer.json", "sentence_bert_config.json"):
        shutil.copy2(source / name, work / name)
    fp32 = export_onnx(str(source), work / "fp32.onnx")
    files = {"onnx-fp32": fp32.name}
    recipes = {"int8": (config, KEEP_FP32), "int8-portable": (PORTABLE, KEEP_FP32), "int8-all": (config, ())}
    if "int8-batched" in wanted:
        wanted.add("int8")
    for variant, (cfg, keep) in recipes.items():
        if variant in wanted:
            files[variant] = quantize(fp32, work / f"{variant}.onnx", config=cfg, keep_fp32=keep).name
    if "int8-batched" in wanted:
        files["int8-batched"] = files["int8"]
    return files


def rechunked(encode, texts: list[str], seed: int) -> np.ndarray:  # noqa: ANN001
    """The texts encoded again in other chunks: a seeded shuffle cut into chunks of 256."""
    order = np.random.default_rng(seed + 1).permutation(len(texts))
    out = np.empty((len(texts), 384), np.float32)
    for start in range(0, len(texts), 256):
        rows = order[start : start + 256]
        out[rows] = encode([texts[i] for i in rows])
    return out


def agreement(ref: np.ndarray, vec: np.ndarray, seed: int) -> dict[str, float]:
    """Cosine to the reference rows and neighbour overlap@10, on the whole sample and a sub-pool of 300."""
    cos = (ref * vec).sum(axis=1)
    sub = np.random.default_rng(seed).choice(len(ref), size=min(300, len(ref)), replace=False)
    return {"cosine mean": round(float(cos.mean()), 4), "cosine min": round(float(cos.min()), 4),
            f"overlap@10, pool {len(ref)}": round(overlap_at(ref, vec, queries=len(ref), seed=seed), 3),
            f"overlap@10, pool {len(sub)}": round(overlap_at(ref[sub], vec[sub], queries=len(sub), seed=seed), 3)}


def whole_pool(folder: Path, models: dict[str, OnnxMiniLM], seed: int) -> pd.DataFrame:
    """Agreement with MiniLM on every benchmark text, within random pools of 300, 3,000 and all rows."""
    texts, base = load_texts(folder), base_embeddings(folder)
    rows = []
    for name, model in models.items():
        vectors, rng = model.encode(texts), np.random.default_rng(seed)
        cos = (vectors * base).sum(axis=1)
        row = {"variant": name, "rows": len(texts), "cosine mean": round(float(cos.mean()), 4),
               "cosine min": round(float(cos.min()), 4)}
        for n in (300, 3000, len(texts)):
            idx = rng.choice(len(texts), size=n, replace=False)
            row[f"overlap@10, pool {n}"] = round(overlap_at(base[idx], vectors[idx], queries=min(n, 3000), seed=seed), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_args()
    wanted = {v.strip() for v in args.variants.split(",")} | {"torch"}
    texts = sample(load_texts(data_dir(args.data)), args.rows, args.seed)
    import onnxruntime
    import torch

    threads = torch.get_num_threads()
    machine, flags = cpu_report()
    config, why = choose_config(machine, flags)
    print(f"{len(texts)} distinct real instructions (seed {args.seed}), mean {np.mean([len(t) for t in texts]):.0f} "
          f"chars; batch 64; {threads} threads (torch and ONNX Runtime); {args.rounds} rounds; torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; int8 config {config} ({why}); "
          f"load average {os.getloadavg()[0]:.1f}\n")
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        files = build_models(Path(tmp), config, wanted)
        st = SentenceTransformerEmbedder(batch_size=64)
        encoders = {"torch": st.encode}
        for variant in [v for v in files if v in wanted]:
            model = OnnxMiniLM(Path(tmp), model_file=files[variant], threads=threads)
            batch = 64 if variant == "int8-batched" else None
            encoders[variant] = lambda t, m=model, b=batch: m.encode(t, batch_size=b)
        for encode in encoders.values():
            encode(texts[:64])  # warm-up outside the timings
        vectors: dict[str, np.ndarray] = {}

        def timed_variant(name: str):  # noqa: ANN202
            return lambda _r: vectors.setdefault(name, encoders[name](texts))

        times = rounds({name: timed_variant(name) for name in encoders}, args.rounds)
        again = {name: rechunked(encode, texts, args.seed) for name, encode in encoders.items()}
        if args.whole:
            whole = whole_pool(data_dir(args.data), {v: OnnxMiniLM(Path(tmp), model_file=files[v], threads=threads)
                                                     for v in ("int8", "int8-all") if v in files}, args.seed)
    rows = []
    for name, secs in times.items():
        ratios = [t / b for t, b in zip(times["torch"], secs, strict=True)]
        rows.append({"variant": name, "median s": round(statistics.median(secs), 1),
                     "rows/s": round(len(texts) / statistics.median(secs), 1),
                     "speed / torch": round(statistics.median(ratios), 2),
                     "per-round": " ".join(f"{x:.2f}" for x in ratios),
                     **agreement(vectors["torch"], vectors[name], args.seed),
                     "other chunks: cosine min": round(float((vectors[name] * again[name]).sum(axis=1).min()), 4),
                     "other chunks: overlap@10": round(overlap_at(vectors[name], again[name], queries=len(texts)), 3)})
    print(pd.DataFrame(rows).to_markdown(index=False))
    if args.whole:
        print("\n### Every benchmark text, against the cached MiniLM vectors\n")
        print(whole.to_markdown(index=False))
    print(f"\nchance overlap@10: {10 / (len(texts) - 1):.4f} (pool {len(texts)}), {10 / 299:.3f} (pool 300); "
          f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
