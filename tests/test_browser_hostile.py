"""Hostile pool text in a real browser: every page shows it as text, and none of its markup or script runs.

The workspace is seeded before the server starts: a pool of 60 Dolly rows, four of them carrying HTML, script,
markdown, LaTeX and Streamlit colour markup in the instruction, the input and an extra column, under a hostile
pool name, and a finished run made at our seam (`ScriptedBackend`). The model's reasons are hostile too, one
subset failed on a hostile raw answer, and one pick carries a hostile curator note. Then a curator's browser
visits Data (the saved pool and an upload preview), Map (hover, a box selection, a cluster's rows), Prompt
(every rendered subset), Select (the failed subset with its raw answers, and a subset of hostile picks), Review
and Export. On each page: no dialog opened, `window.__pwned` stays undefined, no injected element exists, no
markup was rendered (no element holds only a marker word), and the hostile text is on the page, literally.
Each page is saved as test-artifacts/screenshots/hostile-<page>.png.

Run it with `pytest -m browser tests/test_browser_hostile.py` (needs `apt-get install chromium`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    HOVER_LABEL,
    LONG,
    REPO,
    assert_clean_log,
    goto,
    hover_until,
    idle,
    open_dropdown,
    shot,
    streamlit_server,
)
from conftest import FakeEmbedder
from fakes import ScriptedBackend, shown_instructions

from selectllm_core.embed import EmbeddingCache
from selectllm_core.methods import run_method
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

POOL_NAME = "hostile <img src=x onerror=alert('name')> **BOLDHIT** pool"
# row position -> (instruction, input); the marker words (…HIT) must never stand alone in an element
ROWS = {
    0: ("<img src=x onerror=alert(1)> What does this HTML tag do?", ""),
    1: ("<script>window.__pwned=1</script>Explain what a script tag is",
        '<a href="javascript:window.__pwned=1">LINKHIT</a> context'),
    2: ("Read [CLICKHIT](javascript:window.__pwned=1) with **BOLDHIT** and $x^2$ math",
        ':red[REDHIT] <iframe src="javascript:window.__pwned=1"></iframe>'),
    3: ("Summarise :red[FAILHIT] and ![IMGHIT](x) <svg onload=window.__pwned=1>", "<b>BOLDHIT</b> input"),
}
CATEGORY = "<b>CATHIT</b><img src=x onerror=window.__pwned=1>"
REASON = "<img src=x onerror=alert(2)> **BOLDHIT** [CLICKHIT](javascript:alert(3)) :red[REDHIT] $y$"
RAW = "<script>window.__pwned=1</script> <img src=x onerror=alert(4)> :red[REDHIT] [CLICKHIT](javascript:alert(5))"
NOTE = "<img src=x onerror=alert(6)> **BOLDHIT** note"
MARKERS = ["BOLDHIT", "CLICKHIT", "REDHIT", "LINKHIT", "IMGHIT", "CATHIT", "FAILHIT"]
EXTRA_COLUMN = "<img src=x onerror=alert('col')>source"

PAGE_IS_SAFE = """(markers) => {
    const found = [];
    const injected = ['img[src="x"]', '[onerror]', '[onload]', 'iframe[src^="javascript" i]',
                      'a[href^="javascript" i]', 'svg[onload]', '.katex', 'b', 'script:not([src])'];
    for (const sel of injected) {
        for (const el of document.querySelectorAll(sel)) {
            if (sel !== 'script:not([src])' || el.textContent.includes('__pwned')) found.push(sel);
        }
    }
    for (const el of document.body.querySelectorAll('*')) {
        const text = el.textContent.trim();
        if (markers.includes(text) && el.children.length === 0) found.push(el.tagName + ':' + text);
    }
    return {pwned: typeof window.__pwned !== 'undefined', found};
}"""


# -- the seeded workspace ---------------------------------------------------------------------------
def _answer(prompt: str, n: int, k: int, attempt: int) -> str:
    """Pick hostile rows first, with hostile reasons; the subset holding FAILHIT gets a hostile non-answer."""
    shown = shown_instructions(prompt)
    if any("FAILHIT" in s for s in shown):
        return RAW
    order = sorted(range(n), key=lambda i: not any(c in shown[i] for c in "<[*"))
    return json.dumps({"picks": [{"id": i + 1, "reason": f"{REASON} {shown[i][:12]}"} for i in order[:k]]})


def _seed(tmp: Path) -> dict:
    """Save the hostile pool, a finished run (one failed subset, one noted pick) and a random run for Compare."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[:60].reset_index(drop=True)
    for position, (instruction, input_) in ROWS.items():
        frame.loc[position, ["instruction", "input"]] = [instruction, input_]
    frame.loc[0, "category"] = CATEGORY
    pool = load_pool(frame, name=POOL_NAME)
    store = Store(tmp / "ws.sqlite")
    result = run(pool, RunConfig(budget=12, subset_size=10), store=store, backend=ScriptedBackend(_answer),
                 embedder=FakeEmbedder(), cache=EmbeddingCache(tmp / "seed-cache"))
    ids = {p: pool.frame.loc[pool.frame["instruction"] == ROWS[p][0], "id"].item() for p in ROWS}
    picks = store.selection(result.run_id)
    assert {ids[0], ids[1], ids[2]} <= set(picks["id"]), "the hostile rows are picked"
    assert ids[3] not in set(picks["id"]), "the FAILHIT row's subset failed"
    store.set_decisions(result.run_id, {ids[1]: ("accepted", NOTE)})
    plan = store.plan(result.run_id).set_index("id")
    other = store.selection(run_method("random", pool, budget=12, store=store).run_id)
    only_ours = [p for p in (1, 0, 2) if ids[p] not in set(other["id"])]
    assert only_ours, "a hostile pick of the SelectLLM run that the random run did not pick"
    store.close()
    return {"run_id": result.run_id, "ids": ids, "subset_of": {p: int(plan.at[i, "subset"]) for p, i in ids.items()},
            "compare_row": only_ours[0]}


