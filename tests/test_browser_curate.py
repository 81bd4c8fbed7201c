"""The curator's controls on the Review page, in a real browser: undo, the history, a swap and an import.

The workspace is seeded with a finished run of 12 picks made at our seam (`ScriptedBackend`: the first picks of
each subset, so every subset has rows the model passed over). A curator with no name set accepts every pick,
reads the last change beside "Undo last change" (recorded with an empty name, shown as unnamed), undoes it and
sees every pick pending again. Then, named in the sidebar, the curator swaps the first pick for a passed-over row
of its subset and sees that row marked "curator pick" in the table; uploads a decisions CSV with an unknown id,
reads the preview, skips the unknown id and applies the rest (one pick rejected); and fills the open place that
leaves from the runners-up. The history CSV downloaded at the end holds every change. Screenshots of each control
before it is pressed go to test-artifacts/screenshots/.

Run it with `pytest -m browser tests/test_browser_curate.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

import io
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
from selectllm_core.studio import curate

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

CELLS = """() => Array.from(document.querySelector('[data-testid="stDataFrame"]')?.querySelectorAll('tbody tr') ?? [])
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))"""
HEADERS = """() => Array.from(document.querySelector('[data-testid="stDataFrame"]').querySelectorAll('thead th'))
    .map(th => th.textContent)"""


def _seed(tmp: Path) -> tuple[str, list[str]]:
    """A pool of 60 Dolly rows and a finished run of 12 picks; returns the run id and its pick ids by rank."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[300:360]
    store = Store(tmp / "ws.sqlite")
    result = run(load_pool(frame, name="curate"), RunConfig(budget=12, subset_size=10), store=store,
                 backend=ScriptedBackend(), embedder=FakeEmbedder(), cache=EmbeddingCache(tmp / "seed-cache"))
    ids = store.selection(result.run_id)["id"].tolist()
    store.close()
    assert len(ids) == 12
    return result.run_id, ids


def _workspace(s: dict) -> tuple[Store, pd.DataFrame]:
    """Our own Store on the app's workspace file, and the run's selection as it holds it now."""
    store = Store(s["workspace"])
    return store, store.selection(s["run_id"]).set_index("id")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    run_id, ids = _seed(tmp_path)
    with streamlit_server(tmp_path) as info:
        yield {**info, "run_id": run_id, "ids": ids}


