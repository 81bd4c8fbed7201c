"""Search and "more like this" on the Data and Map pages, in a real browser.

The workspace holds one pool of 80 real demo rows (Dolly), eight of which name percussion instruments. On the
Data page the curator searches "percussion" and reads the eight matching rows, best first, with the words
found marked; selects one, is told the pool is not embedded yet, embeds it and reads the ten rows most like it.
On the Map page the same search draws the matches on top of the map and lists only them; a box selection
narrows the list to the matches inside it, and "More like this" lists and highlights the ten rows nearest the
selection. Every list is checked against the core (`PoolIndex`, `more_like_this`) over the vectors the studio
cached, embedded with its real default model. Screenshots go to test-artifacts/screenshots/search-*.png.

Run it with `pytest -m browser tests/test_browser_search_map.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, LONG, REPO, assert_clean_log, idle, shot, streamlit_server

from selectllm_core.pool.load import Pool, load_pool
from selectllm_core.store import Store
from selectllm_core.studio.map_view import FADED
from selectllm_core.studio.search import PoolIndex, more_like_this

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

WORD = "percussion"
# the cells of a st.dataframe, row by row (its accessible table holds the rows and columns in view)
CELLS = """(css) => Array.from(document.querySelectorAll(`${css} [data-testid="stDataFrame"] tbody tr`))
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))"""
TRACES = """() => Array.from(document.querySelector('.js-plotly-plot').data).map(t => ({
    name: t.name, opacity: t.marker.opacity, ids: t.customdata ? Array.from(t.customdata).map(d => d[0]) : null}))"""
LISTEN = """() => {
    window.__selected = null;
    document.querySelector('.js-plotly-plot').on('plotly_selected', (ev) => {
        if (ev && ev.points) window.__selected = ev.points.map(p => p.customdata[0]);
    });
}"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    """The studio over a workspace holding the 80-row pool (opened on start, not embedded)."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[300:380]
    pool = load_pool(frame, name="search")
    Store(tmp_path / "ws.sqlite").save_pool(pool)
    with streamlit_server(tmp_path) as info:
        yield {**info, "pool": pool}


def _vectors(server: dict) -> np.ndarray:
    """The vectors the studio cached for the pool."""
    from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache
    from selectllm_core.embed.neardup import cached_pool_vectors

    found = cached_pool_vectors(server["pool"], model_id=BUNDLED_MODEL, cache=EmbeddingCache(server["cache"]))
    assert found is not None, "the studio embedded the pool"
    return found


def _search(page, label: str, text: str) -> None:  # noqa: ANN001
    box = page.get_by_role("textbox", name=label)
    box.fill(text)
    box.press("Enter")
    idle(page)


def _cells(page, css: str, rows: int) -> list[list[str]]:  # noqa: ANN001
    """The cells of the table under `css` once it shows `rows` rows (the rerun that fills it may still run)."""
    page.wait_for_function(f"(css) => ({CELLS})(css).length === {rows}", arg=css, timeout=LONG)
    return page.evaluate(CELLS, css)


def _titles(pool: Pool, ids: list[str]) -> list[str]:
    return pool.frame.set_index("id").loc[ids, "instruction"].tolist()


@pytest.mark.timeout(900)
def test_data_page_searches_the_pool_and_lists_rows_like_one(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    pool = server["pool"]
    hits = PoolIndex(pool.frame).search(WORD)
    assert len(hits) == 8
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(server["url"] + "/data")
        page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=LONG)
        expect(page.get_by_text("The first 50 of 80 rows.")).to_be_visible(timeout=LONG)

        # 1. a search lists the matching rows, best first, the words found marked
        _search(page, "Search the pool", WORD)
        expect(page.get_by_text("8 of 80 rows match (best first); «marks» show the words found.")).to_be_visible(
            timeout=LONG)
        cells = _cells(page, '[class*="st-key-data_rows_"]', 8)
        assert [c[0] for c in cells] == hits["id"].tolist(), "the matching rows, best first"
        assert all(f"«{WORD}»" in c[1].lower() for c in cells)
        shot(page, "search-1-data-matches")

        # 2. a row selected: the pool is not embedded yet; embedded on request, the rows most like it
        table = page.locator('[class*="st-key-data_rows_"]').locator('[data-testid="stDataFrame"]')
        table.scroll_into_view_if_needed()
        grid = table.bounding_box()
        page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 35 * 2 + 17)  # the third row's selection box
        expect(page.get_by_text("More like this compares embeddings, and this pool is not embedded with "
                                "all-MiniLM-L6-v2 yet.", exact=False)).to_be_visible(timeout=LONG)
        page.get_by_role("button", name="Embed 80 rows", exact=True).click()
        seed = hits["id"].iloc[2]
        expect(page.get_by_text(f"the 10 rows of the pool most like “{_titles(pool, [seed])[0][:40]}", exact=False))\
            .to_be_visible(timeout=LONG)
        cells = _cells(page, ".st-key-data_like", 10)
        near = more_like_this(_vectors(server), pool.frame["id"].tolist(), [seed], k=10)
        assert [c[0] for c in cells] == near["id"].tolist()
        assert [float(c[1]) for c in cells] == pytest.approx(near["similarity"].tolist(), abs=5e-4)
        shot(page, "search-2-data-more-like-this")
        browser.close()
    assert_clean_log(server["log"])


