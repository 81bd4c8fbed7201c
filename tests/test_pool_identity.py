"""A pool's identity covers its content: same ids with other text never share a pool, rows never mix.

Two CSVs with ids 1..8 and different instructions were once one pool (the id hashed only the row ids): the
second load reported the first pool, and a method run on the second exported the first one's instructions.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_app_pages import open_page, seeded  # noqa: F401 - the seeded workspace fixture

from selectllm_core.cli import main
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent
DOLLY = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True)


def write_pool(path: Path, start: int, *, edit: str | None = None) -> Path:
    """A CSV of 8 real Dolly instructions with ids 1..8 (rows start..start+7 of the demo pool)."""
    frame = DOLLY.iloc[start:start + 8][["instruction", "input", "category"]].reset_index(drop=True)
    frame.insert(0, "id", range(1, 9))
    if edit is not None:
        frame.loc[0, "instruction"] = edit
    frame.to_csv(path, index=False)
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_same_ids_other_text_are_two_pools_through_the_cli(tmp_path: Path) -> None:
    a, b = write_pool(tmp_path / "a.csv", 0), write_pool(tmp_path / "b.csv", 100)
    out_a, out_b = cli("load", str(a)), cli("load", str(b))
    assert "Saved as a new pool" in out_a and "Saved as a new pool" in out_b
    pools = Store().list_pools()
    assert sorted(pools["name"]) == ["a", "b"] and pools["pool_id"].nunique() == 2
    listed = cli("pools")
    assert all(pid in listed for pid in pools["pool_id"])
    # a method run on b exports b's rows, never a's
    cli("method", "random", str(b), "--budget", "7", "--out", str(tmp_path / "x.csv"))
    exported = pd.read_csv(tmp_path / "x.csv", encoding="utf-8-sig")
    b_rows = set(pd.read_csv(b)["instruction"])
    assert len(exported) == 7 and set(exported["instruction"]) <= b_rows
    assert not set(exported["instruction"]) & set(pd.read_csv(a)["instruction"])


def test_an_edited_file_is_a_new_version_and_an_identical_one_is_that_pool(tmp_path: Path) -> None:
    a = write_pool(tmp_path / "a.csv", 0)
    first = cli("load", str(a))
    again = cli("load", str(a))
    pools = Store().list_pools()
    assert len(pools) == 1 and "Identical to the stored pool " + pools["pool_id"][0] in again
    assert pools["pool_id"][0] in first
    write_pool(a, 0, edit="Name three rivers in Europe.")
    edited = cli("load", str(a))
    assert "Saved as version 2 of the pool 'a'" in edited
    assert "1 changed, 0 added and 0 removed" in edited
    pools = Store().list_pools()
    assert list(pools["version"]) == [1, 2]
    new = Store().load_pool(pools["pool_id"][1])
    old = Store().load_pool(pools["pool_id"][0])
    assert new.frame["instruction"][0] == "Name three rivers in Europe."
    assert old.frame["instruction"][0] == DOLLY["instruction"][0]  # the earlier version keeps its rows


def test_identity_covers_input_and_extra_columns(tmp_path: Path) -> None:
    base = write_pool(tmp_path / "p.csv", 0)
    frame = pd.read_csv(base, dtype=str, keep_default_na=False)
    ids = {load_pool(base).pool_id}
    for column, value in (("input", "another input"), ("category", "another category")):
        changed = frame.copy()
        changed.loc[3, column] = value
        changed.to_csv(tmp_path / "q.csv", index=False)
        ids.add(load_pool(tmp_path / "q.csv").pool_id)
    assert len(ids) == 3
    frame.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    assert load_pool(tmp_path / "p.jsonl").pool_id == load_pool(base).pool_id  # same content, other format


def test_a_sample_never_takes_the_stored_id_of_its_pool(tmp_path: Path) -> None:
    from selectllm_core.pipeline import sample_pool

    pool = load_pool(write_pool(tmp_path / "a.csv", 0))
    Store().save_pool(pool)
    sample = sample_pool(pool, 4)
    assert sample.pool_id != pool.pool_id and len(sample.frame) == 4


LEGACY_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE pools (pool_id TEXT PRIMARY KEY, name TEXT, source TEXT, created_at TEXT, n_rows INTEGER, report TEXT);
CREATE TABLE pool_rows (pool_id TEXT, position INTEGER, row_id TEXT, instruction TEXT, input TEXT, extra TEXT,
    PRIMARY KEY (pool_id, position));
CREATE TABLE runs (run_id TEXT PRIMARY KEY, pool_id TEXT, method TEXT, params TEXT, prompt TEXT, backend TEXT,
    status TEXT, created_at TEXT, updated_at TEXT);
CREATE TABLE calls (call_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, subset INTEGER, attempt INTEGER,
    prompt_tokens INTEGER, completion_tokens INTEGER, elapsed REAL, ok INTEGER, created_at TEXT);
INSERT INTO meta VALUES ('schema', '1');
"""


