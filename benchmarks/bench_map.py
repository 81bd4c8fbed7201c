"""The map at scale: the cached 2-D layout, and what the Map page pays per draw at 52k and 100k rows.

    python benchmarks/bench_map.py --data DIR                                   # both sections
    python benchmarks/bench_map.py --data DIR --sections app --rows 52002 100000 --baseline 905b2f1
    python benchmarks/bench_map.py --data DIR --sections browser --rows 100000 --rounds 3

Sections:
- projection: `projection.compute_projection` on a 52,002-row pool, as the app calls it (UMAP, 15 neighbours,
  cosine, random_state 0), into an empty cache folder; then the same call again, which reads the cache. Ratio of
  the two, and the size of the cache file. PCA the same way, for reference. `import umap` is timed on its own.
- browser: how long plotly.js (the copy bundled with plotly.py) takes to draw the 100k-point figure in headless
  Chromium (`--chromium PATH`), with full hover labels, labels cut to 90 characters, and none: `JSON.parse` and
  `Plotly.newPlot` until the next animation frame, the variants interleaved, median of rounds.
- app: every step the Map page runs on a pool of that size, in the app's order: load the pool from the workspace,
  read all its vectors from the embedding cache, split it (diverse, the default budget), label the clusters, then
  per draw `map_view.map_frame`, `map_view.map_figure` and what `st.plotly_chart` does with the figure (its
  validation and `plotly.io.to_json`), with the size of that JSON. With `--baseline REV`, the draw steps run
  with the map module as of git revision REV too (`selectllm_core/studio/map_view.py`, or `ui_logic.py` in
  revisions before the studio package was split), on the same frame, rounds interleaved.
Pools: jittered copies of the real instruction embeddings of `_data.py` (sigma 0.02); row i copies unique real
row i mod m (m = 14,265 distinct (instruction, input) pairs), and copies after the first carry " (copy c)" at the
end of the instruction, so every row is distinct, as load_pool requires.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import SOURCES, _rows, base_embeddings, data_dir, jittered_pool  # noqa: E402
from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, embed_texts, text_key  # noqa: E402
from selectllm_core.embed.projection import ProjectionParams, compute_projection, projection_key  # noqa: E402
from selectllm_core.pool.load import load_pool  # noqa: E402
from selectllm_core.split import make_subsets, plan_budget  # noqa: E402
from selectllm_core.store import Store  # noqa: E402
from selectllm_core.studio import clusters, map_density, map_view, run_view  # noqa: E402

SIGMA = 0.02


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--sections", default="projection,app", help="comma list of: projection, app, browser")
    p.add_argument("--projection-rows", type=int, default=52_002, help="pool size of the projection section")
    p.add_argument("--rows", type=int, nargs="+", default=[52_002, 100_000], help="pool sizes of the app section")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the per-draw steps (medians)")
    p.add_argument("--baseline", default=None, help="git revision whose map module is timed beside the current one")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary of the browser sections")
    p.add_argument("--browser-gib", type=float, default=8.0, help="browser section: stop Chromium above this memory")
    return p.parse_args()


# -- pools ----------------------------------------------------------------------------------------
def real_rows(folder: Path) -> list[tuple[str, str]]:
    """(instruction, input) of every row of _data.SOURCES, in load_texts order (so row i has embedding i)."""
    rows = []
    for name, kind in SOURCES.items():
        for row in _rows(folder / name):
            if kind == "instances":
                inp = str((row.get("instances") or [{}])[0].get("input", "") or "")
            else:
                inp = str(row.get("input", "") or "")
            rows.append((str(row["instruction"]).strip(), inp.strip()))
    return rows


def map_pool(folder: Path, n: int) -> tuple[object, np.ndarray]:
    """A pool of n distinct rows built from the real ones, and one jittered real embedding per row."""
    rows, base = real_rows(folder), base_embeddings(folder)
    first = list(dict.fromkeys(rows))  # exact twins in the sources would collide in the pool
    where = {r: i for i, r in reversed(list(enumerate(rows)))}
    base = base[[where[r] for r in first]]
    m = len(first)
    instruction = [first[i % m][0] + ("" if i < m else f" (copy {i // m})") for i in range(n)]
    frame = pd.DataFrame({"instruction": instruction, "input": [first[i % m][1] for i in range(n)]})
    pool = load_pool(frame, name=f"map bench {n}")
    assert len(pool.frame) == n, f"{n - len(pool.frame)} rows collided"
    return pool, jittered_pool(base, n, sigma=SIGMA, seed=0)


def map_rows(folder: Path, n: int) -> pd.DataFrame:
    """The rows of a pool of n distinct rows built from the real ones (as `map_pool`, without vectors)."""
    first = list(dict.fromkeys(real_rows(folder)))
    m = len(first)
    instruction = [first[i % m][0] + ("" if i < m else f" (copy {i // m})") for i in range(n)]
    frame = pd.DataFrame({"instruction": instruction, "input": [first[i % m][1] for i in range(n)]})
    pool = load_pool(frame, name=f"map bench {n}")
    assert len(pool.frame) == n, f"{n - len(pool.frame)} rows collided"
    return pool.frame


def clustered_layout(n: int, clusters: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster numbers (row i in cluster i mod k) and a 2-D layout of round clusters of varying spread, so the
    density has dense cores and sparse fringes as a UMAP layout has."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n) % clusters
    centres, spread = rng.uniform(-10, 10, size=(clusters, 2)), rng.uniform(0.2, 0.8, size=clusters)
    coords = centres[cluster] + spread[cluster, None] * rng.standard_normal((n, 2))
    return cluster, coords.astype(np.float32)


# -- timing and tables ------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def table(rows: list[dict]) -> str:
    """A markdown table of dicts (same keys)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


