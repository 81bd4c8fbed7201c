"""Review and export at 10,000 picks: one edit on the Review page, and the export, before and after paging.

    SELECTLLM_DATA_DIR=<shared data folder> python benchmarks/bench_review.py [--picks 10000] [--edits 5]
        [--export-picks 2500,10000] [--baseline REF] [--sections edit,export]

The workspace: a pool of every row of `alpaca_alpagasus_random_9k` and `dolly_alpagasus_3k` (instruction, input and
the dataset's output as an extra column; 12,210 distinct rows), and a finished SelectLLM run whose picks are the
first `--picks` pool rows (a fake run: ranks, reasons and subsets written straight into the workspace, no model).
The embedding cache holds TF-IDF + SVD vectors of the real texts and the projection cache their first two
components, so the Review page's map builds without MiniLM or UMAP (minutes for 12,000 rows here); its clustering
runs as in production.

edit: each Review page (this tree's, and `--baseline`'s `app_pages/review.py` in a copy of this tree's app) is
served by its own `streamlit run` over its own copy of the workspace and opened in headless Chromium; each edit
rejects a pending pick of a visible row with the keyboard, as a curator does. Per edit (median): seconds from the
Enter that commits it to the workspace file holding it, and to the page being idle again (no script or fragment run
under way, two animation frames drawn); CPU seconds of the server process and of the browser's processes over that
time. The baseline's table holds all the picks; this tree's holds a page of 100, in a fragment.

export: `export_run` of every pick, this tree's writers against `--baseline`'s `selectllm_core/runs/export.py`, each
format and size in a fresh interpreter: wall seconds (best of 3), the growth of the peak RSS over those 3, the
tracemalloc peak of one whole export and of the write alone (the selection already read; pandas' Arrow-backed text is
outside tracemalloc, so the RSS column is the one to trust for totals), and whether the two files are the same bytes
(XLSX: the same cells with the same types).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import data_dir  # noqa: E402

from selectllm_core.store import Store  # noqa: E402

RUN_ID = "review-10k"
SOURCES = ("alpaca_alpagasus_random_9k.jsonl.gz", "dolly_alpagasus_3k.jsonl.gz")
FORMATS = ("csv", "xlsx", "jsonl", "parquet", "labelstudio")
BASELINE = "7e905b068137c898eb2a30fc3d68c3a1476caa15"  # the last commit with the whole-table page and in-memory writers


# -- the workspace ----------------------------------------------------------------------------------
def real_rows(folder: Path) -> pd.DataFrame:
    """instruction, input and output of every row of SOURCES, in file order."""
    rows = []
    for name in SOURCES:
        with gzip.open(folder / name, "rt", encoding="utf-8") as fh:
            rows += [{k: str(r.get(k) or "") for k in ("instruction", "input", "output")} for r in map(json.loads, fh)]
    return pd.DataFrame(rows)


def seed_workspace(root: Path, folder: Path, *, picks: int) -> dict:
    """Workspace, embedding cache and projection cache under root (see the module docstring)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, text_key
    from selectllm_core.embed.projection import store_projection
    from selectllm_core.pool.load import load_pool

    # 1. the pool and a finished run whose first `picks` rows are its picks
    pool = load_pool(real_rows(folder), name="alpaca + dolly")
    if len(pool.frame) < picks:
        raise SystemExit(f"the pool holds {len(pool.frame):,} rows, fewer than {picks:,} picks")
    store = Store(root / "ws.sqlite")
    store.save_pool(pool)
    ids = pool.frame["id"].tolist()
    params = {"budget": picks, "subset_size": 10, "split": "diverse", "seed": 0, "shuffle": True, "max_tokens": 512,
              "prompt": "default", "domain": "", "embed_model": None, "answer_format": "json"}
    store.create_run(RUN_ID, pool_id=pool.pool_id, method="selectllm", params=params, prompt="(fake run)",
                     backend={"kind": "fake", "model": "bench"})
    store.save_plan(RUN_ID, [(r, i, i % 10, i // 10) for i, r in enumerate(ids)])
    store.save_selection(RUN_ID, [(r, i + 1, None, f"pick {i + 1}: a diverse, clear instruction", i // 10)
                                  for i, r in enumerate(ids[:picks])])
    store.set_run_status(RUN_ID, "complete")
    store.close()
    # 2. vectors and a layout for the map, so it needs neither MiniLM nor UMAP
    svd = TruncatedSVD(64, random_state=0).fit_transform(
        TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english").fit_transform(pool.frame["text"]))
    unit = (svd / np.linalg.norm(svd, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)
    cache = EmbeddingCache(root / "cache")
    cache.put_many(BUNDLED_MODEL, {text_key(t): v for t, v in zip(pool.frame["text"], unit)})
    cache.close()
    store_projection(svd[:, :2] / np.abs(svd[:, :2]).max(), model_id=BUNDLED_MODEL, pool_id=pool.pool_id,
                     cache_root=root / "cache")
    return {"workspace": root / "ws.sqlite", "cache": root / "cache", "ids": ids[:picks]}


# -- edit: one decision on the Review page, in a real browser -------------------------------------------
EDITOR_OPEN = "() => document.activeElement?.matches('#portal input[role=combobox], #portal textarea') ?? false"
SETTLED = '[data-testid="stApp"][data-test-script-state="notRunning"]'
FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def baseline_app(ref: str, into: Path) -> Path:
    """A copy of this tree's app (app.py, app_pages, demo, .streamlit) with `ref`'s Review page in it."""
    for name in ("app.py", "app_pages", "demo", ".streamlit"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, into / name)
    page = subprocess.run(["git", "show", f"{ref}:app_pages/review.py"], cwd=REPO, check=True, capture_output=True)
    (into / "app_pages" / "review.py").write_bytes(page.stdout)
    return into


def serve(app_dir: Path, root: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` in app_dir over root's workspace and cache; returns the process and its URL."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SELECTLLM_WORKSPACE": str(root / "ws.sqlite"), "SELECTLLM_CACHE_DIR": str(root / "cache"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                            cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"streamlit did not start: {(root / 'server.log').read_text()[-2000:]}")


def stored_decision(workspace: Path, row_id: str) -> str | None:
    """The decision the workspace file holds for a pick, read by a connection of our own."""
    import sqlite3

    db = sqlite3.connect(f"file:{workspace}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT decision FROM decisions WHERE run_id = ? AND row_id = ?", (RUN_ID, row_id)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def cpu_seconds(root: int, *, without: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants, less one subtree if given."""
    procs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process has just ended
            continue
        procs[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))

    def tree(pid: int) -> set[int]:
        kids = {pid}
        for child, (parent, _cpu) in procs.items():
            if parent == pid:
                kids |= tree(child)
        return kids
    chosen = tree(root) - (tree(without) if without else set())
    return sum(procs[p][1] for p in chosen if p in procs) / os.sysconf("SC_CLK_TCK")


def quiet(pid: int, *, seconds: int = 4, timeout: float = 900) -> None:
    """Until a process tree has used under 2 % of a core for `seconds`: after its start the studio loads its embedding
    model and compiles UMAP's kernels in a background thread (a minute of CPU here, in bursts), and none of that is
    an edit's work."""
    end, calm = time.monotonic() + timeout, 0
    while time.monotonic() < end and calm < seconds / 2:
        before = cpu_seconds(pid)
        time.sleep(2)
        calm = calm + 1 if cpu_seconds(pid) - before < 0.04 else 0


def settle(page) -> None:  # noqa: ANN001 - a playwright Page
    """Until no script or fragment run is under way, and the browser has drawn what the last one sent."""
    page.wait_for_timeout(200)
    page.locator(SETTLED).wait_for(timeout=600_000)
    page.evaluate(FRAMES)


def edit_once(page, workspace: Path, row: int, row_id: str, server: int) -> tuple[float, ...] | None:  # noqa: ANN001
    """Reject a visible row's pick with the keyboard, as a curator does.

    Returns:
        Seconds from the Enter to saved and to idle, and the CPU seconds the server and the browser spent on it;
        None when the gesture did not take (the caller tries again).
    """
    settle(page)
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.evaluate("e => e.scrollIntoView({block: 'start'})")  # the table's top at the window's: every row in view
    page.wait_for_timeout(200)
    box = grid.bounding_box()
    y = box["y"] + 35 + 35 * row + 17
    page.mouse.click(box["x"] + 500, y)  # a read-only cell first, so the next click selects and does not open
    page.mouse.click(box["x"] + 40, y)
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(EDITOR_OPEN, timeout=10_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: the gesture is tried again
        page.keyboard.press("Escape")
        return None
    page.keyboard.type("rejected")
    page.wait_for_timeout(300)
    cpu = cpu_seconds(server), cpu_seconds(os.getpid(), without=server)
    start = time.perf_counter()
    page.keyboard.press("Enter")
    while stored_decision(workspace, row_id) != "rejected":
        if time.perf_counter() - start > 120:
            page.keyboard.press("Escape")
            return None
        time.sleep(0.01)
    saved = time.perf_counter() - start
    settle(page)
    idle = time.perf_counter() - start
    return saved, idle, cpu_seconds(server) - cpu[0], cpu_seconds(os.getpid(), without=server) - cpu[1]


def time_edits(app_dir: Path, root: Path, ids: list[str], edits: int) -> dict:
    """First render of the Review page, then `edits` edits of its first rows (median seconds)."""
    from playwright.sync_api import sync_playwright

    proc, url = serve(app_dir, root)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            start = time.perf_counter()
            page.goto(url + "/review")
            page.get_by_text("Map ready").wait_for(timeout=600_000)
            settle(page)
            first = time.perf_counter() - start
            quiet(proc.pid, seconds=20)
            rows = page.evaluate("() => document.querySelector('[data-testid=\"stDataFrame\"] table')"
                                 ".getAttribute('aria-rowcount')")
            timings, misses = [], 0
            for row in range(edits):
                for _attempt in range(3):
                    quiet(proc.pid)
                    got = edit_once(page, root / "ws.sqlite", row, ids[row], proc.pid)
                    if got:
                        timings.append(got)
                        break
                    misses += 1
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    median = {k: statistics.median(t[i] for t in timings) for i, k in enumerate(("saved", "idle", "server", "browser"))}
    return {"first": first, "table_rows": int(rows) - 1, **median, "edits": len(timings), "misses": misses}


def bench_edits(folder: Path, *, picks: int, edits: int, baseline: str) -> list[str]:
    """Both Review pages over copies of one seeded workspace; a markdown table."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        for folder_name in ("seed", "old-app"):
            (tmp / folder_name).mkdir()
        seeded = seed_workspace(tmp / "seed", folder, picks=picks)
        old_app = baseline_app(baseline, tmp / "old-app")
        results = {}
        for name, app_dir in (("paged + fragment (this tree)", REPO), (f"whole table ({baseline})", old_app)):
            root = tmp / name.split()[0]
            shutil.copytree(tmp / "seed", root)
            results[name] = time_edits(app_dir, root, seeded["ids"], edits)
    new, old = results.values()
    lines = ["| Review page | rows in the table | first render s | edit → saved s | edit → page idle s | "
             "server CPU s per edit | browser CPU s per edit | edits (gestures retried) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['table_rows']:,} | {r['first']:.1f} | {r['saved']:.2f} | {r['idle']:.2f} | "
                     f"{r['server']:.2f} | {r['browser']:.2f} | {r['edits']} ({r['misses']}) |")
    ratio = {k: old[k] / max(new[k], 0.01) for k in ("first", "saved", "idle", "server", "browser")}
    lines.append(f"| ratio whole / paged | | {ratio['first']:.1f}x | {ratio['saved']:.1f}x | {ratio['idle']:.1f}x | "
                 f"{ratio['server']:.1f}x | {ratio['browser']:.1f}x | |")
    return lines


# -- export: this tree's writers against the baseline's, each in a fresh process --------------------------
EXPORT_CHILD = """
import csv, importlib.util, json, sys, time, tracemalloc
from pathlib import Path
sys.path.insert(0, {repo!r})
import pyarrow, pyarrow.parquet, xlsxwriter  # what the writers import, imported before anything is measured
from selectllm_core.runs.manifest import manifest
from selectllm_core.runs.picks import selection_frame
from selectllm_core.store import Store
if {source!r}:
    spec = importlib.util.spec_from_file_location("baseline_export", {source!r})
    export = importlib.util.module_from_spec(spec)
    sys.modules["baseline_export"] = export
    spec.loader.exec_module(export)
else:
    from selectllm_core.runs import export
def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
store, out, run, fmt = Store({workspace!r}), Path({out!r}), {run!r}, {fmt!r}
facts = manifest(store, run, which="all")  # warms SQLite's page cache and pandas as well
if {mode!r} == "write":  # the selection read first: only the writing is measured
    frame = selection_frame(store, run, which="all")
    step = lambda: export.write_export(frame, out=out, fmt=fmt, run_id=run, manifest=facts)
else:
    step = lambda: export.export_run(store, run, out, fmt=fmt, which="all", record=False)
rss = kib("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the RSS now
walls = []
for _ in range(3):
    clock = time.perf_counter()
    step()
    walls.append(time.perf_counter() - clock)
grown = kib("VmHWM") - rss
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
step()
print(json.dumps({{"wall": min(walls), "rss": grown * 1024, "traced": tracemalloc.get_traced_memory()[1] - base}}))
"""


def export_child(workspace: Path, out: Path, fmt: str, source: str, mode: str) -> dict:
    """One export in a fresh interpreter (source: a baseline export.py, or "" for this tree's; mode: "whole" or
    "write", the write alone after the selection is read)."""
    code = EXPORT_CHILD.format(repo=str(REPO), source=source, workspace=str(workspace), out=str(out), run=RUN_ID,
                               fmt=fmt, mode=mode)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_file(a: Path, b: Path, fmt: str) -> str:
    """Whether two exports hold the same bytes; for XLSX, else whether they hold the same cells and types."""
    if a.read_bytes() == b.read_bytes():
        return "same bytes"
    if fmt != "xlsx":
        return "DIFFERENT"
    import openpyxl

    def cells(path: Path) -> list:
        sheet = openpyxl.load_workbook(path, read_only=True).active
        return [[(c.data_type, c.value) for c in row] for row in sheet.iter_rows()]
    return "same cells and types" if cells(a) == cells(b) else "DIFFERENT"


def data_file(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if not p.name.endswith((".manifest.json", ".labelstudio.xml")))


def bench_export(folder: Path, *, sizes: list[int], baseline: str) -> list[str]:
    """export_run of every pick, per format and size, this tree's writers against the baseline's; a markdown table."""
    lines = ["| format | picks | writer | wall s, whole export | RSS growth MB, whole export | RSS growth MB, write "
             "alone | traced peak MB, whole export | traced peak MB, write alone | file MB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "baseline_export.py"
        source.write_bytes(subprocess.run(["git", "show", f"{baseline}:selectllm_core/runs/export.py"], cwd=REPO,
                                          check=True, capture_output=True).stdout)
        for picks in sizes:
            (tmp / f"seed-{picks}").mkdir()
            seed_workspace(tmp / f"seed-{picks}", folder, picks=picks)
        for fmt in FORMATS:
            for picks in sizes:
                got, files = {}, []
                for i, (name, src) in enumerate({"batched": "", f"in memory ({baseline[:7]})": str(source)}.items()):
                    out, workspace = tmp / f"{fmt}-{picks}-{i}", tmp / f"seed-{picks}" / "ws.sqlite"
                    got[name] = {mode: export_child(workspace, out, fmt, src, mode) for mode in ("whole", "write")}
                    files.append(data_file(out))
                verdict = same_file(*files, fmt)
                for i, (name, r) in enumerate(got.items()):
                    said = f"{files[i].stat().st_size / 1e6:.1f}" + (f", {verdict}" if i == 0 else "")
                    lines.append(f"| {fmt} | {picks:,} | {name} | {r['whole']['wall']:.2f} | "
                                 f"{r['whole']['rss'] / 1e6:.1f} | {r['write']['rss'] / 1e6:.1f} | "
                                 f"{r['whole']['traced'] / 1e6:.1f} | {r['write']['traced'] / 1e6:.1f} | {said} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="the shared instruction-data folder (default: $SELECTLLM_DATA_DIR)")
    parser.add_argument("--picks", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=5, help="edits timed on each Review page")
    parser.add_argument("--baseline", default=BASELINE, help="the git ref of the whole-table page and writers")
    parser.add_argument("--sections", default="edit,export")
    parser.add_argument("--export-picks", default="2500,10000", help="selection sizes the export section writes")
    args = parser.parse_args()
    folder, sections = data_dir(args.data), args.sections.split(",")
    print(f"{args.picks:,} picks; baseline {args.baseline}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    if "edit" in sections:
        print("\n".join(bench_edits(folder, picks=args.picks, edits=args.edits, baseline=args.baseline)) + "\n")
    if "export" in sections:
        sizes = [int(n) for n in args.export_picks.split(",")]
        print("\n".join(bench_export(folder, sizes=sizes, baseline=args.baseline)) + "\n")
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
