"""The Review page over a run of 10,000 picks, in a real browser: a page of rows at a time, an edit on page 3 saved
to the workspace file at once and still there after a reload.

Seeded before the server starts: a pool of every row of `alpaca_alpagasus_random_9k` and `dolly_alpagasus_3k`
(12,210 distinct rows), and a finished SelectLLM run whose picks are the first 10,000 pool rows (ranks, reasons and
subsets written straight into the workspace: no model). The embedding cache holds TF-IDF + SVD vectors of the real
texts and the projection cache their first two components, so the map builds without MiniLM or UMAP (both take
minutes for 12,000 rows here); its clustering runs as in production.

What is shown: the table holds one page (the grid's row count is 100, not 10,000) and says "Rows 201–300 of
10,000" on page 3; a decision and a note typed on page 3 are in the SQLite file as soon as they are typed, and the
counters follow, while the map (drawn with the page) is left as it was until Refresh; after a reload, page 3
shows them, and the Status filter finds the one rejected pick. Screenshots: test-artifacts/screenshots/review-10k-*.

Run it with `pytest -m browser tests/test_browser_review_large.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LONG,
    assert_clean_log,
    idle,
    settled,
    shot,
    streamlit_server,
    type_in_cell,
)

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

RUN_ID, PICKS = "review-10k", 10_000
SHOWN = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"] tbody tr'))
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))"""
GRID_ROWS = """() => Number(document.querySelector('[data-testid="stDataFrame"] table').getAttribute('aria-rowcount'))
    - 1"""  # the grid's own count of its rows (its accessible mirror draws only the visible ones), less the header
MAP_TRACES = "() => (document.querySelector('.js-plotly-plot')?._fullData ?? []).map(t => t.name)"


def _seed(shared_data: Path, tmp: Path) -> list[str]:
    """Workspace, embedding cache and projection cache as the docstring says; returns the pick ids by rank."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, text_key
    from selectllm_core.embed.projection import store_projection
    from selectllm_core.pool.load import load_pool
    from selectllm_core.store import Store

    rows = []
    for name in ("alpaca_alpagasus_random_9k.jsonl.gz", "dolly_alpagasus_3k.jsonl.gz"):
        with gzip.open(shared_data / name, "rt", encoding="utf-8") as fh:
            rows += [{k: str(r.get(k) or "") for k in ("instruction", "input")} for r in map(json.loads, fh)]
    pool = load_pool(pd.DataFrame(rows), name="alpaca + dolly")
    ids = pool.frame["id"].tolist()
    store = Store(tmp / "ws.sqlite")
    store.save_pool(pool)
    store.create_run(RUN_ID, pool_id=pool.pool_id, method="selectllm", prompt="(seeded)", backend={"kind": "fake"},
                     params={"budget": PICKS, "subset_size": 10, "split": "diverse", "seed": 0, "shuffle": True,
                             "max_tokens": 512, "prompt": "default", "domain": "", "answer_format": "json"})
    store.save_plan(RUN_ID, [(r, i, i % 10, i // 10) for i, r in enumerate(ids)])
    store.save_selection(RUN_ID, [(r, i + 1, None, f"pick {i + 1}", i // 10) for i, r in enumerate(ids[:PICKS])])
    store.set_run_status(RUN_ID, "complete")
    store.close()
    svd = TruncatedSVD(64, random_state=0).fit_transform(
        TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english").fit_transform(pool.frame["text"]))
    unit = (svd / np.linalg.norm(svd, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)
    cache = EmbeddingCache(tmp / "cache")
    cache.put_many(BUNDLED_MODEL, {text_key(t): v for t, v in zip(pool.frame["text"], unit)})
    cache.close()
    store_projection(svd[:, :2], model_id=BUNDLED_MODEL, pool_id=pool.pool_id, cache_root=tmp / "cache")
    return ids[:PICKS]


def _stored(workspace: Path) -> dict[str, tuple[str, str]]:
    """{row id: (decision, note)} as the workspace file holds it, read with sqlite3 (not through the studio)."""
    with contextlib.closing(sqlite3.connect(f"file:{workspace}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT row_id, decision, note FROM decisions WHERE run_id = ?", (RUN_ID,)).fetchall()
    return {r: (d, n) for r, d, n in rows}


def _texts(workspace: Path, row_ids: list[str]) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{workspace}?mode=ro", uri=True)) as db:
        found = dict(db.execute(f"SELECT row_id, instruction FROM pool_rows WHERE row_id IN "
                                f"({', '.join('?' * len(row_ids))})", row_ids).fetchall())
    return [found[r] for r in row_ids]


def _edit(page, s: dict, row: int, column: str, text: str, want: tuple[str, str]) -> float:  # noqa: ANN001
    """Edit a cell until the workspace file holds `want` for that row's pick; seconds from the Enter to saved."""
    row_id = s["on_page"][row]
    for _attempt in range(3):  # a rerun that lands mid-gesture can swallow a keystroke: the gesture is repeated
        type_in_cell(page, row, column, text)
        start = time.monotonic()
        while time.monotonic() - start < 60:
            if _stored(s["workspace"]).get(row_id) == want:
                return time.monotonic() - start
            time.sleep(0.05)
        page.keyboard.press("Escape")
    raise AssertionError(f"the workspace never held {want} for {row_id}: {_stored(s['workspace']).get(row_id)}")


