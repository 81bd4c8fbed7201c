"""The int8 embedder's config choice, ids, fallback and check (fakes at the build seam; the real build is in
tests/test_embed.py, marked slow)."""

from __future__ import annotations

import json
import subprocess
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
from selectllm_core.embed.int8 import PORTABLE, CheckFailed, check_in_child, choose_config, int8_model_id
from selectllm_core.embed.model2vec import fast_model_id
from selectllm_core.errors import ConfigError
from tests.conftest import FakeEmbedder

TEXTS = [f"### Instruction: explain topic {i}.\n\n### Response:" for i in range(12)]
VNNI = ("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"}))


def test_the_config_follows_what_the_cpu_reports() -> None:
    assert choose_config(*VNNI) == ("vnni", "the CPU reports avx512_vnni")
    assert choose_config("x86_64", frozenset({"avx2", "avx_vnni"}))[0] == "vnni"
    # AVX-512 without VNNI would run uint8 x int8 through vpmaddubsw, which can saturate: portable
    assert choose_config("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))[0] == PORTABLE
    assert choose_config("aarch64", frozenset({"asimd"}))[0] == "arm64"
    assert choose_config("x86_64", frozenset()) == (PORTABLE, "the CPU's instruction sets are not known here")


def test_int8_ids_never_equal_another_models_id() -> None:
    ids = {int8_model_id(c) for c in int8_mod.CONFIGS}
    assert len(ids) == len(int8_mod.CONFIGS)
    assert not ids & {BUNDLED_MODEL, fast_model_id(), SentenceTransformerEmbedder().model_id}
    assert isinstance(embedder_for("minilm-int8"), Int8Embedder) and isinstance(embedder_for("int8"), Int8Embedder)
    with pytest.raises(ConfigError, match="choose one of vnni, arm64, portable"):
        Int8Embedder(config="avx9")


class FakeOnnx(FakeEmbedder):
    """Stands in for OnnxMiniLM on a built folder: FakeEmbedder vectors, salted by the folder's config."""

    def __init__(self, folder: Path, **_kwargs: object) -> None:
        super().__init__()
        self.salt = json.loads((folder / "int8.json").read_text())["config"]

    def encode(self, texts, *, batch_size: int = 64):  # noqa: ANN001, ANN201
        return super().encode([f"{self.salt}:{t}" for t in texts])


class Builds:
    """What the fake build_int8 was asked for, and which configs fail their check."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing = {"vnni"}


@pytest.fixture
def fake_builds(monkeypatch: pytest.MonkeyPatch) -> Builds:
    """build_int8 that fails its check for "vnni" and writes a folder for any other config; records each call."""
    builds = Builds()

    def fake_build(source: str, out_dir: Path, *, config: str) -> int8_mod.Check:
        builds.calls.append(config)
        if config in builds.failing:
            raise CheckFailed("the model's test run died with SIGILL (an instruction this CPU reports but cannot run)")
        out_dir.mkdir(parents=True)
        (out_dir / "model.onnx").write_bytes(b"")
        (out_dir / "int8.json").write_text(json.dumps({"config": config}))
        return int8_mod.Check(mean=0.99, min=0.98)

    monkeypatch.setattr(int8_mod, "build_int8", fake_build)
    monkeypatch.setattr(int8_mod, "OnnxMiniLM", FakeOnnx)
    monkeypatch.setattr(int8_mod, "cpu_report", lambda: VNNI)
    return builds


def test_a_config_that_fails_its_check_falls_back_to_portable_loudly_and_for_good(
        tmp_path: Path, fake_builds: Builds) -> None:
    embedder, cache = Int8Embedder(tmp_path / "models"), EmbeddingCache(tmp_path / "emb")
    assert embedder.model_id == int8_model_id("vnni") and not embedder.built
    with pytest.warns(RuntimeWarning, match=r"for vnni \(the CPU reports avx512_vnni\) did not pass its check: .*SIGILL"
                                            r".*portable config instead"):
        result = embed_texts(TEXTS, embedder=embedder, cache=cache, batch_size=5)
    portable = int8_model_id(PORTABLE)
    assert fake_builds.calls == ["vnni", PORTABLE] and embedder.model_id == portable
    # every vector is stored and returned under the model that made it; none under the failed config's id
    assert (result.model_id, result.computed, cache.count(portable), cache.count(int8_model_id("vnni"))) == \
        (portable, 12, 12, 0)
    np.testing.assert_array_equal(result.vectors, FakeEmbedder().encode([f"{PORTABLE}:{t}" for t in TEXTS]))
    record = json.loads((tmp_path / "models" / f"{int8_model_id('vnni')}.failed.json").read_text())
    assert "SIGILL" in record["reason"]
    again = Int8Embedder(tmp_path / "models")  # the next process starts on the portable config, builds nothing
    assert again.model_id == portable and "failed here before" in again.why and again.built
    assert embed_texts(TEXTS, embedder=again, cache=cache).computed == 0 and fake_builds.calls == ["vnni", PORTABLE]


def test_when_the_portable_config_fails_too_the_error_says_what_to_use(tmp_path: Path,
                                                                        fake_builds: Builds) -> None:
    fake_builds.failing.add(PORTABLE)
    embedder = Int8Embedder(tmp_path / "models")
    with pytest.warns(RuntimeWarning), pytest.raises(ConfigError, match="cannot run the int8 embedding model on "
                                                                        "this machine: .*SIGILL.*all-MiniLM-L6-v2"):
        embedder.encode(TEXTS)


def test_an_asked_for_config_is_kept_and_built_once(tmp_path: Path, fake_builds: Builds) -> None:
    embedder = Int8Embedder(tmp_path / "models", config=PORTABLE)
    first = embedder.encode(TEXTS[:3])
    second = Int8Embedder(tmp_path / "models", config=PORTABLE).encode(TEXTS[:3])
    np.testing.assert_array_equal(first, second)
    assert fake_builds.calls == [PORTABLE] and embedder.why == "asked for"


@pytest.mark.parametrize(("returncode", "stdout", "expected"), [
    (-4, "", r"died with SIGILL \(an instruction this CPU reports but cannot run\)"),
    (-9, "", "died with SIGKILL"),
    (1, "", "failed: ImportError: no onnxruntime"),
    (0, '{"mean": 0.6, "min": 0.2}', r"disagree with fp32 \(cosine min 0.200, needed 0.95\)"),
])
def test_the_child_check_names_what_went_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, returncode: int,
                                               stdout: str, expected: str) -> None:
    def fake_run(args, **_kwargs):  # noqa: ANN001, ANN202
        return subprocess.CompletedProcess(args, returncode, stdout, "Traceback ...\nImportError: no onnxruntime")

    monkeypatch.setattr(int8_mod.subprocess, "run", fake_run)
    with pytest.raises(CheckFailed, match=expected):
        check_in_child(tmp_path, tmp_path / "fp32.onnx")


def test_a_passing_child_check_returns_its_cosines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(int8_mod.subprocess, "run", lambda args, **_k: subprocess.CompletedProcess(
        args, 0, 'noise\n{"mean": 0.993, "min": 0.991}\n', ""))
    assert check_in_child(tmp_path, tmp_path / "fp32.onnx") == int8_mod.Check(mean=0.993, min=0.991)