# -- checks -----------------------------------------------------------------------------------------
def _assert_safe(page, where: str, dialogs: list[str]) -> None:  # noqa: ANN001
    """No dialog opened, no script ran, no element was injected and no markup rendered, anywhere on the page."""
    state = page.evaluate(PAGE_IS_SAFE, MARKERS)
    assert not dialogs, f"{where}: pool text opened a dialog: {dialogs}"
    assert not state["pwned"], f"{where}: pool text ran as script"
    assert not state["found"], f"{where}: pool text became markup: {state['found']}"
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "hostile <img src=x onerror=alert('name')> **BOLDHIT** pool" in sidebar.replace("\n", " ")


TABLE_TEXT = """(onlyLast) => {
    const grids = Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).slice(onlyLast ? -1 : 0);
    return grids.flatMap(g => Array.from(g.querySelectorAll('td, th')).map(cell => cell.textContent)).join('\\n');
}"""


def _assert_shown(text: str, *wanted: str, where: str) -> None:
    for literal in wanted:
        assert literal in text, f"{where}: {literal!r} is not shown as text"


def _assert_in_tables(page, *wanted: str, where: str, last: bool = False) -> None:  # noqa: ANN001
    """Each string is in the text of the tables' cells and headers (of the last table only, with `last`).

    The grids draw on a canvas and mirror the visible cells into an accessible table, which fills in after the
    grid has drawn: wait for it, then assert.
    """
    idle(page)
    with contextlib.suppress(playwright.TimeoutError):  # the assertion below names what is missing
        page.wait_for_function(f"([wanted, last]) => {{ const text = ({TABLE_TEXT})(last); "
                               "return wanted.every(w => text.includes(w)); }", arg=[list(wanted), last],
                               timeout=30_000)
    _assert_shown(page.evaluate(TABLE_TEXT, last), *wanted, where=where)


def _point(page, row_id: str, trace: str = "") -> dict:  # noqa: ANN001
    """Screen position and trace name of a row's point on the first map (found through customdata), in the
    first trace with a hover whose name starts with `trace`.

    The position is in viewport pixels, where `page.mouse` moves: the plot area is scrolled into view first, as a
    curator would scroll to it (on Compare the map is below the tables, off a 1100-px-high screen).
    """
    plot_area = page.locator(".js-plotly-plot .nsewdrag").first
    plot_area.wait_for(timeout=LONG)
    plot_area.scroll_into_view_if_needed(timeout=LONG)
    spot = page.evaluate("""([rowId, prefix]) => {
        const gd = document.querySelector('.js-plotly-plot');
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        for (const t of gd._fullData) {  // decoded arrays (gd.data may hold base64 blocks)
            if (t.hoverinfo === 'skip' || !t.name.startsWith(prefix) || !t.customdata) continue;
            const i = Array.from(t.customdata).findIndex(d => d[0] === rowId);
            if (i >= 0) {
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                return {x: box.left + xa.l2p(t.x[i]), y: box.top + ya.l2p(t.y[i]), name: t.name};
            }
        }
        return null;
    }""", [row_id, trace])
    assert spot, f"row {row_id} is on the map"
    size = page.viewport_size
    assert 0 <= spot["x"] < size["width"] and 0 <= spot["y"] < size["height"], f"row {row_id}'s point {spot} is on screen"
    return spot


