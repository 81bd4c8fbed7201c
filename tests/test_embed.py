"""Embedding cache (hit and miss counters, per-model keys, order), the fast model2vec embedder, and the real int8
build (its config choice and fallback are in tests/test_embed_int8.py)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from selectllm_core.embed import (
    BUNDLED_MODEL,
    EmbeddingCache,
    Int8Embedder,
    SentenceTransformerEmbedder,
    embed_texts,
    embedder_for,
)
from selectllm_core.embed import int8 as int8_mod
from selectllm_core.embed.model2vec import Model2VecEmbedder, fast_model_id
from selectllm_core.pool.load import format_text, read_table
from tests.conftest import FakeEmbedder

TEXTS = [format_text(f"Instruction {i}: explain topic {i % 4}.") for i in range(10)]
needs_model2vec = pytest.mark.skipif(importlib.util.find_spec("model2vec") is None, reason="model2vec not installed")


class OtherFake(FakeEmbedder):
    model_id = "other-fake"


def test_misses_then_hits_are_counted_and_the_model_is_not_called_again(tmp_path: Path) -> None:
    cache, embedder = EmbeddingCache(tmp_path), FakeEmbedder()
    first = embed_texts(TEXTS, embedder=embedder, cache=cache, batch_size=3)
    assert (first.computed, first.cached, embedder.calls) == (10, 0, 10)
    second = embed_texts(TEXTS[::-1], embedder=embedder, cache=cache)
    assert (second.computed, second.cached, embedder.calls) == (0, 10, 10)
    assert (cache.misses, cache.hits) == (10, 10)
    np.testing.assert_array_equal(second.vectors, first.vectors[::-1])  # input order, from the cache


def test_a_repeated_text_is_computed_once(tmp_path: Path) -> None:
    cache, embedder = EmbeddingCache(tmp_path), FakeEmbedder()
    result = embed_texts([TEXTS[0], TEXTS[1], TEXTS[0]], embedder=embedder, cache=cache)
    assert (result.computed, result.cached, embedder.calls) == (2, 1, 2)
    np.testing.assert_array_equal(result.vectors[0], result.vectors[2])


def test_cache_survives_reopening_and_keeps_models_apart(tmp_path: Path) -> None:
    embed_texts(TEXTS, embedder=FakeEmbedder(), cache=EmbeddingCache(tmp_path))
    reopened = EmbeddingCache(tmp_path)
    assert embed_texts(TEXTS, embedder=FakeEmbedder(), cache=reopened).computed == 0
    other = embed_texts(TEXTS, embedder=OtherFake(), cache=reopened)
    assert other.computed == 10  # same texts, another model: never served from the first model's vectors
    assert reopened.count("fake-embedder") == 10 and reopened.count("other-fake") == 10 and reopened.count() == 20


def test_progress_reports_the_start_and_every_stored_chunk(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    cache = EmbeddingCache(tmp_path)

    def report(done: int, total: int) -> None:
        seen.append((done, total))
        assert cache.count("fake-embedder") == 3 + done, "a chunk is reported only once it is stored"

    embed_texts(TEXTS[:3], embedder=FakeEmbedder(), cache=cache)
    embed_texts(TEXTS, embedder=FakeEmbedder(), cache=cache, batch_size=4, progress=report)
    assert seen == [(0, 7), (4, 7), (7, 7)]  # the total counts the 7 texts the cache lacks


def test_misses_are_embedded_longest_first_and_returned_in_input_order(tmp_path: Path) -> None:
    """Chunks of similar length pad little (benchmarks/README.md: input order ran 1.5x the tokens)."""

    class Recorder(FakeEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def encode(self, texts):  # noqa: ANN001, ANN201
            self.seen += list(texts)
            return super().encode(texts)

    texts = [format_text("x" * n) for n in (5, 50, 20, 80, 10, 40)]
    recorder = Recorder()
    result = embed_texts(texts, embedder=recorder, cache=EmbeddingCache(tmp_path), batch_size=2)
    assert [len(t) for t in recorder.seen] == sorted((len(t) for t in texts), reverse=True)
    np.testing.assert_array_equal(result.vectors, FakeEmbedder().encode(texts))


def test_fast_embedder_id_never_equals_a_teacher_id() -> None:
    assert fast_model_id() != BUNDLED_MODEL and fast_model_id().startswith(BUNDLED_MODEL)
    assert fast_model_id(pca_dims=256) != fast_model_id(pca_dims=None)
    assert fast_model_id("/a/minilm") != fast_model_id("/b/minilm")
    assert isinstance(embedder_for("model2vec"), Model2VecEmbedder)
    assert isinstance(embedder_for(None), SentenceTransformerEmbedder)


@needs_model2vec
def test_fast_embedder_builds_once_into_its_folder_and_caches_apart(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The build step is faked (a random static model on MiniLM's real tokenizer): loading, encoding and
    caching are real. The real distillation is covered by the slow test below."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    from selectllm_core.embed import model2vec as embed_fast

    builds: list[Path] = []

    def fake_distill(source: str, out_dir: Path, *, pca_dims: int | None = 256) -> Path:
        tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
        vectors = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), 8)).astype(np.float32)
        StaticModel(vectors, tokenizer, normalize=True).save_pretrained(str(out_dir))
        builds.append(out_dir)
        return out_dir

    monkeypatch.setattr(embed_fast, "distill_model", fake_distill)
    fast = Model2VecEmbedder()
    assert fast.model_dir == tmp_path / "cache" / "models" / fast.model_id and not fast.built
    vectors = fast.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (10, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    again = Model2VecEmbedder()
    np.testing.assert_array_equal(again.encode(TEXTS), vectors)
    assert len(builds) == 1 and again.built
    cache = EmbeddingCache(tmp_path / "emb")
    embed_texts(TEXTS, embedder=FakeEmbedder(), cache=cache)
    assert embed_texts(TEXTS, embedder=again, cache=cache).computed == 10
    assert cache.count(again.model_id) == 10


# --- real models ----------------------------------------------------------------------------------


def overlap_at_10(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row's 10 nearest neighbours (cosine, itself excluded) that both embeddings find."""
    found = []
    for x in (a, b):
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        found.append(np.argpartition(-sims, 10, axis=1)[:, :10])
    return float(np.mean([len(set(p) & set(q)) / 10 for p, q in zip(*found, strict=True)]))


