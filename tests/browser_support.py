"""What the browser tests share: a `streamlit run` server on a free port, Debian Chromium, waits and screenshots.

The tests drive the studio the way a curator does, through Playwright in a real headless Chromium. They are
skipped when Debian's chromium is missing (`apt-get install -y chromium`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LONG = 300_000  # ms: first map and page loads on a shared, busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(tmp_path: Path, **env_extra: str) -> Iterator[dict]:
    """`streamlit run app.py` on a free port with the workspace and cache under tmp_path.

    Yields {"url", "workspace", "cache", "tmp", "log"}. The workspace and cache may be seeded before the call.
    """
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    port = free_port()
    workspace, cache = tmp_path / "ws.sqlite", tmp_path / "cache"
    env = {**os.environ, "SELECTLLM_WORKSPACE": str(workspace), "SELECTLLM_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1", **env_extra}
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start: " + log_path.read_text()[-2000:])
        yield {"url": url, "workspace": workspace, "cache": cache, "tmp": tmp_path, "log": log_path}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def idle(page) -> None:  # noqa: ANN001
    """Wait until the script run behind the page has finished."""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=LONG)


HOVER_LABEL = ".js-plotly-plot .hoverlayer"
HOVER_HOLDS = ("([sel, wanted]) => { const text = document.querySelector(sel)?.textContent ?? ''; "
               "return wanted.every(w => text.includes(w)); }")


def hover_until(page, find_spot: Callable[[], dict], *wanted: str, timeout: int = 20_000) -> dict:  # noqa: ANN001
    """Point at the spot `find_spot` gives (viewport pixels) until the map's hover label holds every wanted string.

    A rerun that redraws the map under the pointer clears its label, so the spot is found again and pointed at
    afresh, up to three times. Returns the spot pointed at last.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        if attempt:
            idle(page)
        spot = find_spot()
        page.mouse.move(0, 0)
        page.mouse.move(spot["x"], spot["y"], steps=4)
        try:
            page.wait_for_function(HOVER_HOLDS, arg=[HOVER_LABEL, list(wanted)], timeout=timeout)
            return spot
        except PlaywrightTimeout:
            pass
    shot(page, "hover-label-missing")
    raise AssertionError(f"the hover label at {spot} never held {list(wanted)}")


# The Review table: its columns' places from the grid's left edge, and whether a cell's editor has the focus
COLUMN_X = {"decision": 40, "note": 110 + 60, "instruction": 110 + 160 + 60}  # px
EDITOR_OPEN = "() => document.activeElement?.matches('#portal input[role=combobox], #portal textarea') ?? false"


def settled(page) -> None:  # noqa: ANN001
    """No script or fragment run under way or asked for: the table is the one the last run drew."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=LONG)
    page.wait_for_timeout(300)


def type_in_cell(page, row: int, column: str, text: str) -> None:  # noqa: ANN001
    """Open a cell of the first table on the page with the keyboard, type, commit (Enter), as a curator does."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    grid = page.locator('[data-testid="stDataFrame"]').first
    for _attempt in range(3):
        # the grid's place is read for each attempt: a notice shown or cleared by a rerun moves it on the page,
        # and a rerun that draws the grid anew detaches the one being measured
        settled(page)
        try:
            grid.scroll_into_view_if_needed(timeout=10_000)
            box = grid.bounding_box(timeout=10_000)
        except PlaywrightError:
            continue
        y = box["y"] + 35 + 35 * row + 17
        # a read-only cell of the row first: a click on a cell already selected (the grid moves the selection down
        # after Enter) would open its editor, and the Enter below would then close it
        page.mouse.click(box["x"] + COLUMN_X["instruction"], y)
        page.mouse.click(box["x"] + COLUMN_X[column], y)
        page.keyboard.press("Enter")  # opens the cell's editor (a selectbox, or a text box) and focuses it
        try:
            page.wait_for_function(EDITOR_OPEN, timeout=10_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        shot(page, f"editor-of-row-{row}-{column}-did-not-open")
        raise AssertionError(f"the editor of row {row}'s {column} did not open")
    page.keyboard.type(text)
    for _attempt in range(3):  # an Enter that comes too soon after the editor opened is sometimes dropped
        page.wait_for_timeout(300)
        page.keyboard.press("Enter")  # commits the edit and closes the editor
        try:
            page.wait_for_function(f"() => !({EDITOR_OPEN})()", timeout=5_000)
            return
        except PlaywrightTimeout:
            pass
    raise AssertionError(f"the editor of row {row}'s {column} did not take Enter")


def open_dropdown(page, box, option) -> None:  # noqa: ANN001 - playwright Page and Locators
    """Click a selectbox until `option` shows: a dropdown opened while the page still redraws itself closes again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _attempt in range(4):
        idle(page)
        box.click()
        try:
            option.first.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    option.first.wait_for(timeout=10_000)  # the last try: fail with the option's own error


def shot(page, name: str) -> None:  # noqa: ANN001
    """Wait until the app is idle, then screenshot the whole page (the viewport grows to the content's height)."""
    idle(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(6000, max(size["height"], height))})
    page.wait_for_timeout(700)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def click_until(page, button, shown, timeout: int = 120_000) -> None:  # noqa: ANN001 - playwright Page, Locators
    """Click `button` until `shown` is visible: a click that lands while the page still reruns is lost.

    Before each click the page is let finish its run, and `shown` is looked for first, so a click that did land
    is never repeated.
    """
    from playwright.sync_api import expect

    for _attempt in range(3):
        idle(page)
        if shown.first.is_visible():
            return
        button.click()
        try:
            expect(shown.first).to_be_visible(timeout=timeout)
            return
        except AssertionError:
            pass
    expect(shown.first).to_be_visible(timeout=LONG)


def goto(page, title: str) -> None:  # noqa: ANN001
    """Open a page from the sidebar navigation (the session, and its state, stay)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=LONG)


def assert_clean_log(log_path: Path) -> None:
    """The server printed no traceback."""
    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
