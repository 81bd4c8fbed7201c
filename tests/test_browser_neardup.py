"""Near-duplicates in a real browser: a pool with planted near-duplicates, its groups on the Data and Map pages,
and "Keep one per group" making a smaller pool the current one.

The pool is 40 real demo rows (Dolly) and 7 real Dolly rows of the shared data that ask the same thing three
ways or twice (3 groups at cosine ≥ 0.95 with the bundled all-MiniLM-L6-v2; one of the 7 is a demo row too, an
exact duplicate the loader drops). The studio embeds with its real default model, as a curator's would.
Screenshots go to test-artifacts/screenshots/neardup-*.png.

Run it with `pytest -m browser tests/test_browser_neardup.py` (needs `apt-get install chromium`).
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
    shot,
    streamlit_server,
)

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

PLANTED = ["What's the difference between tennis and pickleball?",
           "What is the difference between tennis and pickleball?",
           "What is the smallest state in the United States?", "What is the smallest state in the USA?",
           "Why do babies cry?", "Why do babies cry so much?", "Why babies cry ?"]
KEPT_NAME = "planted (one per near-duplicate group, τ=0.95)"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    with streamlit_server(tmp_path) as info:
        yield info


def planted_pool(shared_data: Path, tmp: Path) -> Path:
    """40 demo rows, then the 7 planted rows, as CSV."""
    demo = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).iloc[100:140]
    real = pd.read_json(shared_data / "dolly_alpagasus_3k.jsonl.gz", lines=True)
    frame = pd.concat([demo, real[real["instruction"].isin(PLANTED)]], ignore_index=True)
    path = tmp / "planted.csv"
    frame[["instruction", "category", "input"]].to_csv(path, index=False)
    return path


def metric(page, label: str):  # noqa: ANN001, ANN201 - a Playwright Locator
    """The value of the metric with this label."""
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stMetricValue"]')


def test_a_curator_sees_the_groups_and_keeps_one_per_group(server: dict, shared_data: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from selectllm_core.store import Store

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})

        # 1. Data: load the pool with planted near-duplicates and save it
        page.goto(f"{server['url']}/data")
        page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=LONG)
        page.get_by_role("tab", name="Load a new pool").click()
        page.locator('input[type="file"]').set_input_files(str(planted_pool(shared_data, server["tmp"])))
        page.get_by_role("button", name="Save to the workspace and open it (46 rows)").click(timeout=LONG)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_text(re.compile(r"^planted · v1"))).to_be_visible(timeout=LONG)

        # 2. not embedded yet: the page says so and embeds on request; then the groups
        page.get_by_role("tab", name="Current pool").click()
        expect(page.get_by_text("This pool is not embedded with all-MiniLM-L6-v2 yet")).to_be_visible(timeout=LONG)
        page.get_by_role("button", name="Embed 46 rows and look for near-duplicates").click()
        expect(metric(page, "Near-duplicate groups")).to_have_text("3", timeout=LONG)
        expect(metric(page, "Rows in groups")).to_have_text("7")
        expect(metric(page, "Rows 'keep one per group' drops")).to_have_text("4")
        expect(page.get_by_text("The 1 exact duplicate (same instruction and input) was dropped")).to_be_visible()
        keep = page.get_by_role("button", name="Keep one per group: save a pool of 42 rows and open it")
        expect(keep).to_be_visible()
        help_text = page.get_by_text(f"Saves a new pool, '{KEPT_NAME}'")
        for _ in range(20):  # its help says what pressing it does, before it is pressed (a rerun hides a tooltip)
            page.mouse.move(0, 0)
            keep.hover()
            if help_text.is_visible() or (page.wait_for_timeout(1500) or help_text.is_visible()):
                break
        expect(help_text).to_be_visible()
        shot(page, "neardup-1-data-groups")

        # 3. Map: the groups in the expander's title and as a colouring
        goto(page, "Map")
        expect(page.get_by_text("Near-duplicates: 3 near-duplicate groups at cosine ≥ 0.95 hold 7 of 46 rows"))\
            .to_be_visible(timeout=LONG)
        page.locator('[data-testid="stButtonGroup"]').get_by_text("Near-duplicates", exact=True).click()
        expect(page.get_by_text(re.compile(r"Blue: the row each group keeps"))).to_be_visible(timeout=LONG)
        expect(page.locator(".legendtext").filter(has_text="near-duplicate of a kept row (4)")).to_be_visible()
        page.get_by_text("Near-duplicates: 3 near-duplicate groups").click()
        expect(page.get_by_text("Similarity threshold τ (cosine)").last).to_be_visible()
        shot(page, "neardup-2-map-groups")

        # 4. Data: keep one per group; the new pool, with 4 rows fewer, is the current one
        goto(page, "Data")
        page.get_by_role("button", name="Keep one per group: save a pool of 42 rows and open it").click()
        expect(sidebar.get_by_text(re.compile(rf"^{re.escape(KEPT_NAME)} · v1"))).to_be_visible(timeout=LONG)
        expect(sidebar.get_by_text(re.compile(r"42 rows"))).to_be_visible()
        idle(page)
        expect(metric(page, "Near-duplicate groups")).to_have_text("0", timeout=LONG)
        expect(metric(page, "Kept")).to_have_text("42")
        expect(page.get_by_text("No near-duplicates at cosine ≥ 0.95 among 42 rows.")).to_be_visible()
        shot(page, "neardup-3-data-kept")
        browser.close()

    store = Store(server["workspace"])
    pools = store.list_pools().set_index("name")
    kept = store.load_pool(str(pools.loc[KEPT_NAME, "pool_id"]))
    source = store.load_pool(str(pools.loc["planted", "pool_id"]))
    assert len(source.frame) == 46 and len(kept.frame) == 42
    gone = set(source.frame["instruction"]) - set(kept.frame["instruction"])
    assert gone == {"What is the smallest state in the United States?",
                    "What is the difference between tennis and pickleball?", "Why do babies cry so much?",
                    "Why babies cry ?"}, "the first of each group in pool order stays"
    assert_clean_log(server["log"])