def test_a_workspace_from_before_content_identities_opens_migrated(tmp_path: Path) -> None:
    import hashlib

    a = write_pool(tmp_path / "a.csv", 0)
    pool = load_pool(a)
    legacy_id = hashlib.sha256("\n".join(pool.frame["id"]).encode()).hexdigest()[:16]  # the old identity
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA)
    report = json.dumps({"source": str(a), "schema": "dolly", "columns": {"instruction": "instruction"},
                         "rows_read": 8, "rows_kept": 8, "duplicates_dropped": 0, "empty_dropped": 0, "bad_rows": []})
    db.execute("INSERT INTO pools VALUES (?, 'a', ?, '2026-01-01T00:00:00+00:00', 8, ?)", (legacy_id, str(a), report))
    db.executemany("INSERT INTO pool_rows VALUES (?, ?, ?, ?, ?, ?)",
                   [(legacy_id, i, r["id"], r["instruction"], r["input"], json.dumps({"category": r["category"]}))
                    for i, r in enumerate(pool.frame.to_dict("records"))])
    db.execute("INSERT INTO runs VALUES ('run-old', ?, 'random', '{}', '', '{}', 'complete', '', '')", (legacy_id,))
    db.commit()
    db.close()
    store = Store(path)
    assert list(store.list_pools()["pool_id"]) == [legacy_id]
    saved = store.save_pool(load_pool(a))  # the same file again is that pool, under its old id
    assert (saved.status, saved.pool_id) == ("identical", legacy_id)
    other = store.save_pool(load_pool(write_pool(tmp_path / "a.csv", 100)))
    assert other.status == "version" and other.pool_id != legacy_id and other.changed == 8
    assert store.get_run("run-old")["pool_id"] == legacy_id
    assert store.load_pool(legacy_id).frame["instruction"].tolist() == pool.frame["instruction"].tolist()


@pytest.mark.parametrize("second_start", [100, 0])
def test_the_app_upload_reports_new_identical_and_version(seeded: dict, tmp_path: Path,  # noqa: F811
                                                          second_start: int) -> None:
    at = open_page("app_pages/data.py")
    first = write_pool(tmp_path / "mine.csv", 0).read_bytes()
    at.file_uploader(key="data_upload").upload("mine.csv", first, "text/csv").run()
    at.button(key="data_save").click().run()
    assert not at.exception, at.exception
    assert any("Saved as a new pool" in m.value for m in at.success)
    second = write_pool(tmp_path / "mine.csv", second_start).read_bytes()
    at.file_uploader(key="data_upload").upload("mine.csv", second, "text/csv").run()
    at.button(key="data_save").click().run()
    assert not at.exception, at.exception
    store = seeded["store"]
    mine = store.list_pools().query("name == 'mine'")
    if second_start == 0:
        assert len(mine) == 1 and any("Identical to the stored pool" in m.value for m in at.info)
    else:
        assert list(mine["version"]) == [1, 2]
        assert any("Saved as version 2 of the pool" in m.value for m in at.success)
        active = store.load_pool(at.session_state["pool_id"])
        assert active.frame["instruction"].tolist() == DOLLY["instruction"][100:108].tolist()
        assert at.selectbox(key="data_pool_choice").value == at.session_state["pool_id"]  # the picker agrees
