"""A fast static embedder for very large pools: a model2vec distillation of the bundled all-MiniLM-L6-v2.

Distilling runs every token of MiniLM's vocabulary through MiniLM once (a few minutes on 2 cores, once per
cache folder, offline) and keeps one vector per token. Encoding is then a lookup and a weighted mean: far
faster than MiniLM, but only a rough approximation of it (see benchmarks/README.md for speed and neighbour
agreement measured on real instructions). Use it to map and split pools too large for MiniLM, and say so.

Its `model_id` differs from MiniLM's, so the embedding cache never mixes the two.

    from selectllm_core.embed.model2vec import Model2VecEmbedder
    embed_texts(texts, embedder=Model2VecEmbedder())        # builds the model on first use
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selectllm_core.embed.cache import default_cache_dir
from selectllm_core.embed.minilm import BUNDLED_MODEL, bundled_model_path
from selectllm_core.errors import ConfigError

FAST_NAMES = ("model2vec", "fast")
# all-MiniLM-L6-v2 truncates at 256 word pieces; the static model does the same so both see the same text.
MAX_TOKENS = 256


def fast_model_id(source: str | None = None, *, pca_dims: int | None = 256) -> str:
    """Cache id of a distilled model: names the teacher and the settings, never equal to a teacher's id."""
    teacher = BUNDLED_MODEL if source is None else f"{Path(source).name}-{_short_hash(str(source))}"
    return f"{teacher}-model2vec-{'pca' + str(pca_dims) if pca_dims else 'full'}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def distill_model(source: str, out_dir: Path, *, pca_dims: int | None = 256) -> Path:
    """Distil a sentence-transformers model folder into a model2vec folder, atomically.

    Args:
        source: local folder of the teacher model (no model hub is contacted).
        out_dir: where the distilled model goes; written under a temporary name, then renamed.
        pca_dims: dimensions kept by PCA (None keeps the teacher's).

    Returns:
        out_dir.
    """
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ConfigError(
            "The fast embedder needs model2vec and skeletoken: run `pip install -r requirements-scale.txt` "
            "(not model2vec[distill], which would downgrade transformers), or use all-MiniLM-L6-v2."
        ) from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    model = distill(model_name=source, pca_dims=pca_dims, device="cpu")
    model.save_pretrained(str(tmp))
    try:
        tmp.rename(out_dir)
    except OSError:
        # another process finished the same build first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "model.safetensors").is_file():
            raise
    return out_dir


class Model2VecEmbedder:
    """Static (model2vec) embedder distilled from a sentence-transformers teacher; builds itself on first use.

    Args:
        model_dir: folder of the distilled model (default: `<cache folder>/models/<model_id>`); built there
            from the teacher when missing.
        source: teacher model folder (None: the bundled all-MiniLM-L6-v2).
        pca_dims: dimensions kept when distilling (None keeps the teacher's 384).
        batch_size: texts per encoding batch.
    """

    def __init__(self, model_dir: str | Path | None = None, *, source: str | None = None,
                 pca_dims: int | None = 256, batch_size: int = 1024) -> None:
        self.source = source
        self.pca_dims = pca_dims
        self.batch_size = batch_size
        self.model_id = fast_model_id(source, pca_dims=pca_dims)
        self.model_dir = Path(model_dir) if model_dir is not None else default_cache_dir() / "models" / self.model_id
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """True when the distilled model is already on disk."""
        return (self.model_dir / "model.safetensors").is_file()

    def _load(self) -> Any:
        """The StaticModel, distilling it first when the folder is empty."""
        with self._lock:
            if self._model is None:
                if not self.built:
                    self.model_dir.parent.mkdir(parents=True, exist_ok=True)
                    distill_model(self.source or bundled_model_path(), self.model_dir, pca_dims=self.pca_dims)
                try:
                    from model2vec import StaticModel
                except ImportError:
                    raise ConfigError("The fast embedder needs model2vec: run `pip install -r "
                                      "requirements-scale.txt`, or use all-MiniLM-L6-v2.") from None
                self._model = StaticModel.from_pretrained(str(self.model_dir), normalize=True)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as unit float32 vectors."""
        model = self._load()
        vectors = model.encode(list(texts), max_length=MAX_TOKENS, batch_size=self.batch_size,
                               use_multiprocessing=False)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
