"""Kill a CLI run mid-way, resume it: same picks as an uninterrupted run, no subset called twice."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectllm_core.store import Store

pytestmark = pytest.mark.slow


def small_pool(shared_data: Path, dest: Path, rows: int = 60) -> Path:
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(rows)]
    dest.write_text("".join(lines), encoding="utf-8")
    return dest


def command(pool: Path, workspace: Path, cache: Path) -> tuple[list[str], dict]:
    # the response cache is off: this test is about resuming from the workspace, not about stored answers
    env = {**os.environ, "SELECTLLM_WORKSPACE": str(workspace), "SELECTLLM_CACHE_DIR": str(cache),
           "SELECTLLM_RESPONSE_CACHE": "off"}
    args = [sys.executable, "-m", "selectllm_core", "run", str(pool), "--budget", "4", "--subset-size", "10",
            "--max-input-chars", "150", "--seed", "5", "--no-export", "--json"]
    return args, env


def finished_subsets(workspace: Path) -> int:
    try:
        with sqlite3.connect(workspace, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM subset_results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_and_resume_gives_the_uninterrupted_picks(tmp_path: Path, shared_data: Path) -> None:
    pool = small_pool(shared_data, tmp_path / "pool.jsonl")
    cache = tmp_path / "cache"
    # uninterrupted reference run
    args, env = command(pool, tmp_path / "ref.sqlite", cache)
    ref = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_out = json.loads(ref.stdout)
    n_subsets = 6
    # interrupted run: SIGKILL once a few subsets are stored
    args, env = command(pool, tmp_path / "ws.sqlite", cache)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while finished_subsets(tmp_path / "ws.sqlite") < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = finished_subsets(tmp_path / "ws.sqlite")
    assert 3 <= done_before < n_subsets, "the run was not killed mid-way"
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = json.loads(resumed.stdout)
    assert out["run_id"] == ref_out["run_id"]
    assert out["stats"]["llm_calls_new"] <= ref_out["stats"]["llm_calls_new"] - done_before
    store, ref_store = Store(tmp_path / "ws.sqlite"), Store(tmp_path / "ref.sqlite")
    assert store.selection(out["run_id"])["id"].tolist() == ref_store.selection(out["run_id"])["id"].tolist()
    calls = store.calls(out["run_id"])
    assert not calls.duplicated(["subset", "attempt"]).any()
    # 6 winners for a budget of 4: a second round; every subset of both rounds was asked once
    rounds = [(r["round"], r["n_subsets"]) for r in store.rounds(out["run_id"])]
    assert rounds == [(r["round"], r["n_subsets"]) for r in ref_store.rounds(out["run_id"])] and rounds[0] == (1, 6)
    assert sorted(calls["subset"].unique()) == list(range(sum(n for _, n in rounds)))
