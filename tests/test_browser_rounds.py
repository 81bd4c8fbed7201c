"""A tournament in the app, in a real browser: the rounds before a run (Select, Prompt) and while and after it runs.

The workspace is seeded with a finished run made at our seam (`ScriptedBackend`): 60 Dolly rows in subsets of 10
for a budget of 3, so round 1's 6 subsets outnumber the 3 places and their 6 winners play a round 2. The Select
page's run panel says which round the run reached, with a table of each round's calls and tokens, and the subset
list names each subset's round. With the same settings typed in, Select and Prompt say before a run that it will
play 2 rounds, and why; the Prompt page lists each round with its estimated tokens.

Run it with `pytest -m browser tests/test_browser_rounds.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LONG,
    REPO,
    assert_clean_log,
    goto,
    idle,
    open_dropdown,
    shot,
    streamlit_server,
)
from conftest import FakeEmbedder
from fakes import ScriptedBackend

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

# the cells of a table, row by row
ROWS = """(table) => Array.from(table.querySelectorAll('tbody tr')).map(
    tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[:60]
    store = Store(tmp_path / "ws.sqlite")
    result = run(load_pool(frame, name="rounds"), RunConfig(budget=3, subset_size=10), store=store,
                 backend=ScriptedBackend(), embedder=FakeEmbedder(), cache=EmbeddingCache(tmp_path / "seed-cache"))
    assert [r["n_subsets"] for r in store.rounds(result.run_id)] == [6, 1]
    store.close()
    with streamlit_server(tmp_path) as info:
        yield {**info, "run_id": result.run_id}


def _set_number(page, label: str, value: int) -> None:  # noqa: ANN001
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    idle(page)


@pytest.mark.timeout(900)
def test_the_rounds_of_a_run_before_during_and_after(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    s = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(s["url"] + "/select")
        page.get_by_role("heading", name="Select", exact=True).wait_for(timeout=LONG)
        # the stored run: which round it reached, each round's calls, and each subset's round
        expect(page.get_by_text("7 / 7 subsets answered (7 ok) · round 2 of 2 · complete")).to_be_visible(
            timeout=LONG)
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text="subsets answered")
        table.wait_for(timeout=LONG)
        rounds = table.evaluate(ROWS)
        assert [r[:4] for r in rounds] == [["1", "60", "6 / 6", "6"], ["2", "6", "1 / 1", "1"]], rounds
        option = page.get_by_role("option", name=re.compile(r"^round 2 · subset 6 · ok · 3 pick\(s\)$"))
        open_dropdown(page, page.get_by_role("combobox", name="Subset", exact=True), option)
        expect(option).to_be_visible()
        page.keyboard.press("Escape")
        # the same settings, before a run: 2 rounds, and why
        _set_number(page, "Budget (rows to annotate)", 3)
        _set_number(page, "Subset size (0 = as in the paper)", 10)
        expect(page.get_by_text("2 rounds: 60 → 6 rows, then the last round's picks are trimmed to the budget of 3; "
                                "7 subsets in all")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("Every row is shown exactly once in round 1.").first).to_be_visible()
        shot(page, "rounds-1-select")
        goto(page, "Prompt")
        expect(page.get_by_text(re.compile(r"^2 rounds: 60 → 6 rows"))).to_be_visible(timeout=LONG)
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text="prompt tokens (estimate)")
        table.wait_for(timeout=LONG)
        planned = table.evaluate(ROWS)  # round, rows, subsets, subset size, picks each, passes on, tokens
        assert [r[:6] for r in planned] == [["1", "60", "6", "10", "1", "6"], ["2", "6", "1", "10", "3", "3"]], planned
        shot(page, "rounds-2-prompt")
        browser.close()
    assert_clean_log(s["log"])
