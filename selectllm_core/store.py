"""The workspace: one SQLite file holding pools, runs, per-subset results and curator decisions.

Every write is one transaction, and the file runs in WAL mode, so a crash at any moment leaves every
committed decision and subset result in place, and two sessions can write decisions side by side.
Secrets never reach this file: runs store the backend's `describe()`, which carries no key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from selectllm_core.errors import UnknownPoolError, UnknownRunError, WorkspaceError
from selectllm_core.plain import plain
from selectllm_core.pool.load import ColumnMap, Pool, PoolReport, format_text, pool_digest, pool_records

SCHEMA_VERSION = "2"
DECISIONS = ("accepted", "rejected", "pending")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS pools (
    pool_id TEXT PRIMARY KEY, name TEXT, source TEXT, created_at TEXT, n_rows INTEGER, report TEXT,
    content_hash TEXT, version INTEGER, previous TEXT);
CREATE TABLE IF NOT EXISTS pool_rows (
    pool_id TEXT, position INTEGER, row_id TEXT, instruction TEXT, input TEXT, extra TEXT,
    PRIMARY KEY (pool_id, position));
CREATE INDEX IF NOT EXISTS pool_rows_id ON pool_rows (pool_id, row_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pool_id TEXT, method TEXT, params TEXT, prompt TEXT, backend TEXT,
    status TEXT, created_at TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS run_rows (
    run_id TEXT, row_id TEXT, position INTEGER, cluster INTEGER, subset INTEGER,
    PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS subset_results (
    run_id TEXT, subset INTEGER, status TEXT, members TEXT, picks TEXT, reasons TEXT, raw TEXT,
    attempts INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER, error TEXT, updated_at TEXT,
    note TEXT, PRIMARY KEY (run_id, subset));
CREATE TABLE IF NOT EXISTS calls (
    call_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, subset INTEGER, attempt INTEGER,
    prompt_tokens INTEGER, completion_tokens INTEGER, elapsed REAL, ok INTEGER, created_at TEXT,
    answer_format TEXT);
CREATE TABLE IF NOT EXISTS selection (
    run_id TEXT, row_id TEXT, rank INTEGER, score REAL, reason TEXT, PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT, row_id TEXT, decision TEXT, note TEXT, updated_at TEXT, PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS exported (
    run_id TEXT, row_id TEXT, exported_at TEXT, PRIMARY KEY (run_id, row_id));
"""
# Columns added after schema 1, with their type: a workspace made before them gets them on opening.
_ADDED_COLUMNS = {
    "pools": (("content_hash", "TEXT"), ("version", "INTEGER"), ("previous", "TEXT")),
    "calls": (("answer_format", "TEXT"),),
    "subset_results": (("note", "TEXT"),),
}


@dataclass(frozen=True)
class PoolSaved:
    """What saving a pool did: a new pool, a new version of a pool of that name, or nothing (identical)."""

    pool_id: str
    status: str  # "new", "version" or "identical"
    name: str
    version: int
    n_rows: int
    previous: str | None = None
    changed: int = 0
    added: int = 0
    removed: int = 0

    @property
    def message(self) -> str:
        """One sentence for the load report."""
        if self.status == "identical":
            return (f"Identical to the stored pool {self.pool_id} ({self.name!r}, version {self.version}, "
                    f"{self.n_rows:,} rows): nothing new was saved, and its runs and decisions apply.")
        if self.status == "version":
            return (f"Saved as version {self.version} of the pool {self.name!r} ({self.pool_id}). It differs from "
                    f"version {self.version - 1} ({self.previous}) in {self.changed:,} changed, {self.added:,} "
                    f"added and {self.removed:,} removed row(s); runs of earlier versions keep their own rows.")
        return f"Saved as a new pool {self.pool_id} ({self.name!r}, {self.n_rows:,} rows)."