BASELINE_MODULES = ("selectllm_core.studio.map_view", "selectllm_core.studio.ui_logic", "selectllm_core.ui_logic")


def baseline_module(rev: str) -> object:
    """The map module (map_frame, map_figure) as of a git revision, with that revision's whole package.

    The package of `rev` is extracted to a temporary folder and imported in place of the current one for the
    moment of the import (its modules import their own siblings), then the current package is put back.
    """
    archive = subprocess.run(["git", "archive", rev, "selectllm_core"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot read {rev}: {archive.stderr.decode().strip()}")
    folder = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    ours = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "selectllm_core"}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        for name in BASELINE_MODULES:  # where the map code lived, newest layout first
            if not (folder / (name.replace(".", "/") + ".py")).is_file():
                continue  # (an editable install's finder would hand back today's module of that name)
            return importlib.import_module(name)
        raise SystemExit(f"{rev} has none of {', '.join(BASELINE_MODULES)}")
    finally:
        sys.path.remove(str(folder))
        for name in [k for k in sys.modules if k.split(".")[0] == "selectllm_core"]:
            del sys.modules[name]
        sys.modules.update(ours)


# -- sections -------------------------------------------------------------------------------------
def projection_section(folder: Path, n: int, work: Path) -> str:
    """First projection vs the cached one (UMAP as the app runs it; PCA for reference)."""
    _, vectors = map_pool(folder, n)
    t_import, _ = timed(lambda: __import__("umap"))
    rows = []
    for method in ("umap", "pca"):
        params, root = ProjectionParams(method=method), work / f"projection-{method}"
        call = lambda p=params, r=root: compute_projection(vectors, model_id=BUNDLED_MODEL, pool_id="bench",  # noqa: E731
                                                           params=p, cache_root=r)
        first, coords = timed(call)
        again = [timed(call)[0] for _ in range(5)]
        file = root / "projections" / f"{projection_key(model_id=BUNDLED_MODEL, pool_id='bench', params=params)}.npy"
        rows.append({"pool": f"{n:,} x {vectors.shape[1]}", "method": method, "first call s": f"{first:.1f}",
                     "cached call s (median of 5)": f"{statistics.median(again):.4f}",
                     "first / cached": f"{first / statistics.median(again):,.0f}x",
                     "cache file KiB": f"{file.stat().st_size / 1024:.0f}", "shape": f"{coords.shape}"})
    return table(rows) + f"\n\n`import umap` before the first call: {t_import:.1f} s (not in the first call's time)."


def app_section(folder: Path, n: int, work: Path, rounds: int, baseline: object | None) -> str:
    """Every step of the Map page at n rows; draw steps for the current map module and the baseline."""
    import plotly.io
    import plotly.tools

    pool, vectors = map_pool(folder, n)
    steps = []
    store = Store(work / f"ws-{n}.sqlite")
    t, saved = timed(lambda: store.save_pool(pool))
    pool_id = saved.pool_id
    steps.append(("save the pool to the workspace (once, Data page)", t))
    t, loaded = timed(lambda: Store(work / f"ws-{n}.sqlite").load_pool(pool_id))
    steps.append(("load the pool from the workspace (once per server)", t))
    texts = loaded.frame["text"].tolist()
    EmbeddingCache(work / f"cache-{n}").put_many(BUNDLED_MODEL, {text_key(s): v for s, v in zip(texts, vectors)})
    t, got = timed(lambda: embed_texts(texts, embedder=_NoModel(), cache=EmbeddingCache(work / f"cache-{n}")).vectors)
    assert np.array_equal(got, vectors)
    steps.append(("read every vector from the embedding cache", t))
    budget = plan_budget(n, run_view.default_budget(n))
    t, plan = timed(lambda: make_subsets(vectors, budget, strategy="diverse", random_state=0))
    steps.append((f"split: equal-size K-means, {plan.n_clusters} clusters", t))
    t, summary = timed(lambda: clusters.cluster_summary(loaded.frame["instruction"].tolist(), plan.cluster_of, vectors))
    steps.append(("label the clusters (cluster_summary)", t))
    names = clusters.short_names(summary)
    coords = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)  # drawing cost does not depend on them
    out = table([{"step": s, "s": f"{t:.2f}"} for s, t in steps])

    versions = {"current": map_view} | ({"baseline": baseline} if baseline is not None else {})
    draws: dict[str, list[dict]] = {v: [] for v in versions}
    for r in range(rounds):
        for name in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
            module = versions[name]
            t1, frame = timed(lambda m=module: m.map_frame(loaded.frame, coords, plan.cluster_of, None))
            t2, fig = timed(lambda m=module, f=frame: m.map_figure(f, color_by="cluster", names=names))
            t3, spec = timed(lambda f=fig: plotly.io.to_json(
                plotly.tools.return_figure_from_figure_or_data(f, validate_figure=True), validate=False))
            draws[name].append({"map_frame": t1, "map_figure": t2, "st.plotly_chart": t3, "MB": len(spec) / 1e6})
    rows = []
    for name, runs in draws.items():
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        total = med["map_frame"] + med["map_figure"] + med["st.plotly_chart"]
        rows.append({"map_view": name, "map_frame s": f"{med['map_frame']:.2f}", "map_figure s": f"{med['map_figure']:.2f}",
                     "figure to JSON s": f"{med['st.plotly_chart']:.2f}", "per draw s": f"{total:.2f}",
                     "JSON MB": f"{med['MB']:.1f}", "_total": total})
    if baseline is not None:
        ref = rows[1]["_total"]
        for row in rows:
            row["per draw / baseline"] = f"{row['_total'] / ref:.2f}"
    for row in rows:
        del row["_total"]
    return out + "\n\nPer draw (every rerun of the page, e.g. after each lasso), median of rounds:\n\n" + table(rows)