def _box_select(page) -> list[str]:  # noqa: ANN001
    """Box-select the upper left 45% of the map; returns the ids plotly reports selected."""
    plot = page.locator(".js-plotly-plot").first
    page.evaluate(LISTEN)
    plot.hover()
    plot.locator('[data-title="Box Select"]').click()
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45, steps=12)
    page.mouse.up()
    page.wait_for_function("() => window.__selected !== null", timeout=30_000)
    return list(dict.fromkeys(page.evaluate("() => window.__selected")))


@pytest.mark.timeout(900)
def test_map_page_highlights_matches_and_rows_like_a_selection(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    pool = server["pool"]
    hits = PoolIndex(pool.frame).search(WORD)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(server["url"])  # the Map is the first page
        page.get_by_role("heading", name="Map", exact=True).wait_for(timeout=LONG)
        page.locator(".js-plotly-plot .nsewdrag").first.wait_for(timeout=LONG)
        idle(page)
        assert all(t["name"] != "search matches (8)" for t in page.evaluate(TRACES))

        # 1. a search: the matches drawn on top, the other points faded, the list under the map only them
        _search(page, "Search the pool", WORD)
        expect(page.get_by_text("8 of 80 rows match: the outlined circles on the map", exact=False)).to_be_visible(
            timeout=LONG)
        expect(page.get_by_role("heading", name="8 instructions match the search")).to_be_visible(timeout=LONG)
        page.wait_for_function("() => Array.from(document.querySelector('.js-plotly-plot')?.data ?? [])"
                               ".some(t => t.name === 'search matches (8)')", timeout=LONG)
        traces = page.evaluate(TRACES)
        marked = [t for t in traces if t["name"] == "search matches (8)"]
        assert sorted(next(t["ids"] for t in marked if t["ids"])) == sorted(hits["id"])
        assert all(t["opacity"] == FADED for t in traces if t["ids"] and t["name"] != "search matches (8)")
        expect(page.locator(".legendtext").filter(has_text="search matches (8)")).to_be_visible()
        cells = _cells(page, ".st-key-map_listed", 8)
        assert [c[0] for c in cells] == _titles(pool, hits["id"].tolist())
        shot(page, "search-3-map-matches")

        # 2. a box selection narrows the list to the matches inside it
        selected = _box_select(page)
        inside = [h for h in hits["id"] if h in set(selected)]
        expect(page.get_by_role("heading", name=f"{len(inside)} of the {len(selected)} instructions in the "
                                "selection match the search")).to_be_visible(timeout=LONG)

        # 3. more like the selection: listed with their similarity, and highlighted on the map
        page.get_by_role("button", name="More like this: the 10 rows nearest the selection").click()
        expect(page.get_by_role("heading", name=f"10 rows most like the {len(selected)} you selected"))\
            .to_be_visible(timeout=LONG)
        near = more_like_this(_vectors(server), pool.frame["id"].tolist(), selected, k=10)
        page.wait_for_function("() => Array.from(document.querySelector('.js-plotly-plot')?.data ?? [])"
                               ".some(t => t.name === 'more like the selection (10)')", timeout=LONG)
        traces = page.evaluate(TRACES)
        drawn = next(t["ids"] for t in traces if t["name"] == "more like the selection (10)" and t["ids"])
        assert sorted(drawn) == sorted(near["id"])
        assert sorted(next(t["ids"] for t in traces if t["name"] == f"your selection ({len(selected)})"
                           and t["ids"])) == sorted(selected)
        cells = _cells(page, ".st-key-map_like_rows", 10)
        assert [c[1] for c in cells] == _titles(pool, near["id"].tolist())
        assert [float(c[0]) for c in cells] == pytest.approx(near["similarity"].tolist(), abs=5e-4)
        shot(page, "search-4-map-more-like-this")
        browser.close()
    assert_clean_log(server["log"])