def _hover(page, row_id: str, trace: str, *wanted: str) -> dict:  # noqa: ANN001
    """Hover a row's point: its label holds each wanted string as text, and no element. Returns the spot."""
    spot = hover_until(page, lambda: _point(page, row_id, trace), *wanted)
    assert page.locator(HOVER_LABEL).first.locator("img, image, script, a").count() == 0
    return spot


def _map_page(page, seeded: dict) -> None:  # noqa: ANN001
    """Hover the script row, box-select around it, open its cluster: its text is shown as text each time."""
    instruction = ROWS[1][0]
    spot = _hover(page, seeded["ids"][1], "", instruction)
    plot = page.locator(".js-plotly-plot").first
    plot.locator('[data-title="Box Select"]').click()
    page.mouse.move(spot["x"] - 6, spot["y"] - 6)
    page.mouse.down()
    page.mouse.move(spot["x"] + 6, spot["y"] + 6, steps=6)
    page.mouse.up()
    page.get_by_text(re.compile(r"^\d+ instructions? in the selection$")).wait_for(timeout=LONG)
    _assert_in_tables(page, instruction, ROWS[1][1], where="Map selection")
    cluster = int(re.match(r"(?:cluster )?(\d+)", spot["name"]).group(1))
    clusters = page.locator('[data-testid="stDataFrame"]').filter(has_text="Distinctive terms")
    clusters.scroll_into_view_if_needed()
    box = clusters.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 35 * cluster + 17)  # the row's selection marker
    page.get_by_text(re.compile(rf"^Cluster {cluster} · \d+ rows$")).wait_for(timeout=LONG)
    _assert_in_tables(page, instruction, ROWS[1][1], where="Map cluster rows", last=True)


def _prompt_page(page) -> None:  # noqa: ANN001
    """Every subset's rendered prompt, together, holds each hostile instruction and input literally."""
    page.get_by_text("Prompt tokens", exact=True).wait_for(timeout=LONG)
    field = page.get_by_label(re.compile(r"^Subset \(0 to \d+\)"))
    last = int(re.search(r"0 to (\d+)", page.get_by_text(re.compile(r"^Subset \(0 to")).inner_text()).group(1))
    code = page.locator('[data-testid="stCode"]')
    rendered = [code.inner_text()]
    for index in range(1, last + 1):
        field.fill(str(index))
        field.press("Enter")
        page.wait_for_function("([sel, before]) => (document.querySelector(sel)?.innerText ?? before) !== before",
                               arg=['[data-testid="stCode"]', rendered[-1]], timeout=LONG)
        rendered.append(code.inner_text())
    _assert_shown("\n".join(rendered), *(text for pair in ROWS.values() for text in pair if text),
                  where="Prompt")


def _select_page(page, seeded: dict) -> None:  # noqa: ANN001
    """The failed subset (shown first): its candidates, error and raw answers; then a subset of hostile picks."""
    page.get_by_text("Raw answer 1 (shown as text)").wait_for(timeout=LONG)
    _assert_shown(page.locator('[data-testid="stCode"]').first.inner_text(), RAW, where="Select raw answer")
    _assert_in_tables(page, ROWS[3][0], ROWS[3][1], where="Select failed subset")
    shot(page, "hostile-select-failed")
    subset = seeded["subset_of"][1]
    option = page.get_by_role("option", name=re.compile(rf"^subset {subset} · ok"))
    open_dropdown(page, page.get_by_role("combobox", name="Subset", exact=True), option)
    option.click()
    page.get_by_text(re.compile(rf"^Subset {subset} · ok")).wait_for(timeout=LONG)
    _assert_in_tables(page, ROWS[1][0], REASON, ROWS[1][1], where="Select subset")