BROWSER_DRAW = """async (spec) => {
    const t0 = performance.now();
    const fig = JSON.parse(spec);
    const t1 = performance.now();
    await Plotly.newPlot('plot', fig.data, fig.layout);
    await new Promise((done) => requestAnimationFrame(() => done()));
    const t2 = performance.now();
    Plotly.purge('plot');
    return [t1 - t0, t2 - t1];
}"""


def hover_section(folder: Path, n: int, work: Path, rounds: int, chromium: str) -> str:
    """plotly.js parse and draw time of the map figure in Chromium, by how much hover text it carries."""
    import plotly.io
    from playwright.sync_api import sync_playwright
    from plotly.offline import get_plotlyjs

    rows = map_rows(folder, n)
    coords = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    # as many groups as the diverse split makes at the default budget: one cluster per subset slot
    groups = np.arange(n) % plan_budget(n, run_view.default_budget(n)).subset_size
    frame = map_view.map_frame(rows, coords, groups, None)
    variants = {"full hover labels": frame, "labels cut to 90 characters": frame.assign(
        hover=frame["instruction"].str.slice(0, 90).map(html.escape)), "no hover text": frame.assign(hover="")}
    specs = {k: plotly.io.to_json(map_view.map_figure(f)) for k, f in variants.items()}
    page_file = work / "plotly.html"
    page_file.write_text("<html><body><div id='plot' style='width:1200px;height:560px'></div><script>"
                         + get_plotlyjs() + "</script></body></html>")
    times: dict[str, list] = {k: [] for k in specs}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 700})
        page.goto(page_file.as_uri())
        for r in range(rounds):
            for name in (list(specs) if r % 2 == 0 else list(specs)[::-1]):
                times[name].append(page.evaluate(BROWSER_DRAW, specs[name]))
        browser.close()
    rows = [{"figure": name, "JSON MB": f"{len(specs[name]) / 1e6:.1f}",
             "JSON.parse ms": f"{statistics.median(t[0] for t in runs):.0f}",
             "newPlot + frame ms": f"{statistics.median(t[1] for t in runs):.0f}"} for name, runs in times.items()]
    return table(rows) + f"\n\n{groups.max() + 1} traces (one per cluster), {n:,} points, WebGL."


