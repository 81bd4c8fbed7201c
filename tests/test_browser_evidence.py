"""A run's evidence on the Select page, in a real browser, with the bundled local model: measure order consistency.

The workspace is seeded with a finished run of the real bundled SmolLM2-135M (in-process llama.cpp, the app's
own local backend): 60 demo rows in 6 subsets of 10, one pick each. The Select page shows its valid answers,
"Order consistency: not measured" and the share of picks at the first two shown positions. The curator clicks
"Measure order consistency": the app asks 4 of the subsets again in reversed order through the same model,
and the metric then shows the measured value against chance (with the plain warning when it is at chance),
while the run's picks stay as they were. The run's reasons are checked against their subsets (a metric; the
subset table's "Reason fits" column is drawn on a canvas, so the screenshot shows it).

Run it with `pytest -m browser tests/test_browser_evidence.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, LONG, REPO, assert_clean_log, goto, idle, shot, streamlit_server

from selectllm_core.embed import EmbeddingCache
from selectllm_core.llm import make_backend
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.select.orders import run_consistency
from selectllm_core.store import Store

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[:60]
    store = Store(tmp_path / "ws.sqlite")
    result = run(load_pool(frame, name="evidence"), RunConfig(budget=6, subset_size=10, max_input_chars=150),
                 store=store, backend=make_backend("local"), cache=EmbeddingCache(tmp_path / "cache"))
    assert len(store.subset_results(result.run_id)) == 6
    store.close()
    with streamlit_server(tmp_path) as info:
        yield {**info, "run_id": result.run_id}


def _metric(page, label: str) -> str:  # noqa: ANN001
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_the_select_page_measures_order_consistency_with_the_local_model(server: dict) -> None:
    store = Store(server["workspace"])
    picks = store.selection(server["run_id"])["id"].tolist()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server["url"], timeout=LONG)
        page.get_by_role("heading", name="Map", exact=True).wait_for(timeout=LONG)
        goto(page, "Select")
        idle(page)
        page.locator('[data-testid="stMetric"]').filter(has_text="Valid answers").first.wait_for(timeout=LONG)
        valid = sum(r["status"] == "ok" for r in store.subset_results(server["run_id"]))
        assert _metric(page, "Valid answers") == f"{valid} of 6"
        assert _metric(page, "Order consistency") == "not measured"
        assert re.fullmatch(r"\d+%", _metric(page, "Picks at shown positions"))
        assert "uniform 20%" in page.locator('[data-testid="stMetric"]').filter(has_text="Picks at").first.inner_text()
        shot(page, "evidence-1-not-measured")
        button = page.get_by_role("button", name=re.compile(r"Measure order consistency: re-ask \d subset"))
        button.click()
        page.locator('[data-testid="stMetric"]').filter(has_text="chance").first.wait_for(timeout=LONG)
        idle(page)
        measured = run_consistency(store.subset_results(server["run_id"]))
        assert measured.subsets >= 1 and measured.source == "check"
        assert _metric(page, "Order consistency") == f"{measured.value:.2f}"
        assert f"chance {measured.chance:.2f}" in page.locator('[data-testid="stMetric"]').filter(
            has_text="Order consistency").first.inner_text()
        warning = page.get_by_text("This model's picks are no better than random here")
        assert warning.count() == (1 if measured.at_chance else 0)
        assert store.selection(server["run_id"])["id"].tolist() == picks, "the picks stay"
        shot(page, "evidence-2-measured")
        # each reason is checked against its subset: the subset table says which candidate it fits
        assert page.locator('[data-testid="stMetric"]').filter(has_text="Reasons that match their pick").count() == 1
        browser.close()
    assert_clean_log(server["log"])
