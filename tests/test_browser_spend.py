"""The money controls in a real browser: the Prompt page's estimate against `selectllm plan`, the Select page's
confirmation above a threshold, the live cost, Stop and Resume, and the sidebar's workspace switcher.

The model is a fake OpenAI-compatible server that answers slowly and bills every request by its tokens, so a
stopped run can be told from a finished one and the page's money can be checked against the server's bill.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, LONG, REPO, assert_clean_log, goto, idle, shot, streamlit_server
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer

from selectllm_core.cli import main
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

MODEL, PRICE = "paid-model", (3.0, 15.0)
ROWS = 400  # the default budget is a tenth of the pool: about 40 subsets of 10, one pick each


@pytest.fixture
def billing() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(price_per_mtok=PRICE, lifetime=900.0, max_requests=200,
                          responder=lambda body, index: {"sleep": 2.0}) as server:
        yield server


def seed(workspace: Path, rows: int = ROWS) -> int:
    """A workspace holding real demo rows and a price for the paid model."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(rows)
    store = Store(workspace)
    store.save_pool(load_pool(frame, name=f"dolly {rows}"))
    store.set_price(MODEL, *PRICE)
    kept = int(store.list_pools()["n_rows"].iloc[-1])
    store.close()
    return kept


def fill(page, label: str, value: str) -> None:  # noqa: ANN001
    box = page.locator(f'input[aria-label="{label}"]')
    box.fill(value)
    box.press("Enter")
    idle(page)