RENDER = """async (url) => {
    const t0 = performance.now();
    const text = await (await fetch(url)).text();
    const t1 = performance.now();
    const fig = JSON.parse(text);
    const t2 = performance.now();
    await Plotly.newPlot('plot', fig.data, fig.layout);
    await new Promise((done) => requestAnimationFrame(() => done()));
    return [t1 - t0, t2 - t1, performance.now() - t2];
}"""
# the event st.plotly_chart sends the server after a box: every selected point (without its trace) and the box
LISTEN_BOX = """() => {
    const gd = document.getElementById('plot');
    window.__sel = null;
    document.addEventListener('mousedown', () => { window.__down = performance.now(); }, {capture: true, once: true});
    document.addEventListener('mouseup', () => { window.__up = performance.now(); }, {capture: true, once: true});
    gd.on('plotly_selected', (ev) => {
        if (!ev || !ev.range) return;
        const t = performance.now();
        const points = ev.points.map(p => ({curve_number: p.curveNumber, point_number: p.pointNumber,
            point_index: p.pointIndex, x: p.x, y: p.y, customdata: p.customdata}));
        const payload = JSON.stringify({selection: {points, point_indices: points.map(p => p.point_index),
            box: [{xref: 'x', yref: 'y', x: ev.range.x, y: ev.range.y}], lasso: []}});
        window.__sel = {drag: t - window.__down, release: t - window.__up, stringify: performance.now() - t, payload};
    });
    Plotly.relayout(gd, {dragmode: 'select'});
}"""


def _serve(folder: Path) -> tuple[object, str]:
    """A local HTTP server for the figure files (a page cannot fetch file:// URLs); returns it and its URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _figures(rows: pd.DataFrame, coords: np.ndarray, cluster: np.ndarray, work: Path) -> dict[str, dict]:
    """Both renderers' figures of one pool, built and turned into JSON as st.plotly_chart does, on disk."""
    import plotly.io
    import plotly.tools

    def to_json(fig: object) -> str:
        return plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True),
                                 validate=False)

    out = {}
    for name in ("plain", "large"):
        if name == "plain":
            build, fig = timed(lambda: map_view.map_figure(map_view.map_frame(rows, coords, cluster, None)))
        else:
            build, (fig, _) = timed(lambda: map_density.large_map_figure(rows, coords, cluster, None))
        dump, spec = timed(lambda f=fig: to_json(f))
        (work / f"{name}-{len(rows)}.json").write_text(spec)
        out[name] = {"build": build, "json": dump, "MB": len(spec) / 1e6}
        del fig, spec
    return out


