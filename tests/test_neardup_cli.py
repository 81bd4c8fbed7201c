"""`selectllm load` and `selectllm plan` report near-duplicate groups; load can store one row per group."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from selectllm_core.cli import main
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent


def test_load_reports_groups_and_keeps_one_per_group_and_plan_reports_them(tmp_path: Path) -> None:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(40)
    frame.loc[40] = {**frame.loc[0].to_dict(), "instruction": frame.loc[0, "instruction"] + " Please."}
    path, ws = tmp_path / "pool.jsonl", tmp_path / "ws.sqlite"
    frame.to_json(path, orient="records", lines=True)
    out = CliRunner().invoke(main, ["load", str(path), "--keep-one-per-group", "--workspace", str(ws)])
    assert out.exit_code == 0, out.output
    assert "group 1 (2 rows, cosine to the kept row" in out.output
    assert "one per group: pool" in out.output
    pools = Store(ws).list_pools()
    assert pools["n_rows"].tolist()[0] - pools["n_rows"].tolist()[1] >= 1
    assert "one per near-duplicate group" in pools["name"].iloc[1]
    skipped = CliRunner().invoke(main, ["load", str(path), "--no-near-dups", "--workspace", str(ws)])
    assert "near-duplicate" not in skipped.output
    planned = CliRunner().invoke(main, ["plan", pools["pool_id"].iloc[0], "--budget", "4", "--workspace", str(ws)])
    assert planned.exit_code == 0, planned.output
    assert "group 1 (2 rows" in planned.output and "LLM calls:" in planned.output
