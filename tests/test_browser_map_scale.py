"""The Map page with 100,000 points in a real browser: time to first render, hover and box selection at scale.

Seeded before the server starts (and why):

- the workspace holds one pool of 100,000 rows: the first 3,000 rows of the public Alpaca sample
  (`alpaca_alpagasus_random_9k`) repeated in order, copies after the first ending in " (copy c)" so that every row
  is distinct (a pool keeps one row per text). Row 3 is replaced by HTML that must show as text.
- the embedding cache holds one vector per row under the bundled model's id. They are not MiniLM vectors (MiniLM
  needs minutes for 3,000 texts on this machine) but TF-IDF + 64-d SVD vectors of the 3,000 real texts, unit length,
  each copy jittered (sigma 0.02) so that K-means sees 100,000 distinct points.
- the projection cache holds the layout under the app's default UMAP key: the 3,000 real rows laid out by the app's
  own `compute_projection` (UMAP, about 25 s here), each copy at its source's point plus 2-D jitter. A UMAP fit on
  100,000 points takes several minutes.

Everything else runs as in production: the server loads the pool, reads the vectors from the cache, splits the pool
into 100 equal clusters, labels them and sends every point to Chromium, which draws them with WebGL. The test
prints the time from opening the page to the plot holding all 100,000 points (no timed assertion), checks that
100 clusters get numbers on the map instead of a legend, hovers the hostile row's point, and box-selects a region:
the count the page lists must equal the count of seeded points inside the box plotly reports (a point within
0.01 px of the box's edge may fall either way: plotly tests points in float32 pixels). Screenshots:
test-artifacts/screenshots/map-100k*.png.
"""

from __future__ import annotations

import gzip
import json
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

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

ROWS, BASE = 100_000, 3_000
HOSTILE = "<img src=x onerror=alert(1)> What does this HTML tag do?"
ALL_POINTS = """(n) => {
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd._fullData || !gd.querySelector('canvas')) return false;
    return gd._fullData.reduce((sum, t) => sum + (t.x ? t.x.length : 0), 0) === n;
}"""
# the hostile row's copy whose point lies furthest from any other point, in page pixels (so hover finds it)
LONELY_SPOT = """(ids) => {
    const gd = document.querySelector('.js-plotly-plot');
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, px = [], mine = [];
    for (const t of gd._fullData) for (let i = 0; i < t.x.length; i++) {
        px.push([xa.l2p(t.x[i]), ya.l2p(t.y[i])]);
        if (ids.includes(t.customdata[i][0])) mine.push(px.length - 1);
    }
    let best = null;
    for (const j of mine) {
        let near = Infinity;
        for (let i = 0; i < px.length; i++) if (i !== j)
            near = Math.min(near, Math.hypot(px[i][0] - px[j][0], px[i][1] - px[j][1]));
        if (!best || near > best.near) best = {near, x: box.left + px[j][0], y: box.top + px[j][1]};
    }
    return best;
}"""
LISTEN = """() => {
    window.__selected = null;
    document.querySelector('.js-plotly-plot').on('plotly_selected', (ev) => {
        if (!ev || !ev.range) return;
        const {xaxis, yaxis} = document.querySelector('.js-plotly-plot')._fullLayout;
        window.__selected = {x: ev.range.x, y: ev.range.y, n: ev.points.length, px: [xaxis._m, yaxis._m]};
    });
}"""


