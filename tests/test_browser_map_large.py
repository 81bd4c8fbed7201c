"""The Map page above `map_density.ALL_POINTS_MAX` rows, in a real browser: a density of every row, a sample of
points, and a box that selects every row inside it, drawn or not.

Seeded as `tests/test_browser_map_scale.py` seeds its 100,000 rows (its docstring says what and why), with
160,000 rows instead: the smallest round pool above the threshold (150,000) whose split and first map keep the
test near three minutes on this 2-core machine. The threshold and the sample (50,000) are the app's defaults;
nothing is lowered for the test.

What it checks, against the seeded layout rather than against what the page says:

1. the first render draws the density trace (its cells count all 160,000 rows) and exactly 50,000 points in one
   WebGL trace, a share of every one of the 160 clusters, whose hovers name the cluster with its 1,000 rows; the
   caption above the map says 160,000 rows and the 50,000 sampled;
2. hovering a sampled point (the one furthest from any other) shows its label over the density (the 100k test
   checks that labels show pool text as text);
3. a lasso (a convex hexagon), then a box, each list every seeded row inside plotly's shape (counted here from the
   seeded coordinates, by half-planes for the lasso), more than twice the sampled points plotly reports inside it
   (a page that counted only the points drawn fails), and a caption under the map says both counts;
4. "More like this" for that selection highlights it (20,000 of its rows drawn, the legend says how many) and the
   10 rows nearest it; a search draws its matches on top and its caption counts them.

It prints the time from opening the page to the map drawn and from releasing the box to the list shown (no timed
assertion). Screenshots: test-artifacts/screenshots/map-large*.png.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LONG,
    assert_clean_log,
    hover_until,
    idle,
    shot,
    streamlit_server,
)
from test_browser_map_scale import _box_select, _inside, _seed

from selectllm_core.studio.map_density import ALL_POINTS_MAX, HIGHLIGHT_MAX, SAMPLE_POINTS
from selectllm_core.studio.search import PoolIndex

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

ROWS, CLUSTERS, WORD = 160_000, 160, "haiku"
# what the plot holds once drawn: rows counted by the density, points drawn, the cluster names their hovers give
DRAWN = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd._fullData || !gd.querySelector('canvas')) return null;
    const heat = gd._fullData.filter(t => t.type === 'heatmap');
    let cells = 0;
    for (const t of heat) for (const row of t.customdata) for (const v of row) cells += v;
    const points = gd._fullData.filter(t => t.type === 'scattergl' && t.customdata);
    const groups = new Set(points.flatMap(t => Array.from(t.customdata).map(d => d[1])));
    return {heatmaps: heat.length, cells, traces: points.length, points: points.reduce((s, t) => s + t.x.length, 0),
            groups: Array.from(groups)};
}"""
# every drawn point: its row id and where it is on the page, in pixels
PIXELS = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, out = [];
    for (const t of gd._fullData) {
        if (t.type !== 'scattergl' || !t.customdata) continue;
        for (let i = 0; i < t.x.length; i++)
            out.push([t.customdata[i][0], box.left + xa.l2p(t.x[i]), box.top + ya.l2p(t.y[i])]);
    }
    return out;
}"""
LISTEN_LASSO = """() => {
    window.__lasso = null;
    document.querySelector('.js-plotly-plot').on('plotly_selected', (ev) => {
        if (!ev || !ev.lassoPoints) return;
        const {xaxis, yaxis} = document.querySelector('.js-plotly-plot')._fullLayout;
        window.__lasso = {x: ev.lassoPoints.x, y: ev.lassoPoints.y, n: ev.points.length, px: [xaxis._m, yaxis._m]};
    });
}"""
TRACE_IDS = """(name) => {
    const t = (document.querySelector('.js-plotly-plot')?._fullData ?? []).find(t => t.name === name && t.customdata);
    return t ? Array.from(t.customdata).map(d => d[0]) : null;
}"""


def _drawn(page) -> dict:  # noqa: ANN001
    """The plot's density and points, once the map of the large pool is drawn."""
    page.wait_for_function(f"() => {{ const d = ({DRAWN})(); return d && d.heatmaps === 1 && "
                           f"d.points >= {SAMPLE_POINTS}; }}", timeout=LONG)
    return page.evaluate(DRAWN)