@pytest.fixture(scope="module")
def real_texts(shared_data: Path) -> list[str]:
    """300 distinct real Dolly instructions in the paper's text format."""
    frame = read_table(shared_data / "dolly_alpagasus_3k.jsonl.gz")
    texts = [format_text(str(r.instruction).strip(), str(r.input or "").strip()) for r in frame.itertuples()]
    return list(dict.fromkeys(texts))[:300]


@pytest.fixture(scope="module")
def minilm(real_texts: list[str]) -> np.ndarray:
    return SentenceTransformerEmbedder().encode(real_texts)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model2VecEmbedder]:
    """The real distillation of the bundled MiniLM, offline, built once for this module."""
    if importlib.util.find_spec("model2vec") is None or importlib.util.find_spec("skeletoken") is None:
        pytest.skip("model2vec (with skeletoken) not installed")
    yield Model2VecEmbedder(tmp_path_factory.mktemp("m2v") / "model")


@pytest.mark.slow
def test_embed_texts_gives_what_sentence_transformers_gives(real_texts: list[str], minilm: np.ndarray,
                                                            tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from selectllm_core.embed import bundled_model_path

    result = embed_texts(real_texts[:50], embedder=SentenceTransformerEmbedder(), cache=EmbeddingCache(tmp_path))
    raw = SentenceTransformer(bundled_model_path(), device="cpu").encode(real_texts[:50], normalize_embeddings=True)
    np.testing.assert_allclose(result.vectors, raw, atol=1e-5)
    np.testing.assert_allclose(minilm[:50], raw, atol=1e-5)


@pytest.mark.slow
def test_fast_embedder_agrees_with_minilm_on_real_instructions(real_texts: list[str], minilm: np.ndarray,
                                                               distilled: Model2VecEmbedder) -> None:
    fast = distilled.encode(real_texts)
    assert distilled.built and fast.shape == (300, 256)
    chance = 10 / 299
    agreement = overlap_at_10(minilm, fast)
    # 0.31 on random pools of 300 in benchmarks/README.md; a broken model scores near chance (0.033)
    assert agreement >= 0.2, agreement
    shuffled = fast[np.random.default_rng(0).permutation(300)]
    assert overlap_at_10(minilm, shuffled) < 2 * chance


@pytest.mark.slow
def test_int8_embedder_builds_once_from_the_package_and_agrees_with_minilm(
        real_texts: list[str], minilm: np.ndarray, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path_factory.mktemp("int8")
    int8 = Int8Embedder(root)
    vectors = int8.encode(real_texts)  # exports, quantises, checks in a child process, renames into place
    record = json.loads((int8.model_dir / "int8.json").read_text())
    assert record["config"] == int8.config and record["check_cosine"]["min"] >= int8_mod.MIN_COSINE
    assert sorted(p.name for p in int8.model_dir.iterdir()) == \
        ["int8.json", "model.onnx", "sentence_bert_config.json", "tokenizer.json"]  # the fp32 export is gone
    assert [p.name for p in root.iterdir()] == [int8.model_id]  # no temporary folder, no failure record
    cosine = (vectors * minilm).sum(axis=1)
    # measured on 14,652 real instructions: cosine mean 0.996, min 0.990, overlap@10 0.91 (benchmarks/README.md);
    # every MatMul in int8 gives 0.87, a broken export near chance (0.033)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())
    assert overlap_at_10(minilm, vectors) >= 0.85
    monkeypatch.setattr(int8_mod, "build_int8", lambda *a, **k: pytest.fail("built twice"))
    # each text runs alone, so its vector does not depend on the texts encoded with it (batched, it would)
    np.testing.assert_array_equal(Int8Embedder(root).encode(real_texts[::-7]), vectors[::-7])
