"""End to end in a real browser: the studio served by `streamlit run`, driven by Playwright in Debian Chromium.

One walk through the whole job, with the embedded models and no network: the demo pool's map (timed), an upload
on the Data page, the prompt and its cost, a preview and a background run with the bundled SmolLM2 (12 LLM calls
in all), a reload while the run works, a random draw beside it on the Compare page, a rejection in the Review
table and a bulk accept of the pending picks, and the CSV download checked row by row against the workspace.
Every page is saved as a screenshot under test-artifacts/screenshots/.

Run it with `pytest -m browser` (needs `apt-get install chromium`; skipped when it is missing).
"""

from __future__ import annotations

import os
import re
import time
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
    click_until,
    goto,
    hover_until,
    idle,
    shot,
    streamlit_server,
)

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

HOSTILE = "<img src=x onerror=alert(1)> What does this HTML tag do?"
RUN = 1_200_000  # ms: 10 SmolLM2 calls of about 800 prompt tokens each, when other jobs share the cores


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    """`streamlit run app.py` on a free port with an empty workspace and cache; yields its URL and paths."""
    with streamlit_server(tmp_path) as info:
        yield info


def _small_pool(tmp: Path) -> Path:
    """100 real demo rows as CSV, one of them carrying HTML that must stay text."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[100:200].reset_index(drop=True)
    frame.loc[3, "instruction"] = HOSTILE
    path = tmp / "dolly_100.csv"
    frame.to_csv(path, index=False)
    return path


def _hover_shows_text(page) -> None:  # noqa: ANN001
    """Hover the hostile row's point (found through customdata): its label shows the HTML as text."""
    from selectllm_core.pool.load import content_id

    hover_until(page, lambda: _spot(page, content_id(HOSTILE, "")), HOSTILE.split(" What")[0], timeout=10_000)
    assert page.locator(".js-plotly-plot .hoverlayer").first.locator("img, image").count() == 0


def _spot(page, row_id: str) -> dict:  # noqa: ANN001
    """Where the row's point is drawn on the first map, in viewport pixels (the plot scrolled into view)."""
    plot_area = page.locator(".js-plotly-plot .nsewdrag").first
    plot_area.wait_for(timeout=LONG)
    plot_area.scroll_into_view_if_needed()
    spot = page.evaluate("""(rowId) => {
        const gd = document.querySelector('.js-plotly-plot');
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        for (const trace of gd._fullData) {  // decoded arrays (gd.data may hold base64 blocks)
            const i = Array.from(trace.customdata).findIndex(d => d[0] === rowId);
            if (i >= 0) {
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                return {x: box.left + xa.l2p(trace.x[i]), y: box.top + ya.l2p(trace.y[i])};
            }
        }
        return null;
    }""", row_id)
    assert spot, "the hostile row is on the map"
    return spot


def _reject_first_row(page) -> None:  # noqa: ANN001
    """In the Review table, set the first pick's decision to rejected, as a curator does (keyboard in the grid)."""
    from playwright.sync_api import expect

    rejected = page.locator('[data-testid="stMetric"]').filter(has_text="Rejected")
    for _attempt in range(3):  # a rerun that lands mid-gesture can swallow it; the store is checked at the end
        idle(page)
        box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(box["x"] + 40, box["y"] + 35 + 17)  # first row, Decision column
        page.keyboard.press("Enter")  # opens the cell's selectbox
        page.wait_for_timeout(500)
        page.keyboard.type("rejected")
        page.keyboard.press("Enter")
        try:
            expect(rejected).to_contain_text("1", timeout=20_000)
            return
        except AssertionError:
            page.keyboard.press("Escape")
    raise AssertionError("the Review table did not take the edit")


def _compare_map_ids(page) -> dict[str, list[str]]:  # noqa: ANN001
    """Row ids of each run's picks as drawn on the Compare page's map (decoded plotly data)."""
    plot = page.locator(".js-plotly-plot").last
    plot.locator(".nsewdrag").first.wait_for(timeout=LONG)
    return page.evaluate("""() => {
        const plots = document.querySelectorAll('.js-plotly-plot');
        const gd = plots[plots.length - 1];
        const out = {};
        for (const t of gd._fullData) if (t.customdata) out[t.name] = Array.from(t.customdata).map(d => d[0]);
        return out;
    }""")


def _box_select(page) -> None:  # noqa: ANN001
    """Pick the box tool in the map's mode bar and drag over the upper left half of the plot."""
    plot = page.locator(".js-plotly-plot").first
    plot.hover()
    plot.locator('[data-title="Box Select"]').click()
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=12)
    page.mouse.up()