def _trace_ids(page, name: str) -> list[str]:  # noqa: ANN001
    page.wait_for_function(f"(name) => ({TRACE_IDS})(name) !== null", arg=name, timeout=LONG)
    return page.evaluate(TRACE_IDS, name)


def _lasso(page) -> dict:  # noqa: ANN001
    """Lasso a hexagon left of the middle of the plot (clear of the box that follows: a drag that starts inside a
    selection moves it), corner to corner on whole pixels (so plotly's polygon is the hexagon itself); returns
    plotly's polygon and its count of selected points."""
    plot = page.locator(".js-plotly-plot").first
    page.evaluate(LISTEN_LASSO)
    plot.hover()
    plot.locator('[data-title="Lasso Select"]').click()
    box = plot.locator(".nsewdrag").first.bounding_box()
    corners = [(round(box["x"] + box["width"] * (0.22 + 0.12 * np.cos(a))),
                round(box["y"] + box["height"] * (0.5 + 0.3 * np.sin(a)))) for a in np.linspace(0, 2 * np.pi, 7)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for corner in corners[1:]:
        page.mouse.move(*corner)
    page.mouse.up()
    page.wait_for_function("() => window.__lasso !== null", timeout=30_000)
    return page.evaluate("() => window.__lasso")


def _in_convex(coords: np.ndarray, lasso: dict) -> tuple[int, int]:
    """Seeded rows inside plotly's convex lasso, and those within 0.01 px of its edge: every edge's half-plane,
    in pixels (a test independent of the app's even-odd one)."""
    scale = np.abs(np.array(lasso["px"]))
    pts, poly = coords * scale, np.column_stack([lasso["x"], lasso["y"]]) * scale
    edges = np.roll(poly, -1, axis=0) - poly
    poly, edges = poly[np.linalg.norm(edges, axis=1) > 1e-6], edges[np.linalg.norm(edges, axis=1) > 1e-6]
    area = np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    cross = edges[:, 0] * (pts[:, None, 1] - poly[:, 1]) - edges[:, 1] * (pts[:, None, 0] - poly[:, 0])
    side = np.sign(area) * cross / np.linalg.norm(edges, axis=1)  # px inside each edge's line
    strict = int((side > 0.01).all(axis=1).sum())
    return strict, int((side > -0.01).all(axis=1).sum()) - strict


def _hover_select_and_highlight(page, frame: pd.DataFrame, coords: np.ndarray) -> None:  # noqa: ANN001
    """Steps 2-5 of the docstring on the drawn large map."""
    from playwright.sync_api import expect
    from scipy.spatial import cKDTree

    # 2. hover: the label of the drawn point furthest from any other shows over the density
    points = page.evaluate(PIXELS)
    xy = np.array([p[1:] for p in points])
    lonely = int(cKDTree(xy).query(xy, k=2)[0][:, 1].argmax())
    label = frame.set_index("id").loc[points[lonely][0], "instruction"]
    row_id = points[lonely][0]
    hover_until(page, lambda: next({"x": x, "y": y} for r, x, y in page.evaluate(PIXELS) if r == row_id),
                label[:30].strip())
    shot(page, "map-large")

    # 3. a lasso, then a box: every seeded row inside is listed, not only the sampled points plotly selected
    idle(page)
    lasso = _lasso(page)
    heading = page.get_by_text(re.compile(r"^[\d,]+ instructions in the selection$"))
    expect(heading).to_be_visible(timeout=LONG)
    listed = int(heading.inner_text().split()[0].replace(",", ""))
    within, edge = _in_convex(coords, lasso)
    print(f"lasso ({len(lasso['x'])} corners): {listed:,} rows listed; seeded rows in plotly's lasso: {within:,} "
          f"(+ {edge} within 0.01 px of its edge); sampled points plotly selected: {lasso['n']:,}")
    assert within <= listed <= within + edge and edge < listed / 500  # copies crowd round their source: a band 0.02 px wide holds dozens
    assert listed > 2 * lasso["n"] > 0, "the lasso lists the rows it holds, drawn or not"
    expect(page.get_by_text(f"The selection holds {listed:,} rows of the pool; {lasso['n']:,} of them are drawn "
                            "as points")).to_be_visible()
    shot(page, "map-large-lasso")
    idle(page)
    selected = _box_select(page)
    start = time.perf_counter()
    expect(heading).not_to_have_text(f"{listed:,} instructions in the selection", timeout=LONG)
    expect(heading).to_be_visible(timeout=LONG)
    print(f"box released to the selection listed: {time.perf_counter() - start:.1f} s")
    listed = int(heading.inner_text().split()[0].replace(",", ""))
    within, edge = _inside(coords, selected)
    print(f"box selection: {listed:,} rows listed; seeded rows in plotly's box: {within:,} (+ {edge} within "
          f"0.01 px of its edge); sampled points plotly selected: {selected['n']:,}")
    assert within <= listed <= within + edge and edge < 20
    assert listed > 2 * selected["n"] > 0, "the box lists the rows it holds, drawn or not"
    expect(page.get_by_text(f"The selection holds {listed:,} rows of the pool; {selected['n']:,} of them are drawn "
                            "as points")).to_be_visible()
    shot(page, "map-large-selection")

    # 4. more like this: the selection highlighted (20,000 of its rows drawn) and its 10 neighbours
    page.get_by_role("button", name="More like this: the 10 rows nearest the selection").click()
    expect(page.get_by_role("heading", name=f"10 rows most like the {listed:,} you selected")).to_be_visible(
        timeout=LONG)
    assert listed > HIGHLIGHT_MAX
    mine = _trace_ids(page, f"your selection ({listed:,}; {HIGHLIGHT_MAX:,} drawn)")
    assert len(mine) == HIGHLIGHT_MAX and sum(_inside(coords[frame["id"].isin(mine).to_numpy()], selected)) \
        == HIGHLIGHT_MAX, "the rows drawn as the selection lie in the box"
    assert len(_trace_ids(page, "more like the selection (10)")) == 10
    shot(page, "map-large-more-like-this")
    page.get_by_role("button", name="Clear 'more like this'").click()

    # 5. a search: its matches drawn on top, counted in the caption
    hits = PoolIndex(frame).search(WORD)["id"].tolist()
    box = page.get_by_role("textbox", name="Search the pool")
    box.fill(WORD)
    box.press("Enter")
    expect(page.get_by_text(f"{len(hits):,} of {ROWS:,} rows match", exact=False)).to_be_visible(timeout=LONG)
    assert sorted(_trace_ids(page, f"search matches ({len(hits):,})")) == sorted(hits)
    shot(page, "map-large-search")


@pytest.mark.timeout(900)
def test_a_large_pool_is_drawn_as_density_and_sample_and_a_box_selects_every_row(tmp_path: Path,
                                                                                 shared_data: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert ROWS > ALL_POINTS_MAX > SAMPLE_POINTS
    clock = time.perf_counter()
    frame, coords = _seed(shared_data, tmp_path, ROWS)
    print(f"\nseeded {ROWS:,} rows in {time.perf_counter() - clock:.0f} s")
    dialogs: list[str] = []
    with streamlit_server(tmp_path) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # 1. first render: the density of every row, 50,000 points from every cluster, a caption that says so
        start = time.perf_counter()
        page.goto(server["url"])
        drawn = _drawn(page)
        first = time.perf_counter() - start
        steps = page.get_by_text(re.compile(r"^Map ready \(")).inner_text()
        print(f"time to first render of the large map ({ROWS:,} rows, caches seeded): {first:.1f} s; {steps}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        assert drawn["cells"] == ROWS, "the density counts every row"
        assert drawn["points"] == SAMPLE_POINTS and drawn["traces"] == 1, "the sample, in one WebGL trace"
        assert len(drawn["groups"]) == CLUSTERS, "every cluster drawn"
        assert all(g.endswith(f"({ROWS // CLUSTERS:,})") for g in drawn["groups"]), "hovers count all its rows"
        caption = page.get_by_text(re.compile(f"^{ROWS:,} rows are too many to draw one by one"))
        expect(caption).to_be_visible(timeout=LONG)
        text = caption.inner_text()
        assert f"{SAMPLE_POINTS:,} sampled rows are drawn" in text and "selects every row inside it" in text
        assert f"each of the {CLUSTERS} clusters" in text

        _hover_select_and_highlight(page, frame, coords)
        browser.close()
        assert not dialogs, f"pool text ran as script: {dialogs}"
        assert_clean_log(server["log"])
    print(f"test wall time {time.perf_counter() - clock:.0f} s")