def _descendants() -> list[int]:
    """This process's descendants (Linux /proc): Playwright's driver and the browser it started."""
    parent = {}
    for entry in (e for e in os.listdir("/proc") if e.isdigit()):
        try:
            parent[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    mine, grew = {os.getpid()}, True
    while grew:
        new = {pid for pid, up in parent.items() if up in mine} - mine
        mine, grew = mine | new, bool(new)
    return sorted(mine - {os.getpid()})


def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _rss(pid: int) -> int:
    """Resident bytes of a process (0 once it is gone)."""
    line = next((x for x in _proc(pid, "status").splitlines() if x.startswith(b"VmRSS:")), b"VmRSS: 0 kB")
    return int(line.split()[1]) * 1024


class Watchdog:
    """Kills the browser when it holds more than `limit` bytes (a 1M-point selection took 19 GB on a shared
    machine before it was stopped); remembers the peak and when it fired."""

    def __init__(self, limit: float) -> None:
        import threading

        self.limit, self.peak, self.fired, self._stop = limit, 0, None, threading.Event()
        self._start = time.perf_counter()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            pids = _descendants()
            rss = sum(map(_rss, pids))
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.fired = time.perf_counter() - self._start
                for pid in (p for p in pids if b"chromium" in _proc(p, "cmdline")):
                    with contextlib.suppress(OSError):  # gone already
                        os.kill(pid, 9)
                return

    def stop(self) -> None:
        self._stop.set()


def _draw_and_select(page: object, url: str) -> dict:
    """Render a figure in the open page, then drag a box over the middle 20 % x 30 % of the plot."""
    from playwright.sync_api import Error as PlaywrightError

    out: dict = {}
    try:
        fetch, parse, plot = page.evaluate(RENDER, url)
        out |= {"fetch": fetch, "parse": parse, "plot": plot}
        page.evaluate(LISTEN_BOX)
        box = page.locator("#plot .nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.35)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.60, box["y"] + box["height"] * 0.65, steps=12)
        page.mouse.up()
        page.wait_for_function("() => window.__sel !== null", timeout=600_000)
        out |= page.evaluate("() => window.__sel")
        page.evaluate("() => Plotly.purge('plot')")
    except PlaywrightError as exc:
        out["failed"] = str(exc).splitlines()[0][:100]
    return out


def browser_section(folder: Path, sizes: list[int], work: Path, rounds: int, chromium: str, limit_gib: float) -> str:
    """Time to first render and box-selection latency in Chromium: every point vs density + sample."""
    from playwright.sync_api import sync_playwright
    from plotly.offline import get_plotlyjs

    (work / "plot.html").write_text("<html><body><div id='plot' style='width:1200px;height:560px'></div><script>"
                                    + get_plotlyjs() + "</script></body></html>")
    server, url = _serve(work)
    out = []
    for n in sizes:
        rows = map_rows(folder, n)
        cluster, coords = clustered_layout(n, plan_budget(n, run_view.default_budget(n)).subset_size)
        for name, fig in _figures(rows, coords, cluster, work).items():
            runs = []
            with sync_playwright() as p:  # a fresh browser per figure: a crash or a full heap stays there
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1300, "height": 700})
                page.set_default_timeout(600_000)
                page.goto(f"{url}/plot.html")
                guard = Watchdog(limit_gib * 2**30)
                for _ in range(rounds):
                    runs.append(_draw_and_select(page, f"{url}/{name}-{n}.json"))
                    if "failed" in runs[-1]:
                        break
                guard.stop()
                if guard.fired is None:
                    browser.close()
            row = _browser_row(n, name, fig, runs, guard, coords, rows["id"])
            print("  " + " | ".join(str(v) for k, v in row.items() if not k.startswith("_")), flush=True)
            out.append(row)
    server.shutdown()
    _add_ratios(out)
    return table(out)


