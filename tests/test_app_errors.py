"""What the studio shows when something outside it is broken: a workspace it cannot open, clusters with no terms.

A core error that escapes a page is caught at the app boundary and shown with its message (which says how to
fix it), never as Streamlit's redacted exception; a workspace error comes with a picker to open another file.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from conftest import FakeEmbedder
from streamlit.testing.v1 import AppTest

from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the app's own modules (app_pages/_shared.py) live beside app.py


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The studio with the fake embedder and the fast PCA layout; not run yet."""
    st.cache_data.clear()
    st.cache_resource.clear()
    from app_pages import _shared

    monkeypatch.setattr(_shared, "embedder", lambda: FakeEmbedder())
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["map_layout"] = "pca"
    return at


def shown(at: AppTest, kind: str) -> str:
    """The unescaped text of every element of one kind (error, info, ...), joined."""
    return "\n".join(str(e.value).replace("\\", "") for e in getattr(at, kind))


def bad_workspace(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A workspace path SQLite cannot open, and the reason it gives."""
    if kind == "directory":
        path = tmp_path / "a-folder"
        path.mkdir()
        return path, "unable to open database file"
    path = tmp_path / "notes.sqlite"
    path.write_text("Meeting notes, not a database.\n" * 50, encoding="utf-8")
    return path, "file is not a database"


@pytest.mark.parametrize("kind", ["directory", "text file"])
def test_a_workspace_that_cannot_be_opened_is_explained_with_a_picker(
        app: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    bad, reason = bad_workspace(tmp_path, kind)
    before = bad.read_bytes() if bad.is_file() else None
    monkeypatch.setenv("SELECTLLM_WORKSPACE", str(bad))
    app.run()
    assert not app.exception, app.exception
    errors = shown(app, "error")
    assert f"Cannot open the workspace {bad}: {reason}" in errors, errors
    assert "SELECTLLM_WORKSPACE" in shown(app, "markdown"), "says how to change the default workspace"
    picker, button = app.text_input(key="app_workspace_path"), app.button(key="app_workspace_open")
    # the picker names a failure of its own, and the session stays on the error page
    picker.input(str(bad))
    button.click().run()
    assert not app.exception, app.exception
    assert len(app.error) == 2 and not app.title
    # a good path opens (creates) that workspace for this session: the normal app, on the demo pool
    good = tmp_path / "fresh" / "mine.sqlite"
    app.text_input(key="app_workspace_path").input(str(good))
    app.button(key="app_workspace_open").click().run()
    assert not app.exception, app.exception
    assert not app.error, shown(app, "error")
    assert app.title[0].value == "Map" and app.get("plotly_chart")
    assert app.session_state["workspace"] == str(good.resolve())
    assert str(good.resolve()) in "\n".join(t.value for t in app.sidebar.text)
    assert Store(good).list_pools()["name"].tolist() == ["Dolly demo"]
    assert (bad.read_bytes() if bad.is_file() else None) == before, "the unopenable file is left untouched"


def test_a_workspace_inside_a_file_is_explained_not_raised(app: AppTest, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent 'folder' is a file: an OSError, not an SQLite error, and still a WorkspaceError message."""
    (tmp_path / "plain.txt").write_text("text", encoding="utf-8")
    monkeypatch.setenv("SELECTLLM_WORKSPACE", str(tmp_path / "plain.txt" / "ws.sqlite"))
    app.run()
    assert not app.exception, app.exception
    assert f"Cannot open the workspace {tmp_path / 'plain.txt' / 'ws.sqlite'}" in shown(app, "error")
    assert app.button(key="app_workspace_open")


def test_an_error_escaping_a_page_is_shown_with_its_message(app: AppTest) -> None:
    """A stale pool id (its pool is not in this workspace): the WorkspaceError's own text, no exception."""
    Store().save_pool(load_pool(REPO / "demo" / "dolly_demo.jsonl", name="demo"))
    app.session_state["pool_id"] = "no-such-pool"
    app.session_state["run_id"] = None
    app.run()
    assert not app.exception, app.exception
    assert "no-such-pool" in shown(app, "error")
    assert app.button(key="app_workspace_open"), "a workspace error offers the picker"


def test_the_map_says_why_clusters_have_no_terms(app: AppTest) -> None:
    """Instructions that share no word: the cluster table keeps its examples and the page says why labels are
    empty."""
    words = ["".join(letters) for letters in itertools.product("bdfgk", "aeiou", "lmnprst")][:40]  # each once
    frame = pd.DataFrame({"instruction": [f"Define {w}" for w in words], "input": ""})
    Store().save_pool(load_pool(frame, name="no shared words"))
    app.run()
    assert not app.exception, app.exception
    table = app.dataframe[-1].value
    assert set(table["label"]) == {""} and all(len(e) > 0 for e in table["examples"])
    note = shown(app, "info")
    assert f"No distinctive terms for {len(table)} cluster(s)" in note, note
    assert "representative instructions" in note


def _on_a_run(app: AppTest, run_id: str) -> AppTest:
    """The studio on the demo pool with `run_id` as the active run (one the workspace may not hold)."""
    app.run()
    assert not app.exception, app.exception
    app.session_state["run_id"] = run_id
    return app


@pytest.mark.parametrize(("page", "said"), [("app_pages/review.py", "The run is still preparing. Its picks appear"),
                                            ("app_pages/export.py", "The run is still preparing: nothing to export")])
def test_a_run_not_recorded_yet_is_still_preparing(app: AppTest, page: str, said: str) -> None:
    """A run started in the background is active before the workspace records it: the page says it is coming."""
    at = _on_a_run(app, "run-started-not-recorded").switch_page(page).run()
    assert not at.exception, at.exception
    assert said in shown(at, "info") and not at.main.error


@pytest.mark.parametrize("page", ["app_pages/review.py", "app_pages/export.py"])
def test_a_damaged_workspace_is_not_called_a_run_still_preparing(app: AppTest, monkeypatch: pytest.MonkeyPatch,
                                                                  page: str) -> None:
    """Any other workspace error reaches the app's boundary: its own message, and a picker for another file."""
    from selectllm_core.errors import WorkspaceError

    def damaged(self: Store, run_id: str) -> pd.DataFrame:
        raise WorkspaceError(f"The workspace {self.path} is damaged: database disk image is malformed.")

    at = _on_a_run(app, "run-any")
    monkeypatch.setattr(Store, "selection", damaged)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert "still preparing" not in shown(at, "info")
    assert "database disk image is malformed" in shown(at, "error")
    assert at.button(key="app_workspace_open"), "a workspace error offers the picker"