def _on_page(page, caption: str, first: str) -> list[list[str]]:  # noqa: ANN001
    """Wait for the page caption and for the grid to show `first` in its first row; the rows the grid draws."""
    from playwright.sync_api import expect

    expect(page.get_by_text(caption, exact=True)).to_be_visible(timeout=LONG)
    page.wait_for_function(f"([f]) => ({SHOWN})()[0]?.[2] === f", arg=[first], timeout=LONG)
    settled(page)
    return page.evaluate(SHOWN)


def _metric(page, label: str) -> str:  # noqa: ANN001
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator(
        '[data-testid="stMetricValue"]').inner_text()


@pytest.fixture
def server(tmp_path: Path, shared_data: Path) -> Iterator[dict]:
    ids = _seed(shared_data, tmp_path)
    with streamlit_server(tmp_path) as info:
        yield {**info, "ids": ids}


@pytest.mark.timeout(900)
def test_review_of_10k_picks_pages_saves_an_edit_on_page_3_and_keeps_it(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    s, ids = server, server["ids"]
    first_of = dict(zip((1, 3), _texts(s["workspace"], [ids[0], ids[200]])))
    s["on_page"] = ids[200:300]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        # 1. the first page: 100 rows of 10,000, the counters over all of them
        page.goto(s["url"] + "/review")
        page.get_by_text(re.compile(r"^Map ready \(")).wait_for(timeout=LONG)
        _on_page(page, "Rows 1–100 of 10,000", first_of[1])
        assert page.evaluate(GRID_ROWS) == 100
        assert (_metric(page, "Picked"), _metric(page, "Still to review")) == ("10,000", "10,000")
        expect(page.get_by_role("button", name="Accept 100 pending (this page)")).to_be_visible()
        shot(page, "review-10k-1-first-page")

        # 2. page 3, two pages on: the caption, the page number and the rows say so
        for _ in range(2):
            page.get_by_role("button", name="Next").click()
            idle(page)
        drawn = _on_page(page, "Rows 201–300 of 10,000", first_of[3])
        assert page.evaluate(GRID_ROWS) == 100 and 15 <= len(drawn) <= 30  # the grid draws only what is visible
        assert page.get_by_role("spinbutton", name=re.compile("^Page")).input_value() == "3"
        assert [r[5] for r in drawn[:3]] == ["pick 201", "pick 202", "pick 203"]  # the model's reason, by rank
        map_before = page.evaluate(MAP_TRACES)
        page.evaluate("() => { window.__mapData = document.querySelector('.js-plotly-plot').data; }")
        shot(page, "review-10k-2-page-3")

        # 3. reject the third row of page 3 and give it a note: in the workspace file as soon as it is typed
        seconds = _edit(page, s, 2, "decision", "rejected", ("rejected", ""))
        _edit(page, s, 2, "note", "duplicate of rank 17", ("rejected", "duplicate of rank 17"))
        print(f"\nedit on page 3 of 10,000 picks saved {seconds:.2f} s after its Enter")
        stored = _stored(s["workspace"])
        assert stored == {ids[202]: ("rejected", "duplicate of rank 17")}, f"that pick alone: {stored}"
        expect(page.locator('[data-testid="stMetric"]').filter(has_text="Rejected")).to_contain_text("1",
                                                                                                     timeout=LONG)
        assert _metric(page, "Still to review") == "9,999"
        page.wait_for_function(f"() => ({SHOWN})()[2]?.slice(0, 2).join('|') === 'rejected|duplicate of rank 17'",
                               timeout=LONG)
        assert page.get_by_text("Rows 201–300 of 10,000", exact=True).is_visible(), "still on page 3"
        # only the table's part of the page ran again: the map is the very figure drawn before the edits
        assert page.evaluate("() => document.querySelector('.js-plotly-plot').data === window.__mapData")
        assert page.evaluate(MAP_TRACES) == map_before and not any(t.startswith("rejected") for t in map_before)
        shot(page, "review-10k-3-edited-on-page-3")
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_function(f"() => ({MAP_TRACES})().includes('rejected (1)')", timeout=LONG)

        # 4. a reload starts a new session on page 1; page 3 still shows the decision and the note
        page.reload()
        _on_page(page, "Rows 1–100 of 10,000", first_of[1])
        number = page.get_by_role("spinbutton", name=re.compile("^Page"))
        number.fill("3")
        number.press("Enter")
        drawn = _on_page(page, "Rows 201–300 of 10,000", first_of[3])
        assert drawn[2][:2] == ["rejected", "duplicate of rank 17"] and drawn[2][5] == "pick 203"
        assert {r[0] for i, r in enumerate(drawn) if i != 2} == {"pending"}
        shot(page, "review-10k-4-after-reload")

        # 5. the Status filter keeps the one rejected pick, on a page of its own
        page.locator('[data-testid="stMultiSelect"]').filter(has_text="Status").click()
        page.get_by_role("option", name="rejected").click()
        page.keyboard.press("Escape")
        drawn = _on_page(page, "Rows 1–1 of 1 filtered (10,000 picks in all)",
                         _texts(s["workspace"], [ids[202]])[0])
        assert page.evaluate(GRID_ROWS) == 1 and len(drawn) == 1
        shot(page, "review-10k-5-filtered")
        browser.close()
    assert_clean_log(s["log"])
