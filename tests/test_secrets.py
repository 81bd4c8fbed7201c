"""The API key never lands in the workspace, the cache, exports, manifests, output or error messages.

A canary key sits in OPENAI_API_KEY. The `selectllm` command runs against fake OpenAI-compatible servers on
127.0.0.1: one healthy, one answering 401 to some subsets and 500 to others, echoing the key (as the
Authorization header and bare) in its error bodies. Then status and export. Every file under the test's folder
(workspace with its -wal, embedding cache, exports, manifests; the command's working directory) and every
captured stdout/stderr is searched for the key.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer

from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, text_key
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the app's own modules (app_pages/_shared.py) live beside app.py

CANARY = "sk-canary-3b7d0f9e2c4a6815e0d2"
GOOD = '{"picks": [{"id": 1, "reason": "specific and useful"}]}'
ECHO = {"error": {"message": "invalid key {api_key} (sent as {authorization})", "type": "invalid_request_error",
                  "param": "{api_key}"}}


def echoing(*statuses: int) -> FakeOpenAIServer:
    """A server failing every request with a body quoting the key back: the n-th subset (told apart by its
    prompt) gets statuses[n % len(statuses)], on every retry (the client retries 500s at once)."""
    seen: list[str] = []

    def respond(body: dict, index: int) -> dict:
        prompt = body["messages"][0]["content"]
        if prompt not in seen:
            seen.append(prompt)
        status = statuses[seen.index(prompt) % len(statuses)]
        return {"status": status, "headers": {"retry-after-ms": "10"}, "body": ECHO}

    return FakeOpenAIServer(responder=respond, lifetime=90.0, max_requests=300)


def leaks(text: str | bytes) -> bool:
    """True when the key, or a long tail of it, appears."""
    data = text.encode() if isinstance(text, str) else text
    return CANARY.encode() in data or CANARY[-14:].encode() in data


def test_the_key_appears_in_no_file_no_output_no_message(tmp_path: Path, shared_data: Path) -> None:
    # 1. a 60-row pool whose embeddings are already cached (under the bundled model's id: no model loads)
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(60)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(lines), encoding="utf-8")
    texts = load_pool(pool).frame["text"].tolist()
    cache = EmbeddingCache(tmp_path / "cache")  # kept open: its -wal file stays on disk to be searched
    cache.put_many(BUNDLED_MODEL, dict(zip(map(text_key, texts), FakeEmbedder().encode(texts), strict=True)))
    workspace = tmp_path / "ws.sqlite"
    held = Store(workspace)  # likewise keeps the workspace's -wal file
    env = {**os.environ, "OPENAI_API_KEY": CANARY, "SELECTLLM_WORKSPACE": str(workspace),
           "SELECTLLM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    outputs: list[str] = []

    def selectllm(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "selectllm_core", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        outputs.extend([done.stdout, done.stderr])
        return done

    def run_args(url: str, seed: int) -> list[str]:
        return ["run", str(pool), "--budget", "6", "--subset-size", "10", "--seed", str(seed), "--backend",
                "openai", "--base-url", url, "--model", "fake-model", "--concurrency", "2"]

    with FakeOpenAIServer(reply=GOOD, lifetime=90.0) as good, echoing(401, 500) as bad:
        # 2. a successful run (it exports to ./exports), and a failing one
        ok = selectllm(*run_args(good.base_url, 0))
        assert ok.returncode == 0, ok.stderr[-2000:]
        failed = selectllm(*run_args(bad.base_url, 1))
        assert failed.returncode != 0 and "Stopped" in failed.stderr, failed.stderr[-2000:]
        # both servers did receive the key, so its absence below means something
        for server in (good, bad):
            assert server.requests and server.requests[0]["headers"]["authorization"] == f"Bearer {CANARY}"
        runs = held.list_runs().set_index("status")["run_id"]
        ok_run, failed_run = runs["complete"], runs["interrupted"]
        errors = " ".join(r["error"] for r in held.subset_results(failed_run))
        assert "rejected the API key" in errors and "HTTP 500" in errors and "***" in errors
        # 3. status of both runs, and an export
        for run_id in (ok_run, failed_run):
            shown = selectllm("status", run_id)
            assert shown.returncode == 0, shown.stderr[-2000:]
        assert "***" in shown.stdout, "status shows the echoed key scrubbed"
        exported = selectllm("export", ok_run, "--out", str(tmp_path / "out" / "picks.jsonl"))
        assert exported.returncode == 0, exported.stderr[-2000:]
    # 4. search every file written and every output captured
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"ws.sqlite", "ws.sqlite-wal", "embeddings.sqlite", "picks.jsonl", "picks.manifest.json"} <= names
    assert any(p.parent.name == "exports" and p.suffix == ".csv" for p in files), names
    leaked = [str(p.relative_to(tmp_path)) for p in files if leaks(p.read_bytes())]
    assert not leaked, f"the API key was written to {leaked}"
    assert not [out for out in outputs if leaks(out)], "the API key was printed"
    stored = [r["error"] for r in held.subset_results(failed_run) if r["error"]]
    assert stored and not any(leaks(e) for e in stored)
    held.close()
    cache.close()


@pytest.mark.parametrize("status", [401, 500])
def test_backend_errors_never_quote_the_key(status: int) -> None:
    """The same scrubbing seen from the library: the BackendError text a caller would log."""
    from selectllm_core.errors import BackendError
    from selectllm_core.llm import OpenAICompatibleBackend

    with echoing(status) as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", api_key=CANARY,
                                          max_retries=1, timeout=2.0)
        with pytest.raises(BackendError) as info:
            backend.chat([{"role": "user", "content": "pick [1]"}])
    assert not leaks(str(info.value)) and not leaks(repr(info.value)) and "***" in str(info.value)
    assert not leaks(repr(backend)) and not leaks(str(backend.describe()))


def test_an_answer_that_quotes_the_key_is_stored_without_it() -> None:
    """A broken server or proxy that puts the key in a successful answer: the answer text is redacted."""
    from selectllm_core.llm import OpenAICompatibleBackend

    with FakeOpenAIServer() as server:
        server.script({"content": '{"picks": [1]} my key is {api_key}'})
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", api_key=CANARY)
        answer = backend.chat([{"role": "user", "content": "pick [1]"}])
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {CANARY}"
    assert answer.text == '{"picks": [1]} my key is ***'


@pytest.fixture
def broken_secrets(tmp_path: Path) -> Iterator[Path]:
    """A .streamlit/secrets.toml holding the canary key without quotes (invalid TOML), as Streamlit's secrets file."""
    from streamlit import config

    path = tmp_path / ".streamlit" / "secrets.toml"
    path.parent.mkdir()
    path.write_text(f"# my key\nopenai_api_key = {CANARY}\n", encoding="utf-8")
    before = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(path)])
    yield path
    config.set_option("secrets.files", before)


