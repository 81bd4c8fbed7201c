"""Embeddings: the bundled all-MiniLM-L6-v2 by default, any sentence-transformers model, or model2vec.

    from selectllm_core.embed import embed_texts, embedder_for
    result = embed_texts(texts, embedder=embedder_for(None))   # cached by (model id, text)

`embedder_for` is the one factory: a name gives an embedder, an unknown name is tried as a
sentence-transformers model name or folder. Nothing is loaded until the first encode.
"""

from __future__ import annotations

from selectllm_core.embed.cache import Embedder, EmbeddingCache, EmbedResult, default_cache_dir, embed_texts, text_key
from selectllm_core.embed.minilm import BUNDLED_MODEL, SentenceTransformerEmbedder, bundled_model_path
from selectllm_core.embed.model2vec import FAST_NAMES, Model2VecEmbedder


def embedder_for(name: str | None = None) -> Embedder:
    """The embedder a name asks for: "model2vec" (or "fast") for the distilled one, else sentence-transformers.

    Args:
        name: None (bundled all-MiniLM-L6-v2), "model2vec"/"fast", or a sentence-transformers model name/folder.

    Returns:
        An Embedder; nothing is loaded until the first encode.
    """
    if name in FAST_NAMES:
        return Model2VecEmbedder()
    return SentenceTransformerEmbedder(name)  # a module global, looked up now: a test can swap it


__all__ = ["BUNDLED_MODEL", "FAST_NAMES", "EmbedResult", "Embedder", "EmbeddingCache", "Model2VecEmbedder",
           "SentenceTransformerEmbedder", "bundled_model_path", "default_cache_dir", "embed_texts", "embedder_for",
           "text_key"]