def _browser_row(n: int, name: str, fig: dict, runs: list[dict], guard: Watchdog, coords: np.ndarray,
                 ids: pd.Series) -> dict:
    """One table row: medians of the rounds, the server's share of a selection timed here on the last event."""
    row = {"rows": f"{n:,}", "renderer": "every point" if name == "plain" else "density + sample",
           "figure build s": f"{fig['build']:.2f}", "figure to JSON s": f"{fig['json']:.2f}",
           "JSON MB": f"{fig['MB']:.1f}", "browser peak GiB": f"{guard.peak / 2**30:.1f}"}
    drawn = [r for r in runs if "plot" in r]
    if not drawn:
        why = (f"browser passed {guard.limit / 2**30:.0f} GiB {guard.fired:.0f} s in, stopped" if guard.fired
               else runs[-1].get("failed", "?"))
        return {**row, "first render s": f"not drawn: {why}", "_first": None}
    med = {k: statistics.median(r[k] for r in drawn) for k in ("fetch", "parse", "plot")}
    first = fig["build"] + fig["json"] + (med["fetch"] + med["parse"] + med["plot"]) / 1000
    row |= {"fetch + parse ms": f"{med['fetch'] + med['parse']:.0f}", "newPlot + frame ms": f"{med['plot']:.0f}",
            "first render s": f"{first:.1f}", "_first": first}
    done = [r for r in runs if "payload" in r]
    if not done:
        why = (f"browser passed {guard.limit / 2**30:.0f} GiB {guard.fired:.0f} s in, stopped" if guard.fired
               else runs[-1].get("failed", "?"))
        return {**row, "box drag ms": f"not finished: {why}"}
    med |= {k: statistics.median(r[k] for r in done) for k in ("drag", "release", "stringify")}
    event = json.loads(done[-1]["payload"])
    pick = (lambda: map_view.selected_ids(event)) if name == "plain" else \
        (lambda: map_density.selected_rows(event, coords, ids))
    to_rows, chosen = timed(pick)
    select = (med["release"] + med["stringify"]) / 1000 + to_rows + fig["json"]
    return {**row, "box drag ms": f"{med['drag']:.0f}", "release → plotly_selected ms": f"{med['release']:.0f}",
            "event MB": f"{len(done[-1]['payload']) / 1e6:.1f}", "event → rows s": f"{to_rows:.2f}",
            "rows selected": f"{len(chosen):,}", "selection s": f"{select:.1f}", "_select": select}


def _add_ratios(rows: list[dict]) -> None:
    """Every point / density + sample, per pool size, for the first render and the selection."""
    for row in rows:
        plain = next((r for r in rows if r["rows"] == row["rows"] and r["renderer"] == "every point"), {})
        for key, col in (("_first", "first render: every point / this"), ("_select", "selection: every point / this")):
            row[col] = f"{plain[key] / row[key]:.1f}x" if plain.get(key) and row.get(key) else "—"
    for row in rows:
        for key in ("_first", "_select"):
            row.pop(key, None)
        for col in ("fetch + parse ms", "newPlot + frame ms", "first render s", "box drag ms",
                    "release → plotly_selected ms", "event MB", "event → rows s", "rows selected", "selection s"):
            row.setdefault(col, "—")


class _NoModel:
    """An embedder that must not be called: every vector is in the cache."""

    model_id = BUNDLED_MODEL

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError(f"{len(texts)} cache misses")


def main() -> None:
    args = parse_args()
    folder = data_dir(args.data)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-map-"))
    work.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} before; "
          f"sigma={SIGMA}, seed=0", flush=True)
    if "projection" in sections:
        print(f"\n## Projection, {args.projection_rows:,} rows\n", flush=True)
        print(projection_section(folder, args.projection_rows, work), flush=True)
    if "hover" in sections:
        n = max(args.rows)
        print(f"\n## Drawing {n:,} points in Chromium ({args.rounds} rounds)\n", flush=True)
        print(hover_section(folder, n, work, args.rounds, args.chromium), flush=True)
    if "browser" in sections:
        print(f"\n## Every point vs density + sample in Chromium, {', '.join(f'{n:,}' for n in args.rows)} rows "
              f"({args.rounds} rounds)\n", flush=True)
        print(browser_section(folder, args.rows, work, args.rounds, args.chromium, args.browser_gib), flush=True)
    if "app" in sections:
        baseline = baseline_module(args.baseline) if args.baseline else None
        for n in args.rows:
            print(f"\n## Map page steps, {n:,} rows (baseline: {args.baseline or 'none'})\n", flush=True)
            print(app_section(folder, n, work, args.rounds, baseline), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} after", flush=True)


if __name__ == "__main__":
    main()
