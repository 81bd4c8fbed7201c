"""In a real browser: a workspace the studio cannot open is explained on the page, never as a redacted exception.

The server is started with SELECTLLM_WORKSPACE pointing at a folder. The page must show the reason, the path and
a way to open another workspace, and opening a fresh file there must bring up the normal studio. Screenshot:
test-artifacts/screenshots/workspace_error.png.

Run it with `pytest -m browser` (needs `apt-get install chromium`; skipped when it is missing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, LONG, assert_clean_log, idle, shot, streamlit_server

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")


def test_a_workspace_that_cannot_be_opened_is_explained_in_the_page(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    bad = tmp_path / "a-folder"
    bad.mkdir()
    with streamlit_server(tmp_path, SELECTLLM_WORKSPACE=str(bad)) as info, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(info["url"])
        # an alert or Streamlit's exception box, whichever the app draws (a redacted error fails at once)
        page.locator('[data-testid="stAlert"], [data-testid="stException"]').first.wait_for(timeout=LONG)
        idle(page)
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert "redacted" not in main and "Traceback" not in main, main
        assert f"Cannot open the workspace {bad}: unable to open database file" in main, main
        assert "SELECTLLM_WORKSPACE" in main, main
        assert page.locator('[data-testid="stException"]').count() == 0
        fresh = tmp_path / "fresh.sqlite"
        page.get_by_role("textbox", name="Workspace file").fill(str(fresh))
        shot(page, "workspace_error")
        page.get_by_role("button", name="Open workspace").click()
        page.get_by_role("heading", name="Map", exact=True).wait_for(timeout=LONG)
        assert str(fresh) in page.locator('[data-testid="stSidebar"]').inner_text()
        browser.close()
    assert fresh.is_file()
    assert_clean_log(info["log"])
