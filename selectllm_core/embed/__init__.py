"""Embeddings: the bundled all-MiniLM-L6-v2 by default, its int8 ONNX build, any sentence-transformers model,
or model2vec.

    from selectllm_core.embed import embed_texts, embedder_for
    result = embed_texts(texts, embedder=embedder_for(None))   # cached by (model id, text)

`embedder_for` is the one factory: a name gives an embedder, an unknown name is tried as a
sentence-transformers model name or folder. Nothing is loaded until the first encode.
"""

from __future__ import annotations

from selectllm_core.embed.cache import Embedder, EmbeddingCache, EmbedResult, default_cache_dir, embed_texts, text_key
from selectllm_core.embed.int8 import INT8_NAMES, Int8Embedder
from selectllm_core.embed.minilm import BUNDLED_MODEL, SentenceTransformerEmbedder, bundled_model_path
from selectllm_core.embed.model2vec import FAST_NAMES, Model2VecEmbedder
from selectllm_core.embed.progress import Throughput

# What each named choice is, for option help and pages (measured in benchmarks/README.md).
EMBED_MODEL_LABELS = {
    "minilm-int8": "all-MiniLM-L6-v2 in int8 on ONNX Runtime: about 2.4x faster, near-exact (cosine 0.996 to "
                   "MiniLM's vectors, neighbour overlap@10 0.91)",
    "model2vec": "a static distillation of all-MiniLM-L6-v2: hundreds of times faster, approximate "
                 "(neighbour overlap@10 0.29)",
}


def embedder_for(name: str | None = None) -> Embedder:
    """The embedder a name asks for: "minilm-int8" (or "int8"), "model2vec" (or "fast"), else sentence-transformers.

    Args:
        name: None (bundled all-MiniLM-L6-v2), "minilm-int8"/"int8" (its int8 ONNX build, near-exact),
            "model2vec"/"fast" (static, approximate), or a sentence-transformers model name/folder.

    Returns:
        An Embedder; nothing is loaded until the first encode.
    """
    if name in FAST_NAMES:
        return Model2VecEmbedder()
    if name in INT8_NAMES:
        return Int8Embedder()
    return SentenceTransformerEmbedder(name)  # a module global, looked up now: a test can swap it


__all__ = ["BUNDLED_MODEL", "EMBED_MODEL_LABELS", "FAST_NAMES", "INT8_NAMES", "EmbedResult", "Embedder",
           "EmbeddingCache", "Int8Embedder", "Model2VecEmbedder", "SentenceTransformerEmbedder", "Throughput",
           "bundled_model_path", "default_cache_dir", "embed_texts", "embedder_for", "text_key"]