def _base_rows(shared_data: Path) -> pd.DataFrame:
    with gzip.open(shared_data / "alpaca_alpagasus_random_9k.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(BASE), handle)]
    frame = pd.DataFrame(rows)[["instruction", "input"]]
    frame.loc[3, ["instruction", "input"]] = [HOSTILE, ""]
    return frame


def _seed(shared_data: Path, tmp: Path, rows: int = ROWS) -> tuple[pd.DataFrame, np.ndarray]:
    """Workspace, embedding cache and projection cache as the docstring says, for a pool of `rows` rows (the
    large-map test seeds more); returns the pool frame and coords."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, text_key
    from selectllm_core.embed.projection import compute_projection, store_projection
    from selectllm_core.pool.load import load_pool
    from selectllm_core.store import Store

    base = _base_rows(shared_data)
    copy = np.arange(rows) // BASE
    source = np.arange(rows) % BASE
    frame = pd.DataFrame({"instruction": [base["instruction"][s] + (f" (copy {c})" if c else "")
                                          for s, c in zip(source, copy)],
                          "input": base["input"].to_numpy()[source]})
    pool = load_pool(frame, name=f"alpaca {rows // 1000}k")
    assert len(pool.frame) == rows
    Store(tmp / "ws.sqlite").save_pool(pool)

    texts = (base["instruction"] + " " + base["input"]).tolist()
    svd = TruncatedSVD(64, random_state=0).fit_transform(
        TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english").fit_transform(texts))
    unit = (svd / np.linalg.norm(svd, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)
    rng = np.random.default_rng(0)
    vectors = unit[source] + 0.02 * rng.standard_normal((rows, unit.shape[1]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cache = EmbeddingCache(tmp / "cache")
    cache.put_many(BUNDLED_MODEL, {text_key(t): v for t, v in zip(pool.frame["text"], vectors)})
    cache.close()

    layout = compute_projection(unit, model_id="tfidf-svd", pool_id="alpaca-3k", cache_root=tmp / "scratch")
    coords = layout[source] + 0.05 * rng.standard_normal((rows, 2))
    coords = store_projection(coords, model_id=BUNDLED_MODEL, pool_id=pool.pool_id, cache_root=tmp / "cache")
    return pool.frame, coords


def _box_select(page) -> dict:  # noqa: ANN001
    """Box-select a region in the middle of the plot; returns plotly's range and count of selected points."""
    plot = page.locator(".js-plotly-plot").first
    page.evaluate(LISTEN)
    plot.hover()
    plot.locator('[data-title="Box Select"]').click()
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.30)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.60, box["y"] + box["height"] * 0.60, steps=12)
    page.mouse.up()
    page.wait_for_function("() => window.__selected !== null", timeout=30_000)
    return page.evaluate("() => window.__selected")


def _inside(coords: np.ndarray, selected: dict) -> tuple[int, int]:
    """Seeded points inside plotly's box, and those within 0.01 px of its edge (plotly tests in float32 pixels)."""
    lo, hi = np.array([min(selected["x"]), min(selected["y"])]), np.array([max(selected["x"]), max(selected["y"])])
    tol = 0.01 / np.abs(np.array(selected["px"]))
    strict = ((coords >= lo + tol) & (coords <= hi - tol)).all(axis=1).sum()
    loose = ((coords >= lo - tol) & (coords <= hi + tol)).all(axis=1).sum()
    return int(strict), int(loose - strict)


@pytest.mark.timeout(900)
def test_map_of_100k_points_renders_hovers_and_selects(tmp_path: Path, shared_data: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    clock = time.perf_counter()
    frame, coords = _seed(shared_data, tmp_path)
    print(f"\nseeded 100,000 rows in {time.perf_counter() - clock:.0f} s")
    dialogs: list[str] = []
    with streamlit_server(tmp_path) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # 1. time to first render: from opening the page to the plot holding every point
        start = time.perf_counter()
        page.goto(server["url"])
        page.wait_for_function(ALL_POINTS, arg=ROWS, timeout=LONG)
        first = time.perf_counter() - start
        steps = page.get_by_text(re.compile(r"^Map ready \(")).inner_text()
        print(f"time to first render of the map (100,000 rows, caches seeded): {first:.1f} s; {steps}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        expect(page.get_by_text(re.compile("clusters of equal size"))).to_be_visible(timeout=LONG)
        expect(page.get_by_text(re.compile("100 clusters are too many for a legend"))).to_be_visible()
        assert page.locator(".js-plotly-plot .legend").count() == 0
        assert page.locator(".js-plotly-plot .annotation").count() == 100

        # 2. hover: the hostile row's label appears, as text
        hostile = frame.loc[frame["instruction"].str.startswith(HOSTILE), "id"].tolist()
        assert len(hostile) == ROWS // BASE + 1
        hover_until(page, lambda: page.evaluate(LONELY_SPOT, hostile), "<img src=x onerror=alert(1)>")
        assert page.locator(".js-plotly-plot .hoverlayer").first.locator("img, image").count() == 0
        shot(page, "map-100k")

        # 3. box selection: the listed count equals the seeded points inside plotly's box
        idle(page)
        selected = _box_select(page)
        start = time.perf_counter()
        heading = page.get_by_text(re.compile(r"^[\d,]+ instructions in the selection$"))
        expect(heading).to_be_visible(timeout=LONG)
        print(f"box released to the selection listed: {time.perf_counter() - start:.1f} s")
        listed = int(heading.inner_text().split()[0].replace(",", ""))
        within, edge = _inside(coords, selected)
        print(f"box selection: {listed:,} rows listed; seeded points in plotly's box: {within:,} "
              f"(+ {edge} within 0.01 px of its edge)")
        assert listed == selected["n"] and within <= listed <= within + edge and edge < 20 and listed > 1_000
        shot(page, "map-100k-selection")
        browser.close()
        assert not dialogs, f"pool text ran as script: {dialogs}"
        assert_clean_log(server["log"])
    print(f"test wall time {time.perf_counter() - clock:.0f} s")