def metric(page, label: str) -> str:  # noqa: ANN001
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def open_on_paid_model(browser, server: dict, billing: FakeOpenAIServer):  # noqa: ANN001, ANN201
    """A page on the studio whose backend is the billing server's paid model (set on the Select page)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(LONG)
    page.goto(server["url"])
    page.get_by_role("heading", name="Map", exact=True).wait_for()
    idle(page)
    goto(page, "Select")
    page.get_by_text("OpenAI-compatible server", exact=True).click()
    idle(page)
    fill(page, "Base URL", billing.base_url)
    fill(page, "Model", MODEL)
    return page


def press_stop(page, stop) -> None:  # noqa: ANN001
    """Press Stop until the page takes it: a click that lands while the live panel redraws itself can be lost."""
    for _attempt in range(3):
        stop.click()
        try:
            page.get_by_text(re.compile("Stopping: waiting|Stopped on request")).first.wait_for(timeout=15_000)
            return
        except playwright.TimeoutError:
            continue


@pytest.mark.timeout(2400)
def test_estimate_confirmation_live_cost_stop_resume_and_workspace_switch(tmp_path: Path,
                                                                           billing: FakeOpenAIServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    budget = seed(tmp_path / "ws.sqlite") // 10
    seed(tmp_path / "other.sqlite", rows=40)
    with streamlit_server(tmp_path) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = open_on_paid_model(browser, server, billing)  # 1. the paid model, chosen on the Select page
        # 2. the Prompt page's numbers are the numbers `selectllm plan` prints
        goto(page, "Prompt")
        page.get_by_text("workspace price table").first.wait_for(timeout=3 * LONG)  # the map is built first
        calls, cost = metric(page, "LLM calls to send"), metric(page, "Cost (estimate)")
        subsets = int(calls)
        shot(page, "spend-prompt-estimate")
        planned = CliRunner().invoke(main, ["plan", Store(server["workspace"]).list_pools()["pool_id"].iloc[0],
                                            "--budget", str(budget), "--backend", "openai", "--model", MODEL, "--base-url",
                                            billing.base_url, "--workspace", str(server["workspace"])])
        assert planned.exit_code == 0, planned.output
        assert f"LLM calls: {calls} (0 answered by the response cache, {calls} to send" in planned.output
        assert f"cost: {cost} estimated" in planned.output, (cost, planned.output)
        assert len(billing.requests) == 0, "an estimate sent a request"
        # 3. a threshold below the estimate: the run asks first
        page.locator('[data-testid="stSidebar"]').get_by_text("Spending").click()
        fill(page, "Ask before runs estimated above ($)", "0")
        goto(page, "Select")
        start = page.get_by_role("button", name="Start the run")
        page.get_by_text("above your confirmation threshold").wait_for()
        expect(start).to_be_disabled()
        shot(page, "spend-select-confirm")
        page.get_by_text(re.compile(r"Yes, spend up to \$")).click()
        idle(page)
        expect(start).to_be_enabled()
        start.click()
        # 4. live cost while it runs, then Stop
        stop = page.get_by_role("button", name="Stop the run", exact=True)
        stop.wait_for()
        page.get_by_text(re.compile(r"LLM calls sent .* spent \$[0-9.]+ of about \$")).wait_for()
        shot(page, "spend-select-running")
        stopped = page.get_by_text(re.compile(rf"Stopped on request: \d+ of {subsets} subsets are done"))
        press_stop(page, stop)
        stopped.wait_for(timeout=LONG)
        sent_at_stop = len(billing.requests)
        assert 1 <= sent_at_stop < subsets, f"{sent_at_stop} requests: the run was not stopped mid-way"
        shot(page, "spend-select-stopped")
        store = Store(server["workspace"])
        run_id = store.list_runs()["run_id"].iloc[-1]
        assert store.get_run(run_id)["status"] == "interrupted"
        assert len(store.done_subsets(run_id)) == sent_at_stop, "an answer that arrived after Stop was lost"
        # 5. Resume finishes it, asking nothing twice; the page's spend is the server's bill
        page.get_by_role("button", name="Resume this run", exact=True).click()
        page.get_by_text(re.compile("is complete: review its picks")).wait_for(timeout=LONG)
        assert len(billing.requests) == subsets
        assert store.usage(run_id)["cost"] == pytest.approx(billing.billed, rel=1e-6)
        page.get_by_text(f"spent ${billing.billed:,.4f}").first.wait_for()
        # 6. the sidebar opens another workspace and shows its path
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Open or create another workspace").click()
        fill(page, "Workspace file", str(tmp_path / "other.sqlite"))
        sidebar.get_by_text(str((tmp_path / "other.sqlite").resolve())).wait_for()
        sidebar.get_by_text("40 rows").wait_for()
        shot(page, "spend-sidebar-workspace")
        browser.close()
        assert_clean_log(server["log"])


@pytest.mark.timeout(1800)
def test_a_method_run_on_the_compare_page_stops_and_says_how_much_was_done(tmp_path: Path,
                                                                             billing: FakeOpenAIServer) -> None:
    from playwright.sync_api import sync_playwright

    seed(tmp_path / "ws.sqlite", rows=200)
    with streamlit_server(tmp_path) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = open_on_paid_model(browser, server, billing)
        goto(page, "Compare")
        page.get_by_text("Method", exact=True).first.wait_for()
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").first.click()
        page.get_by_role("option").filter(has_text="AlpaGasus").first.click()
        idle(page)
        page.get_by_role("button", name=re.compile("^Run AlpaGasus")).click()
        stop = page.get_by_role("button", name="Stop the run", exact=True)
        stop.wait_for()
        page.wait_for_timeout(3000)
        press_stop(page, stop)
        page.get_by_text(re.compile(r"Stopped on request: \d+ of \d+ batches are done")).wait_for(timeout=LONG)
        shot(page, "spend-compare-stopped")
        store = Store(server["workspace"])
        run = store.list_runs().iloc[-1]
        assert run["method"] == "alpagasus" and store.get_run(run["run_id"])["status"] == "interrupted"
        sent = len(billing.requests)
        page.wait_for_timeout(5000)
        assert len(billing.requests) == sent, "calls went on after the run stopped"
        assert sent < 2 * 200, "the whole pool was rated: Stop did nothing"
        browser.close()
        assert_clean_log(server["log"])