def default_workspace() -> Path:
    """Workspace path: $SELECTLLM_WORKSPACE, else `selectllm-workspace.sqlite` in the working directory."""
    return Path(os.environ.get("SELECTLLM_WORKSPACE", "selectllm-workspace.sqlite"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """A workspace file. Safe to share between threads of one process (calls are serialised).

    Args:
        path: the SQLite file; created with its schema when missing. None means `default_workspace()`.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_workspace()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except (sqlite3.DatabaseError, OSError) as exc:  # OSError: its folder cannot be made (a file, no access)
            raise WorkspaceError(
                f"Cannot open the workspace {self.path}: {exc}. Check the path, or start a new workspace "
                "with --workspace NEW_FILE (the old file is left untouched)."
            ) from exc

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Bring a workspace made by an earlier version up to this schema, in one transaction."""
        with self._transaction() as db:
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            # Pools saved before identities covered content: hash their stored rows, keep their ids.
            legacy = db.execute("SELECT pool_id FROM pools WHERE content_hash IS NULL").fetchall()
            for (pool_id,) in legacy:
                db.execute("UPDATE pools SET content_hash = ?, version = COALESCE(version, 1) WHERE pool_id = ?",
                           (pool_digest(self._stored_records(pool_id)), pool_id))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _stored_records(self, pool_id: str) -> Iterable[tuple[str, str, str, dict]]:
        """A stored pool's rows as (id, instruction, input, extras), in order."""
        rows = self._db.execute("SELECT row_id, instruction, input, extra FROM pool_rows WHERE pool_id = ? "
                                "ORDER BY position", (pool_id,))
        return [(r, i, x, json.loads(e)) for r, i, x, e in rows]

    def _write(self, sql: str, rows: Iterable[tuple] | tuple = ()) -> None:
        """Run one statement (or many rows of it) in a single IMMEDIATE transaction."""
        with self._transaction() as db:
            if isinstance(rows, tuple):
                db.execute(sql, rows)
            else:
                db.executemany(sql, rows)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query(sql, self._db, params=params)

    # -- pools ---------------------------------------------------------------------------------
    def save_pool(self, pool: Pool) -> PoolSaved:
        """Store a pool unless identical content is stored already; the pool takes the id it is stored under.

        Args:
            pool: a loaded pool.

        Returns:
            What happened: "identical" (an earlier save of the same content, under its id), "version" (a pool
            of this name exists with other content: this is its next version) or "new".
        """
        digest, records = pool.content_digest, None
        with self._transaction() as db:  # look up and insert in one transaction: two writers cannot both add it
            found = db.execute("SELECT pool_id, name, version, n_rows FROM pools WHERE content_hash = ? "
                               "ORDER BY created_at LIMIT 1", (digest,)).fetchone()
            if found is None:
                latest = db.execute("SELECT pool_id, COALESCE(version, 1) FROM pools WHERE name = ? "
                                    "ORDER BY version DESC, created_at DESC LIMIT 1", (pool.name,)).fetchone()
                records = list(pool_records(pool.frame))
                pool_id = self._free_id(db, digest)
                self._insert_pool(db, pool, pool_id, digest, records, version=latest[1] + 1 if latest else 1,
                                  previous=latest[0] if latest else None)
        if found is not None:
            pool.stored_id = found[0]
            return PoolSaved(found[0], "identical", found[1], found[2] or 1, found[3])
        pool.stored_id = pool_id
        if latest is None:
            return PoolSaved(pool_id, "new", pool.name, 1, len(records))
        changed, added, removed = _row_changes(self._stored_records(latest[0]), records)
        return PoolSaved(pool_id, "version", pool.name, latest[1] + 1, len(records), latest[0],
                         changed, added, removed)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction, committed when the block ends and rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _free_id(db: sqlite3.Connection, digest: str) -> str:
        """The digest as id, unless a pool saved before identities covered content holds it (then a variant)."""
        pool_id, k = digest, 2
        while db.execute("SELECT 1 FROM pools WHERE pool_id = ?", (pool_id,)).fetchone():
            pool_id, k = hashlib.sha256(f"{digest}:{k}".encode()).hexdigest()[:16], k + 1
        return pool_id

    @staticmethod
    def _insert_pool(db: sqlite3.Connection, pool: Pool, pool_id: str, digest: str,
                     records: list[tuple[str, str, str, dict]], *, version: int, previous: str | None) -> None:
        """Write a pool's rows and its record (inside the caller's transaction)."""
        rows = [(pool_id, pos, rid, ins, inp, json.dumps(extra, ensure_ascii=False))
                for pos, (rid, ins, inp, extra) in enumerate(records)]
        report = json.dumps(plain(_report_dict(pool.report)), ensure_ascii=False)
        db.executemany("INSERT INTO pool_rows VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("INSERT INTO pools VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (pool_id, pool.name, str(getattr(pool.report, "source", "")), _now(), len(rows), report,
                    digest, version, previous))

    def load_pool(self, pool_id: str) -> Pool:
        """Rebuild a `data.Pool` from the workspace, under the id it is stored by."""
        meta = self._query("SELECT name, report FROM pools WHERE pool_id = ?", (pool_id,))
        if not meta:
            raise UnknownPoolError(f"No pool {pool_id!r} in {self.path}. List pools with `selectllm pools`.")
        rows = self._query(
            "SELECT row_id, instruction, input, extra FROM pool_rows WHERE pool_id = ? ORDER BY position",
            (pool_id,),
        )
        records = []
        for row_id, instruction, input_, extra in rows:
            rec = {"id": row_id, "instruction": instruction, "input": input_,
                   "text": format_text(instruction, input_)}
            rec.update(json.loads(extra))
            records.append(rec)
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(
            columns=["id", "instruction", "input", "text"])
        pool = Pool(frame=frame, report=_report_from(json.loads(meta[0][1])), name=meta[0][0])
        pool.stored_id = pool_id
        return pool

    def list_pools(self) -> pd.DataFrame:
        """Every stored pool (each version of a name is a pool of its own), oldest first."""
        return self._frame("SELECT pool_id, name, COALESCE(version, 1) AS version, source, n_rows, created_at "
                           "FROM pools ORDER BY created_at, rowid")

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, run_id: str, *, pool_id: str, method: str, params: dict, prompt: str,
                   backend: dict) -> bool:
        """Record a run; False when a run with this id already exists (then nothing changes)."""
        if self._query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
            return False
        self._write(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, 'created', ?, ?)",
            (run_id, pool_id, method, json.dumps(params, sort_keys=True), prompt,
             json.dumps(backend, sort_keys=True), _now(), _now()),
        )
        return True

    def set_run_status(self, run_id: str, status: str) -> None:
        self._write("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", (status, _now(), run_id))

    def get_run(self, run_id: str) -> dict:
        """A run's record with params and backend decoded."""
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise UnknownRunError(f"No run {run_id!r} in {self.path}. List runs with `selectllm runs`.")
        cols = ["run_id", "pool_id", "method", "params", "prompt", "backend", "status", "created_at", "updated_at"]
        run = dict(zip(cols, rows[0]))
        run["params"], run["backend"] = json.loads(run["params"]), json.loads(run["backend"])
        return run

    def list_runs(self) -> pd.DataFrame:
        return self._frame(
            "SELECT r.run_id, r.pool_id, r.method, r.status, r.created_at, "
            "(SELECT COUNT(*) FROM selection s WHERE s.run_id = r.run_id) AS selected "
            "FROM runs r ORDER BY r.created_at"
        )

    def save_plan(self, run_id: str, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Store (row_id, position, cluster, subset) for every pool row of a run."""
        self._write("INSERT OR REPLACE INTO run_rows VALUES (?, ?, ?, ?, ?)",
                    [(run_id, *r) for r in rows])

    def plan(self, run_id: str) -> pd.DataFrame:
        return self._frame(
            "SELECT row_id AS id, position, cluster, subset FROM run_rows WHERE run_id = ? ORDER BY position",
            (run_id,),
        )

    # -- subset results ------------------------------------------------------------------------
    def save_subset_result(self, run_id: str, subset: int, *, status: str, members: list[str],
                           picks: list[str], reasons: dict[str, str], raw: list[str], calls: list[dict],
                           error: str | None, note: str | None = None) -> None:
        """Store one subset's outcome and its calls in one transaction (resume skips it afterwards).

        Attempt numbers in the calls log keep counting across rounds (resume, retry) for a subset.
        """
        p_tok = sum(c.get("prompt_tokens", 0) for c in calls)
        c_tok = sum(c.get("completion_tokens", 0) for c in calls)
        with self._transaction() as db:
            (before,) = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) FROM calls WHERE run_id = ? AND subset = ?", (run_id, subset)
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO subset_results (run_id, subset, status, members, picks, reasons, raw, "
                "attempts, prompt_tokens, completion_tokens, error, updated_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, subset, status, json.dumps(members), json.dumps(picks),
                 json.dumps(reasons, ensure_ascii=False), json.dumps(raw, ensure_ascii=False),
                 len(calls), p_tok, c_tok, error, _now(), note),
            )
            db.executemany(
                "INSERT INTO calls (run_id, subset, attempt, prompt_tokens, completion_tokens, elapsed, ok,"
                " created_at, answer_format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, subset, before + i + 1, c.get("prompt_tokens", 0), c.get("completion_tokens", 0),
                  c.get("elapsed", 0.0), int(c.get("ok", True)), _now(), c.get("answer_format"))
                 for i, c in enumerate(calls)],
            )

    def subset_results(self, run_id: str) -> list[dict]:
        """Every stored subset outcome of a run, in subset order, JSON fields decoded."""
        cols = ["run_id", "subset", "status", "members", "picks", "reasons", "raw", "attempts",
                "prompt_tokens", "completion_tokens", "error", "updated_at", "note"]
        rows = self._query(f"SELECT {', '.join(cols)} FROM subset_results WHERE run_id = ? ORDER BY subset",
                           (run_id,))
        out = []
        for row in rows:
            rec = dict(zip(cols, row))
            for key in ("members", "picks", "reasons", "raw"):
                rec[key] = json.loads(rec[key])
            out.append(rec)
        return out

    def subset_notes(self, run_id: str) -> list[tuple[int, str]]:
        """(subset, note) of the subsets whose outcome differs from the plan, in subset order."""
        return [tuple(r) for r in self._query(
            "SELECT subset, note FROM subset_results WHERE run_id = ? AND note IS NOT NULL AND note != '' "
            "ORDER BY subset", (run_id,))]

    def done_subsets(self, run_id: str) -> set[int]:
        """Subsets with a final outcome (ok, failed or skipped): a resumed run does not call them again.

        Subsets whose backend could not be reached (status "error") are not done: resuming calls them.
        """
        rows = self._query(
            "SELECT subset FROM subset_results WHERE run_id = ? AND status != 'error'", (run_id,))
        return {r[0] for r in rows}

    def reset_subsets(self, run_id: str, subsets: Iterable[int]) -> None:
        """Forget the outcome of some subsets (their calls stay in the log) so they run again."""
        self._write("DELETE FROM subset_results WHERE run_id = ? AND subset = ?",
                    [(run_id, int(s)) for s in subsets])

    def count_calls(self, run_id: str | None = None) -> int:
        """LLM calls recorded (for one run, or in the whole workspace)."""
        if run_id is None:
            return self._query("SELECT COUNT(*) FROM calls")[0][0]
        return self._query("SELECT COUNT(*) FROM calls WHERE run_id = ?", (run_id,))[0][0]

    def calls(self, run_id: str) -> pd.DataFrame:
        return self._frame("SELECT * FROM calls WHERE run_id = ? ORDER BY call_id", (run_id,))

    def usage(self, run_id: str) -> dict:
        """Token usage and call counts of a run."""
        row = self._query(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
            "FROM calls WHERE run_id = ?", (run_id,))[0]
        formats = dict(self._query(
            "SELECT COALESCE(answer_format, 'unrecorded'), COUNT(*) FROM calls WHERE run_id = ? AND ok = 1 "
            "GROUP BY 1 ORDER BY 1", (run_id,)))
        return {"calls": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "answer_formats": formats}

    # -- selection and decisions -----------------------------------------------------------------
    def save_selection(self, run_id: str, rows: Iterable[tuple[str, int, float | None, str]]) -> None:
        """Replace a run's final selection with (row_id, rank, score, reason) rows."""
        rows = list(rows)
        with self._transaction() as db:
            db.execute("DELETE FROM selection WHERE run_id = ?", (run_id,))
            db.executemany("INSERT INTO selection VALUES (?, ?, ?, ?, ?)", [(run_id, *r) for r in rows])

    def selection(self, run_id: str) -> pd.DataFrame:
        """The run's selected rows with text, cluster, subset, reason, decision and extra columns, by rank."""
        run = self.get_run(run_id)
        frame = self._frame(
            "SELECT s.row_id AS id, p.instruction, p.input, rr.cluster, rr.subset, s.reason, s.score, s.rank, "
            "COALESCE(d.decision, 'pending') AS decision, COALESCE(d.note, '') AS note, p.extra "
            "FROM selection s "
            "JOIN pool_rows p ON p.pool_id = ? AND p.row_id = s.row_id "
            "LEFT JOIN run_rows rr ON rr.run_id = s.run_id AND rr.row_id = s.row_id "
            "LEFT JOIN decisions d ON d.run_id = s.run_id AND d.row_id = s.row_id "
            "WHERE s.run_id = ? ORDER BY s.rank",
            (run["pool_id"], run_id),
        )
        extras = pd.DataFrame.from_records([json.loads(e) for e in frame.pop("extra")], index=frame.index)
        return pd.concat([frame, extras], axis=1)

    def set_decisions(self, run_id: str, decisions: dict[str, tuple[str, str]]) -> None:
        """Upsert curator decisions {row_id: (decision, note)} in one transaction."""
        bad = {d for d, _ in decisions.values()} - set(DECISIONS)
        if bad:
            raise WorkspaceError(f"Unknown decision {sorted(bad)}; use one of {', '.join(DECISIONS)}.")
        self._write(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, row_id) DO UPDATE SET "
            "decision = excluded.decision, note = excluded.note, updated_at = excluded.updated_at",
            [(run_id, rid, d, note, _now()) for rid, (d, note) in decisions.items()],
        )

    def accept_pending(self, run_id: str, note: str = "") -> int:
        """Accept every pick of a run that has no decision yet, in one transaction; returns how many."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO decisions SELECT s.run_id, s.row_id, 'accepted', ?, ? FROM selection s "
                "WHERE s.run_id = ? AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.run_id = s.run_id "
                "AND d.row_id = s.row_id AND d.decision != 'pending') "
                "ON CONFLICT (run_id, row_id) DO UPDATE SET decision = 'accepted', note = excluded.note, "
                "updated_at = excluded.updated_at",
                (note, _now(), run_id),
            )
        return cur.rowcount

    def mark_exported(self, run_id: str, row_ids: Iterable[str]) -> None:
        """Remember that these picks left the studio in an export: a later re-trim keeps them selected."""
        now = _now()
        self._write("INSERT OR IGNORE INTO exported VALUES (?, ?, ?)", [(run_id, str(r), now) for r in row_ids])

    def kept_picks(self, run_id: str) -> list[tuple[str, int, str]]:
        """Picks of the current selection that a curator decided or that were exported, by rank.

        Returns:
            (row_id, subset, reason) of each; re-trimming the run (after a retry) never drops them.
        """
        return [tuple(r) for r in self._query(
            "SELECT s.row_id, COALESCE(rr.subset, -1), COALESCE(s.reason, '') FROM selection s "
            "LEFT JOIN run_rows rr ON rr.run_id = s.run_id AND rr.row_id = s.row_id "
            "WHERE s.run_id = ? AND (EXISTS (SELECT 1 FROM decisions d WHERE d.run_id = s.run_id AND "
            "d.row_id = s.row_id AND d.decision != 'pending') OR EXISTS (SELECT 1 FROM exported e WHERE "
            "e.run_id = s.run_id AND e.row_id = s.row_id)) ORDER BY s.rank", (run_id,))]

    def decisions(self, run_id: str) -> pd.DataFrame:
        return self._frame(
            "SELECT row_id AS id, decision, note, updated_at FROM decisions WHERE run_id = ? ORDER BY row_id",
            (run_id,),
        )


def _row_changes(before: Iterable[tuple[str, str, str, dict]],
                 after: Iterable[tuple[str, str, str, dict]]) -> tuple[int, int, int]:
    """(changed, added, removed) rows between two versions of a pool, matched by row id."""
    old = {r[0]: r[1:] for r in before}
    new = {r[0]: r[1:] for r in after}
    changed = sum(1 for rid, content in new.items() if rid in old and old[rid] != content)
    return changed, len(new.keys() - old.keys()), len(old.keys() - new.keys())


def _report_dict(report: Any) -> dict:
    return asdict(report) if is_dataclass(report) else dict(report)


def _report_from(data: dict) -> PoolReport:
    """Rebuild a PoolReport from its stored dict (tolerates fields added later)."""
    names = {f.name for f in fields(PoolReport)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if isinstance(kwargs.get("columns"), dict):
        kwargs["columns"] = ColumnMap(**kwargs["columns"])
    if "bad_rows" in kwargs:
        kwargs["bad_rows"] = [tuple(r) for r in kwargs["bad_rows"]]
    return PoolReport(**kwargs)