@pytest.mark.timeout(3600)
def test_curator_walks_from_demo_map_to_exported_csv(server: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    from selectllm_core.runs.export import restore_formulas
    from selectllm_core.store import Store

    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # 1. first start: the demo pool's map, with progress, timed
        start = time.perf_counter()
        page.goto(server["url"])
        page.locator(".js-plotly-plot .scatterlayer, .js-plotly-plot canvas").first.wait_for(timeout=LONG)
        expect(page.get_by_text(re.compile("clusters of equal size"))).to_be_visible(timeout=LONG)
        first_map = time.perf_counter() - start
        steps = page.get_by_text(re.compile(r"^Map ready \(")).inner_text()
        print(f"\ntime to first map render (demo pool, 599 rows): {first_map:.1f} s; {steps}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        expect(page.get_by_text("CC BY-SA 3.0")).to_be_visible()
        shot(page, "1-map-demo")

        # 2. Data: upload a small pool, check its counts, save it
        goto(page, "Data")
        shot(page, "2-data-demo")
        page.get_by_role("tab", name="Load a new pool").click()
        page.locator('input[type="file"]').set_input_files(str(_small_pool(server["tmp"])))
        expect(page.get_by_text("Save to the workspace and open it")).to_be_visible(timeout=LONG)
        shot(page, "3-data-upload")
        page.get_by_role("button", name="Save to the workspace and open it").click()
        expect(page.locator('[data-testid="stSidebar"]').get_by_text("dolly_100")).to_be_visible(timeout=LONG)

        # 3. Map of the new pool (the embedder and UMAP are warm: seconds)
        start = time.perf_counter()
        goto(page, "Map")
        expect(page.get_by_text(re.compile("clusters of equal size"))).to_be_visible(timeout=LONG)
        print(f"time to map a second pool (100 rows): {time.perf_counter() - start:.1f} s")
        _hover_shows_text(page)
        _box_select(page)
        expect(page.get_by_text(re.compile(r"^\d+ instructions in the selection$"))).to_be_visible(timeout=LONG)
        shot(page, "4-map-upload-box-selection")

        # 4. Prompt: rendered on a real subset, exact local token count
        goto(page, "Prompt")
        expect(page.get_by_text("Prompt tokens", exact=True)).to_be_visible(timeout=LONG)
        shot(page, "5-prompt")

        # 5. Select: the local-model warning, a 2-subset preview, then the full run (10 subsets of 10)
        goto(page, "Select")
        expect(page.get_by_text("far too small to judge instructions")).to_be_visible()
        expect(page.get_by_text(re.compile(r"100 rows . 10 subsets of 10"))).to_be_visible(timeout=LONG)
        page.get_by_text("Preview a few subsets before the full run").click()
        click_until(page, page.get_by_role("button", name="Preview", exact=True), page.get_by_text("Subset 1 ·"))
        shot(page, "6-select-preview")
        page.get_by_role("button", name="Start the run").click()
        expect(page.get_by_text(re.compile(r"\d+ / 10 subsets answered"))).to_be_visible(timeout=LONG)
        page.reload()  # the run goes on in the server; the page finds it in the workspace
        expect(page.get_by_text(re.compile(r"\d+ / 10 subsets answered"))).to_be_visible(timeout=LONG)
        expect(page.get_by_text(re.compile(r"10 / 10 subsets answered"))).to_be_visible(timeout=RUN)
        expect(page.get_by_text("Subsets", exact=True)).to_be_visible(timeout=LONG)
        shot(page, "7-select-done")

        # 6. Compare: a random draw of the same budget beside the run, in the table and overlaid on the map
        goto(page, "Compare")
        click_until(page, page.get_by_role("button", name="Run Random"),
                    page.get_by_text(re.compile(r"random-\w+: 10 rows selected")), timeout=60_000)
        expect(page.get_by_text(re.compile("coverage: cosine distance from every pool row"))).to_be_visible(timeout=LONG)
        drawn = _compare_map_ids(page)
        shot(page, "8-compare")

        # 7. Review: reject the first pick in the table editor, then accept every pick still pending
        goto(page, "Review")
        _reject_first_row(page)
        metric = page.locator('[data-testid="stMetric"]').filter(has_text="Picked")
        picked = int(metric.locator('[data-testid="stMetricValue"]').inner_text())
        page.locator('[data-testid="stMultiSelect"]').filter(has_text="Status").click()
        page.get_by_role("option", name="pending").click()
        page.keyboard.press("Escape")
        accept = page.get_by_role("button", name=f"Accept {picked - 1} pending (shown)")
        accept.click()
        expect(page.get_by_text(f"{picked - 1} of 10 accepted; ")).to_be_visible(timeout=LONG)
        shot(page, "9-review")

        # 8. Export: download the accepted picks as CSV
        goto(page, "Export")
        expect(page.get_by_text("Preview: the first rows of")).to_be_visible(timeout=LONG)
        shot(page, "10-export")
        with page.expect_download() as info:
            page.get_by_role("button", name=re.compile(r"Download CSV \(\d+ rows\)")).click()
        target = server["tmp"] / info.value.suggested_filename
        info.value.save_as(target)
        assert page.locator("img[src='x']").count() == 0
        browser.close()

    # 9. the downloaded file, row by row, against the workspace; the compare map against the stored runs
    store = Store(server["workspace"])
    runs = store.list_runs().set_index("method")["run_id"]
    assert sorted(runs.index) == ["random", "selectllm"]
    assert store.count_calls() == 12, "10 run calls and the 2 preview calls, which the ledger records too"
    assert store.usage("", kind="preview")["calls"] == 2
    run_id = runs["selectllm"]
    for method, title in (("selectllm", "SelectLLM"), ("random", "Random")):
        assert sorted(drawn[f"{title} (10)"]) == sorted(store.selection(runs[method])["id"])
    picks = store.selection(run_id)
    assert (picks["decision"] == "rejected").sum() == 1 and set(picks["decision"]) == {"accepted", "rejected"}
    expected = picks[picks["decision"] == "accepted"].reset_index(drop=True)
    got = restore_formulas(pd.read_csv(target, encoding="utf-8-sig", keep_default_na=False, dtype=str))
    assert len(got) == len(expected) == len(picks) - 1
    for (_, row), (_, want) in zip(got.iterrows(), expected.iterrows()):
        assert row["id"] == want["id"] and row["instruction"] == want["instruction"]
        assert row["input"] == want["input"] and row["reason"] == want["reason"]
        assert int(row["cluster"]) == want["cluster"] and int(row["subset"]) == want["subset"]
        assert row["run_id"] == run_id and row["category"] == want["category"]
    assert not dialogs, f"pool text ran as script: {dialogs}"
    assert_clean_log(server["log"])
