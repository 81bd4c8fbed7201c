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
import html
import importlib.util
import io
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
from selectllm_core.studio import clusters, map_view, run_view  # noqa: E402

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
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary of the browser section")
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


def browser_section(folder: Path, n: int, work: Path, rounds: int, chromium: str) -> str:
    """plotly.js parse and draw time of the map figure in Chromium, by how much hover text it carries."""
    import plotly.io
    from playwright.sync_api import sync_playwright
    from plotly.offline import get_plotlyjs

    pool, _ = map_pool(folder, n)
    coords = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    # as many groups as the diverse split makes at the default budget: one cluster per subset slot
    groups = np.arange(n) % plan_budget(n, run_view.default_budget(n)).subset_size
    frame = map_view.map_frame(pool.frame, coords, groups, None)
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
    if "browser" in sections:
        n = max(args.rows)
        print(f"\n## Drawing {n:,} points in Chromium ({args.rounds} rounds)\n", flush=True)
        print(browser_section(folder, n, work, args.rounds, args.chromium), flush=True)
    if "app" in sections:
        baseline = baseline_module(args.baseline) if args.baseline else None
        for n in args.rows:
            print(f"\n## Map page steps, {n:,} rows (baseline: {args.baseline or 'none'})\n", flush=True)
            print(app_section(folder, n, work, args.rounds, baseline), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} after", flush=True)


if __name__ == "__main__":
    main()