@pytest.fixture
def seeded_server(tmp_path: Path) -> Iterator[dict]:
    """The server over the hostile workspace; yields its URL and paths with the seeded run's ids."""
    seeded = _seed(tmp_path)
    with streamlit_server(tmp_path) as info:
        yield {**info, **seeded}


def _hostile_upload(tmp: Path) -> Path:
    """A file a curator might receive: hostile rows and a hostile column name."""
    frame = pd.DataFrame({"instruction": [i for i, _ in ROWS.values()] + [f"plain row {n}" for n in range(8)],
                          "input": [x for _, x in ROWS.values()] + [""] * 8})
    frame[EXTRA_COLUMN] = CATEGORY
    path = tmp / "hostile.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.timeout(900)
def test_hostile_pool_text_stays_text_on_every_page(seeded_server: dict) -> None:
    from playwright.sync_api import sync_playwright

    s, dialogs = seeded_server, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 2200, "height": 1100})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # 1. Map (the start page): hover, a box selection and a cluster's rows
        page.goto(s["url"])
        page.get_by_text(re.compile("clusters of equal size")).wait_for(timeout=LONG)
        _map_page(page, s)
        _assert_safe(page, "Map", dialogs)
        shot(page, "hostile-map")

        # 2. Data: the saved pool's rows, then an upload's preview and check (not saved)
        goto(page, "Data")
        _assert_in_tables(page, ROWS[0][0], ROWS[1][1], CATEGORY, where="Data")
        _assert_safe(page, "Data", dialogs)
        shot(page, "hostile-data")
        page.get_by_role("tab", name="Load a new pool").click()
        page.locator('input[type="file"]').set_input_files(str(_hostile_upload(s["tmp"])))
        page.get_by_text("Save to the workspace and open it").wait_for(timeout=LONG)
        _assert_in_tables(page, EXTRA_COLUMN, ROWS[2][0], ROWS[2][1], CATEGORY, where="Data upload")
        _assert_safe(page, "Data upload", dialogs)
        shot(page, "hostile-data-upload")

        # 3. Prompt: each subset rendered as the model will read it
        goto(page, "Prompt")
        _prompt_page(page)
        _assert_safe(page, "Prompt", dialogs)
        shot(page, "hostile-prompt")

        # 4. Select: the failed subset's raw answers, and hostile picks with hostile reasons
        goto(page, "Select")
        _select_page(page, s)
        _assert_safe(page, "Select", dialogs)
        shot(page, "hostile-select")

        # 5. Compare: the two runs in the measures table and on the map, where a pick's hover holds its reason
        goto(page, "Compare")
        page.get_by_text("Picks on the map", exact=True).wait_for(timeout=LONG)
        row = s["compare_row"]
        _hover(page, s["ids"][row], "SelectLLM", ROWS[row][0], "<img src=x onerror=alert(2)> **BOLDHIT**")
        _assert_safe(page, "Compare", dialogs)
        shot(page, "hostile-compare")

        # 6. Review: the picks table with reasons, inputs and the curator's note
        goto(page, "Review")
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=LONG)
        page.get_by_text("Decisions on the map").wait_for(timeout=LONG)
        page.locator(".js-plotly-plot .nsewdrag").first.wait_for(timeout=LONG)
        _assert_in_tables(page, ROWS[0][0], ROWS[1][0], ROWS[1][1], ROWS[2][0], ROWS[2][1], REASON, NOTE,
                      where="Review")
        _assert_safe(page, "Review", dialogs)
        shot(page, "hostile-review")

        # 7. Export: every pick, with its decision, note and extra columns
        goto(page, "Export")
        page.get_by_text(re.compile(r"^All picks, with their decisions")).click()
        page.get_by_text("Preview: the first rows of 10").wait_for(timeout=LONG)
        _assert_in_tables(page, ROWS[0][0], ROWS[1][0], ROWS[2][1], REASON, where="Export")
        page.locator('[data-testid="stDataFrame"]').hover()
        page.mouse.wheel(3000, 0)  # the decision, note and extra columns are to the right
        _assert_in_tables(page, NOTE, CATEGORY, where="Export, scrolled right")
        _assert_safe(page, "Export", dialogs)
        shot(page, "hostile-export")
        browser.close()
    assert_clean_log(s["log"])
