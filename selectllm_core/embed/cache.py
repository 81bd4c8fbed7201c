"""The embedding protocol and the on-disk cache every embedder goes through.

Vectors are cached on disk keyed by (model id, sha256 of the text), so a second run over the same pool
embeds nothing. The cache is one SQLite file per cache folder; vectors are float32 blobs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from selectllm_core.embed.minilm import SentenceTransformerEmbedder

BatchProgress = Callable[[int, int], None]  # (texts done, texts in all): one stage, so no stage name


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_cache_dir() -> Path:
    """Cache folder: $SELECTLLM_CACHE_DIR, else `.selectllm-cache` in the working directory."""
    return Path(os.environ.get("SELECTLLM_CACHE_DIR", ".selectllm-cache"))


def text_key(text: str) -> str:
    """Cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """On-disk vectors keyed by model id and text hash; counts hits and misses."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "embeddings.sqlite", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, dim INT, vec BLOB, "
            "PRIMARY KEY (model, key))"
        )
        self.hits = 0
        self.misses = 0

    def get_many(self, model_id: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors found for the keys (missing keys are absent from the result)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vec FROM vectors WHERE model = ? AND key IN ({marks})", [model_id, *chunk]
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        """Store vectors in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                [(model_id, k, int(v.shape[0]), np.asarray(v, np.float32).tobytes()) for k, v in items.items()],
            )

    def count(self, model_id: str | None = None) -> int:
        """Number of cached vectors (for one model, or all)."""
        if model_id is None:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()


@dataclass
class EmbedResult:
    """Vectors in input order, and how many were computed now versus read from the cache."""

    vectors: np.ndarray
    computed: int
    cached: int
    model_id: str


def embed_texts(
    texts: Sequence[str],
    *,
    embedder: Embedder | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: BatchProgress | None = None,
) -> EmbedResult:
    """Embed texts, computing only those the cache lacks; resumable after any crash.

    Each batch is committed to the cache before the next one starts, so a run killed at any moment (Ctrl-C,
    kill -9) loses at most the batch in flight, and the same call again computes only what the cache lacks.

    Args:
        texts: texts to embed (for a pool, its `text` column).
        embedder: defaults to the bundled all-MiniLM-L6-v2.
        cache: defaults to the cache folder from the environment; pass one to share counters.
        batch_size: texts per cache write (a crash loses at most one batch of work).
        progress: called with (0, total) before the first batch (so a rate can be timed from the start)
            and with (done, total) after each batch is stored; total counts the texts the cache lacks.

    Returns:
        EmbedResult with one unit vector per text.
    """
    embedder = embedder or SentenceTransformerEmbedder()
    cache = cache or EmbeddingCache()
    model_id = embedder.model_id
    keys = [text_key(t) for t in texts]
    found = cache.get_many(model_id, keys)
    # Longest first, as sentence-transformers orders one encode call, so each chunk holds texts of similar
    # length and pads little; in input order the chunks ran 1.5x the tokens of one encode call
    # (benchmarks/README.md, "Embedding throughput").
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items(), key=lambda kt: -len(kt[1]))
    total = len(todo)
    if progress and total:
        progress(0, total)
    for start in range(0, total, batch_size):
        chunk = todo[start : start + batch_size]
        vectors = embedder.encode([t for _, t in chunk])
        if embedder.model_id != model_id:
            # the embedder settled on another model while loading (the int8 one's portable fallback, once per
            # cache folder): start again under that model's id, so no vector is stored or served under another's
            return embed_texts(texts, embedder=embedder, cache=cache, batch_size=batch_size, progress=progress)
        new = {k: v for (k, _), v in zip(chunk, vectors)}
        cache.put_many(model_id, new)
        found.update(new)
        if progress:
            progress(min(start + batch_size, total), total)
    cache.hits += len(texts) - total
    cache.misses += total
    vectors = np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
    return EmbedResult(vectors=vectors, computed=total, cached=len(texts) - total, model_id=model_id)