def test_a_broken_secrets_file_is_reported_and_never_quoted(broken_secrets: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidebar and the Select page name the file and the parse error and say how to fix it; a typed key
    then works. The canary in the broken line is shown nowhere."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from app_pages import _shared

    st.cache_resource.clear()
    monkeypatch.setattr(_shared, "embedder", lambda: FakeEmbedder())
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(40)
    Store().save_pool(load_pool(frame, name="slice"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["map_layout"] = "pca"
    at.session_state["backend"] = {"kind": "openai", "model": "fake-model", "base_url": "http://127.0.0.1:9/v1"}
    at.run()
    assert not at.exception, at.exception

    def said(where: Any) -> str:
        return "\n".join(str(e.value).replace("\\", "") for kind in ("error", "text", "caption", "markdown")
                         for e in getattr(where, kind))

    sidebar = said(at.sidebar)
    assert f"{broken_secrets}" in sidebar and "line 2" in sidebar, sidebar
    assert "Select page" in sidebar and "TOML" in sidebar
    at.switch_page("app_pages/select.py").run()
    assert not at.exception, at.exception
    errors = "\n".join(str(e.value).replace("\\", "") for e in at.main.error)
    assert f"{broken_secrets}" in errors and "type the key" in errors, errors
    assert not leaks(said(at)) and not leaks(said(at.sidebar)), "the broken line's key is never shown"
    assert at.session_state["api_key"] == "", "nor taken from the broken file"
    at.text_input(key="select_api_key").input("sk-typed-instead").run()
    assert not at.exception, at.exception
    assert not at.error, "a typed key is used without reading the secrets file, in the sidebar too"
    assert "held in memory" in said(at)


def test_no_secrets_file_means_no_key_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit import config

    import app_pages._shared as shared

    before = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(tmp_path / "missing" / "secrets.toml")])
    try:
        monkeypatch.setattr(shared.st, "session_state", {})
        assert shared.api_key() is None
    finally:
        config.set_option("secrets.files", before)