@pytest.mark.timeout(900)
def test_undo_swap_and_import_on_the_review_page(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    s, ids = server, server["ids"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True).new_page()
        page.goto(s["url"] + "/review")
        page.get_by_role("heading", name="Review", exact=True).wait_for(timeout=LONG)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=LONG)
        accepted = page.locator('[data-testid="stMetric"]').filter(has_text="Accepted")
        expect(page.get_by_text(re.compile(r"^Nothing to undo: no decision of this run"))).to_be_visible(timeout=LONG)
        expect(page.get_by_role("button", name="Undo last change")).to_be_disabled()

        # 1. accept every pick: the last change is named beside the Undo button, with the (empty) curator name
        page.get_by_role("button", name="Accept 12 pending (shown)").click()
        expect(accepted).to_contain_text("12", timeout=LONG)
        expect(page.get_by_text(re.compile(r"^Last change: accepted 12 picks \(unnamed, \d\d:\d\d\)$"))).to_be_visible(
            timeout=LONG)
        undo = page.get_by_role("button", name="Undo last change")
        undo.hover()
        expect(page.get_by_text(re.compile(r"^Undo: accepted 12 picks \(unnamed, \d\d:\d\d\)$"))).to_be_visible(
            timeout=LONG)
        shot(page, "curate-1-undo-offered")

        # 2. undo: every pick pending again, and the undo is recorded
        undo.click()
        expect(page.get_by_text(re.compile(r"^Undone: accepted 12 picks"))).to_be_visible(timeout=LONG)
        expect(accepted).to_contain_text("0", timeout=LONG)
        store, picks = _workspace(s)
        assert set(picks["decision"]) == {"pending"}
        assert store.history(s["run_id"])["action"].tolist() == ["bulk"] * 12 + ["undo"] * 12

        # 3. the curator names themself in the sidebar, then swaps the first pick for a passed-over row of its subset
        name = page.get_by_role("textbox", name="Your name")
        name.fill("Ana")
        name.press("Enter")
        idle(page)
        into = curate.swap_candidates(store, s["run_id"], ids[0])["instruction"].iloc[0]
        page.get_by_text("Swap a pick for a candidate the model passed over").click()
        idle(page)
        choice = page.get_by_role("combobox", name="Swap for…").last
        expect(choice).to_have_value(re.compile("^" + re.escape(into[:40])), timeout=LONG)  # shown by its text
        swap = page.get_by_role("button", name="Swap", exact=True)
        swap.scroll_into_view_if_needed()
        shot(page, "curate-2-swap-offered")
        swap.click()
        expect(page.get_by_text("Swapped: ")).to_be_visible(timeout=LONG)
        idle(page)
        store, picks = _workspace(s)
        promoted = picks[picks["origin"] == "curator pick"]
        assert ids[0] not in picks.index and len(promoted) == 1 and promoted["instruction"].iloc[0] == into
        assert promoted["decision"].iloc[0] == "accepted" and promoted["rank"].iloc[0] == 1
        page.wait_for_function(f"() => ({CELLS})().some(r => r.includes('curator pick'))", timeout=LONG)
        row = next(r for r in page.evaluate(CELLS) if "curator pick" in r)
        assert row[0] == "accepted" and into.startswith(row[2][:30]), "the table marks the swapped-in row"
        # each model pick's reason is checked against its subset (as on Select); a curator pick has none to check
        assert "Reason fits" in page.evaluate(HEADERS)
        fits = {r[3]: [] for r in page.evaluate(CELLS)}
        for r in page.evaluate(CELLS):
            fits[r[3]].append(r[4])
        assert fits["curator pick"] == [""]
        assert len(fits["model pick"]) == 11 and all(re.fullmatch(r"✓ its pick|⚠ fits #\d+ better|names no candidate", f)
                                                    for f in fits["model pick"]), fits
        shot(page, "curate-3-swapped")

        # 4. import a decisions CSV: the preview names the unknown id; skipped, the rest is applied
        rest = [i for i in picks.index if i != promoted.index[0]]
        upload = pd.DataFrame({"id": [rest[0], rest[1], rest[2], "no-such-id"],
                               "decision": ["accepted", "rejected", "", "accepted"],
                               "note": ["", "duplicate", "", ""], "response": ["An answer.", "", "Another.", ""]})
        path = s["tmp"] / "decisions.csv"
        path.write_bytes(upload.to_csv(index=False).encode("utf-8-sig"))
        page.get_by_text("Import decisions or annotations (CSV, JSONL)").click()
        idle(page)
        shot(page, "curate-4-import-open")
        page.get_by_role("region", name="Decisions file").locator('input[type="file"]').set_input_files(str(path))
        preview = ("decisions.csv: 3 rows for picks of this run. Applying it accepts 1 pick, rejects 1 pick, changes "
                   "1 note and stores 2 annotations (response).")
        expect(page.get_by_text(preview)).to_be_visible(timeout=LONG)
        expect(page.get_by_text("1 id of the file is not picks of this run: no-such-id.")).to_be_visible()
        apply = page.get_by_role("button", name="Apply", exact=True)
        expect(apply).to_be_disabled()
        page.get_by_text("Skip unknown ids").click()
        expect(apply).to_be_enabled(timeout=LONG)
        apply.scroll_into_view_if_needed()
        shot(page, "curate-5-import-preview")
        apply.click()
        expect(page.get_by_text("Imported decisions.csv: 3 picks changed; skipped 1 unknown id.")).to_be_visible(
            timeout=LONG)
        store, picks = _workspace(s)
        assert picks.loc[rest[:3], "decision"].tolist() == ["accepted", "rejected", "pending"]
        assert picks.at[rest[1], "note"] == "duplicate" and picks.at[rest[2], "response"] == "Another."
        expect(page.get_by_text(re.compile(r"^Last change: imported: accepted 1 pick, rejected 1 pick, changed 1 note, "
                                           r"stored 2 annotations \(Ana, "))).to_be_visible(timeout=LONG)
        shot(page, "curate-6-imported")

        # 5. the rejected pick leaves an open place: fill it from the runners-up
        fill = page.get_by_text("Fill 1 open place from the runners-up")
        fill.click()
        idle(page)  # the runners-up are read once the list is open
        add = page.get_by_role("button", name="Add 1 curator pick", exact=True)
        for _attempt in range(3):  # a choice made while the page still redraws itself can be lost: made again
            option = page.get_by_role("option").filter(has_text=" · subset ")
            open_dropdown(page, page.get_by_role("combobox", name="Runners-up to add"), option)
            first_up = option.first.inner_text()
            option.first.click()
            page.keyboard.press("Escape")
            try:
                expect(add).to_be_enabled(timeout=30_000)
                break
            except AssertionError:
                idle(page)
        expect(add).to_be_enabled(timeout=LONG)
        add.scroll_into_view_if_needed()
        shot(page, "curate-7-fill-offered")
        add.click()
        expect(page.get_by_text("Added 1 curator pick (accepted) in open places of the budget.")).to_be_visible(
            timeout=LONG)
        store, picks = _workspace(s)
        filled = picks[picks["reason"] == "curator pick (an open place of the budget)"]
        assert len(filled) == 1 and filled["origin"].iloc[0] == "curator pick" and len(picks) == 13
        assert first_up.startswith(filled["instruction"].iloc[0][:30])

        # 6. the history, downloaded: every change, with the empty curator name as recorded
        with page.expect_download() as info:
            page.get_by_role("button", name="History (CSV)").click()
        history = pd.read_csv(io.BytesIO(Path(info.value.path()).read_bytes()), encoding="utf-8-sig",
                              keep_default_na=False, dtype=str)
        changes = history.drop_duplicates("change_id")
        assert changes["action"].tolist() == ["bulk", "undo", "promote", "import", "promote"]
        assert changes["curator"].tolist() == ["", "", "Ana", "Ana", "Ana"]

        # 7. full-text search filters the picks to the rows holding every word typed
        word = max(re.findall(r"[A-Za-z]{5,}", picks["instruction"].iloc[0]), key=len)
        holding = picks[(picks["instruction"] + " " + picks["input"]).str.contains(rf"\b{word}\b", case=False)]
        search = page.locator('input[aria-label="Search the picks"]')
        search.fill(word)
        search.press("Enter")
        expect(page.get_by_text(f"{len(holding):,} of the picks match.")).to_be_visible(timeout=LONG)
        assert 1 <= len(holding) < len(picks)
        shot(page, "curate-8-search")
        browser.close()
    assert_clean_log(s["log"])
