"""Shared fixtures: real data location, a clean workspace per test, a deterministic fake embedder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of public instruction data sets (gzip JSONL) that tests read."""
    root = Path(os.environ.get("SELECTLLM_TEST_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip("public instruction data not found; set SELECTLLM_TEST_DATA to its folder")
    return root


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202 - a generator fixture
    """Module and session fixtures run before the per-test one below: give them a cache and workspace of the
    session, so no fixture reads or writes the checkout's own `.selectllm-cache` (a hit there would hide costs)."""
    root = tmp_path_factory.mktemp("session-env")
    saved = {key: os.environ.get(key) for key in ("SELECTLLM_WORKSPACE", "SELECTLLM_CACHE_DIR")}
    os.environ["SELECTLLM_WORKSPACE"] = str(root / "workspace.sqlite")
    os.environ["SELECTLLM_CACHE_DIR"] = str(root / "cache")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own workspace and cache, and never sees a real API key."""
    monkeypatch.setenv("SELECTLLM_WORKSPACE", str(tmp_path / "workspace.sqlite"))
    monkeypatch.setenv("SELECTLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


class FakeEmbedder:
    """Deterministic embedder: a unit vector seeded by the text hash (no model, instant)."""

    model_id = "fake-embedder"
    dim = 16

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):  # noqa: ANN001, ANN201 - matches the Embedder protocol
        self.calls += len(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).normal(size=self.dim)
            out[i] = vec / np.linalg.norm(vec)
        return out


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()
