"""Promoting a passed-over candidate from a subset's view on the Select page, in a real browser.

The workspace is seeded with a finished run made at our seam (`ScriptedBackend`: the first two picks of each of 6
subsets, for a budget of 12), where one subset gets no usable answer, so the selection holds 10 picks and 2 places
of the budget are open. Named in the sidebar, the curator opens Select, where the failed subset is shown first,
and adds one of its rows in an open place; then opens a subset the model answered and swaps one of its
passed-over rows in for a pick. Each time the subset's table marks the row a curator pick, the message says what
was done, and the workspace holds the row with the origin "curator pick"; Review shows the same picks.
Screenshots of the controls before each press go to test-artifacts/screenshots/.

Run it with `pytest -m browser tests/test_browser_promote_select.py` (needs `apt-get install chromium`).
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
from fakes import ScriptedBackend, first_k_json

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

# the cells of a table on the page (at: its index, -1 for the last one), row by row
CELLS = """(at) => Array.from(Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).at(at)
    ?.querySelectorAll('tbody tr') ?? []).map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))"""


def _seed(tmp: Path) -> dict:
    """A pool of 60 Dolly rows and a finished run of 10 picks for a budget of 12 (one subset failed)."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[120:180].reset_index(drop=True)
    marker = frame["instruction"][7]

    def answer(prompt: str, n: int, k: int, attempt: int) -> str:
        return "I cannot choose." if marker in prompt else first_k_json(prompt, n, k, attempt)

    store = Store(tmp / "ws.sqlite")
    result = run(load_pool(frame, name="promote"), RunConfig(budget=12, subset_size=10), store=store,
                 backend=ScriptedBackend(answer), embedder=FakeEmbedder(), cache=EmbeddingCache(tmp / "seed-cache"))
    results = store.subset_results(result.run_id)
    failed = next(r for r in results if r["status"] == "failed")
    answered = next(r for r in results if r["status"] == "ok")
    assert len(store.selection(result.run_id)) == 10
    store.close()
    return {"run_id": result.run_id, "failed": failed, "answered": answered}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    seeded = _seed(tmp_path)
    with streamlit_server(tmp_path) as info:
        yield {**info, **seeded}


def _selection(s: dict) -> pd.DataFrame:
    """The run's selection as the app's workspace holds it now."""
    store = Store(s["workspace"])
    try:
        return store.selection(s["run_id"]).set_index("id")
    finally:
        store.close()


def _choose(page, label: str, option: re.Pattern) -> None:  # noqa: ANN001
    """Pick an option of a selectbox (a dropdown opened while the page still redraws itself closes again)."""
    choice = page.get_by_role("option", name=option)
    open_dropdown(page, page.get_by_role("combobox", name=label, exact=True), choice)
    choice.first.click()
    idle(page)


def _row_of(page, number: int, state: str) -> list[str]:  # noqa: ANN001
    """The subset table's cells of the row the model saw as #number, once the grid shows it in this state."""
    page.wait_for_function(f"([n, state]) => ({CELLS})(-1).some(r => r[0] === n && r.includes(state))",
                           arg=[str(number), state], timeout=LONG)
    return next(r for r in page.evaluate(CELLS, -1) if r[0] == str(number))


@pytest.mark.timeout(900)
def test_promote_from_a_subset_on_the_select_page(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    s = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(s["url"] + "/select")
        page.get_by_role("heading", name="Select", exact=True).wait_for(timeout=LONG)
        name = page.get_by_role("textbox", name="Your name")
        name.fill("Ana")
        name.press("Enter")
        page.get_by_text("Subsets", exact=True).wait_for(timeout=LONG)

        # 1. the failed subset comes first: none of its rows is a pick, so one of them fills an open place
        failed = s["failed"]
        expect(page.get_by_text(f"Subset {failed['subset']} · failed")).to_be_visible(timeout=LONG)
        panel = page.get_by_text("Promote a row of this subset (the model gave no usable answer)")
        expect(panel).to_be_visible(timeout=LONG)
        expect(page.get_by_text("Add it in an open place: the selection has 2 open places (budget 12")).to_be_visible()
        chosen = failed["members"][2]
        _choose(page, "Candidate to promote", re.compile(r"^#3 · "))
        add = page.get_by_role("button", name="Add to selection")
        shot(page, "promote-select-1-fill-offered")
        add.click()
        expect(page.get_by_text("Added 1 curator pick (accepted) in an open place of the budget: ")).to_be_visible(
            timeout=LONG)
        expect(page.get_by_text(re.compile(r"; 1 open place left\.$"))).to_be_visible()
        picks = _selection(s)
        assert picks.at[chosen, "origin"] == "curator pick" and picks.at[chosen, "decision"] == "accepted"
        assert picks.at[chosen, "reason"] == "curator pick (an open place of the budget)" and len(picks) == 11
        row = _row_of(page, 3, "curator pick, in an open place")
        assert picks.at[chosen, "instruction"].startswith(row[3][:30]), "the row added is the one chosen"
        expect(page.get_by_text(f"Subset {failed['subset']} · failed · 10 candidates · the model picked 0 · the "
                                "selection holds 1 (1 curator pick)")).to_be_visible()
        shot(page, "promote-select-2-filled")

        # 2. a subset the model answered: its last passed-over row swaps in for its first pick
        answered = s["answered"]
        out, into = answered["picks"][0], answered["members"][-1]
        number = {rid: n for n, rid in enumerate(answered["members"], start=1)}
        _choose(page, "Subset", re.compile(rf"^subset {answered['subset']} · ok"))
        expect(page.get_by_text("Promote a candidate the model passed over")).to_be_visible(timeout=LONG)
        _choose(page, "Candidate to promote", re.compile(rf"^#{number[into]} · "))
        _choose(page, "Swap it in for this pick", re.compile(rf"^#{number[out]} · model pick · "))
        swap = page.get_by_role("button", name="Swap in")
        shot(page, "promote-select-3-swap-offered")
        swap.click()
        expect(page.get_by_text("Swapped: ")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("takes its place as a curator pick, accepted.")).to_be_visible()
        picks = _selection(s)
        assert out not in picks.index and picks.at[into, "origin"] == "curator pick"
        assert picks.at[into, "reason"] == f"curator pick (replacing {out})" and len(picks) == 11
        swapped_in = _row_of(page, number[into], f"curator pick, in place of #{number[out]}")
        assert picks.at[into, "instruction"].startswith(swapped_in[3][:30]) and swapped_in[1] == ""
        swapped_out = _row_of(page, number[out], f"swapped out for #{number[into]}")
        assert swapped_out[1] == "pick 1", "the model's answer stays as it was"
        shot(page, "promote-select-4-swapped")
        store = Store(s["workspace"])
        history = store.history(s["run_id"])
        assert store.decisions(s["run_id"]).set_index("id").at[out, "decision"] == "rejected"
        assert set(history[history["action"] == "promote"]["curator"]) == {"Ana"}, "the sidebar's name is recorded"
        store.close()

        # 3. Review shows both curator picks, by origin
        goto(page, "Review")
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=LONG)
        page.wait_for_function(f"() => ({CELLS})(0).filter(r => r.includes('curator pick')).length === 2",
                               timeout=LONG)
        browser.close()
    assert_clean_log(s["log"])
