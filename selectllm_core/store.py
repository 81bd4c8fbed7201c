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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from selectllm_core.errors import UnknownPoolError, UnknownRunError, WorkspaceError
from selectllm_core.plain import plain
from selectllm_core.pool.load import ColumnMap, Pool, PoolReport, format_text, pool_digest, pool_records

SCHEMA_VERSION = "3"
DECISIONS = ("accepted", "rejected", "pending")
MODEL_PICK, CURATOR_PICK = "model pick", "curator pick"  # a selected row's origin
ACTIONS = ("decide", "bulk", "import", "promote", "undo")  # what made a change in the decision history
UNDECIDED = ("pending", "")

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
CREATE TABLE IF NOT EXISTS run_rounds (
    run_id TEXT, round INTEGER, first_subset INTEGER, n_subsets INTEGER, n_rows INTEGER, plan TEXT,
    PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS round_rows (
    run_id TEXT, round INTEGER, row_id TEXT, position INTEGER, cluster INTEGER, subset INTEGER,
    PRIMARY KEY (run_id, round, row_id));
CREATE TABLE IF NOT EXISTS subset_results (
    run_id TEXT, subset INTEGER, status TEXT, members TEXT, picks TEXT, reasons TEXT, raw TEXT,
    attempts INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER, error TEXT, updated_at TEXT,
    note TEXT, orders TEXT, PRIMARY KEY (run_id, subset));
CREATE TABLE IF NOT EXISTS calls (
    call_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, subset INTEGER, attempt INTEGER,
    prompt_tokens INTEGER, completion_tokens INTEGER, elapsed REAL, ok INTEGER, created_at TEXT,
    answer_format TEXT, cost REAL, cached INTEGER, kind TEXT, model TEXT);
CREATE TABLE IF NOT EXISTS prices (
    model TEXT PRIMARY KEY, input_per_mtok REAL, output_per_mtok REAL, updated_at TEXT);
CREATE TABLE IF NOT EXISTS selection (
    run_id TEXT, row_id TEXT, rank INTEGER, score REAL, reason TEXT, origin TEXT, subset INTEGER,
    PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT, row_id TEXT, decision TEXT, note TEXT, updated_at TEXT, PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS exported (
    run_id TEXT, row_id TEXT, exported_at TEXT, PRIMARY KEY (run_id, row_id));
CREATE TABLE IF NOT EXISTS decision_history (
    change_id INTEGER, run_id TEXT, row_id TEXT, curator TEXT, at TEXT, action TEXT,
    before_decision TEXT, after_decision TEXT, before_note TEXT, after_note TEXT, swapped TEXT,
    before_pick TEXT, after_pick TEXT, before_annotations TEXT, after_annotations TEXT, undoes INTEGER);
CREATE INDEX IF NOT EXISTS decision_history_run ON decision_history (run_id, change_id);
CREATE TABLE IF NOT EXISTS annotations (
    run_id TEXT, row_id TEXT, field TEXT, value TEXT, updated_at TEXT, PRIMARY KEY (run_id, row_id, field));
"""
# Columns added after schema 1, with their type: a workspace made before them gets them on opening.
_ADDED_COLUMNS = {
    "pools": (("content_hash", "TEXT"), ("version", "INTEGER"), ("previous", "TEXT")),
    "calls": (("answer_format", "TEXT"), ("cost", "REAL"), ("cached", "INTEGER"), ("kind", "TEXT"),
              ("model", "TEXT")),
    "subset_results": (("note", "TEXT"), ("orders", "TEXT")),
    "selection": (("origin", "TEXT"), ("subset", "INTEGER")),
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

    # -- rounds (a tournament: later rounds ask again among the winners) -------------------------
    def save_round(self, run_id: str, round_: int, *, first_subset: int, plan: dict,
                   rows: Iterable[tuple[str, int, int, int]] = ()) -> None:
        """Store a round's plan and, for rounds after the first, its (row_id, position, cluster, subset) rows.

        Round 1's rows are the run's plan (`save_plan`); its subsets are numbered from 0, and each later
        round's from where the round before ended, so a subset number names one query of the run.
        """
        rows = list(rows)
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO run_rounds VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, round_, first_subset, plan["n_subsets"], plan["pool_size"], json.dumps(plan)))
            db.executemany("INSERT OR REPLACE INTO round_rows VALUES (?, ?, ?, ?, ?, ?)",
                           [(run_id, round_, *r) for r in rows])

    def rounds(self, run_id: str) -> list[dict]:
        """The run's rounds as planned when each began (none for runs made before rounds)."""
        return [{"round": r, "first_subset": f, "n_subsets": q, "n_rows": n, "plan": json.loads(p)}
                for r, f, q, n, p in self._query(
                    "SELECT round, first_subset, n_subsets, n_rows, plan FROM run_rounds WHERE run_id = ? "
                    "ORDER BY round", (run_id,))]

    def round_plan(self, run_id: str, round_: int) -> pd.DataFrame:
        """A later round's rows: id, position (among the round's rows), cluster and subset."""
        return self._frame("SELECT row_id AS id, position, cluster, subset FROM round_rows WHERE run_id = ? AND "
                           "round = ? ORDER BY position", (run_id, round_))

    def drop_rounds_after(self, run_id: str, round_: int) -> None:
        """Forget the rounds after this one (their calls stay in the log): a retry changed its winners."""
        with self._transaction() as db:
            first = db.execute("SELECT MIN(first_subset) FROM run_rounds WHERE run_id = ? AND round > ?",
                               (run_id, round_)).fetchone()[0]
            if first is not None:
                db.execute("DELETE FROM subset_results WHERE run_id = ? AND subset >= ?", (run_id, first))
            db.execute("DELETE FROM run_rounds WHERE run_id = ? AND round > ?", (run_id, round_))
            db.execute("DELETE FROM round_rows WHERE run_id = ? AND round > ?", (run_id, round_))

    def round_usage(self, run_id: str) -> pd.DataFrame:
        """Per round: rows, subsets, calls (sent and from the cache), tokens sent and money (unknown: NaN)."""
        return self._frame(
            "SELECT r.round, r.n_rows AS rows, r.n_subsets AS subsets, COUNT(c.call_id) AS calls, "
            "COALESCE(SUM(c.cached), 0) AS cached, "
            "COALESCE(SUM(CASE WHEN COALESCE(c.cached, 0) = 0 THEN c.prompt_tokens END), 0) AS prompt_tokens, "
            "COALESCE(SUM(CASE WHEN COALESCE(c.cached, 0) = 0 THEN c.completion_tokens END), 0) AS "
            "completion_tokens, CASE WHEN SUM(CASE WHEN c.cost IS NULL AND COALESCE(c.cached, 0) = 0 AND c.ok = 1 "
            "THEN 1 ELSE 0 END) > 0 THEN NULL ELSE COALESCE(SUM(c.cost), 0) END AS cost "
            "FROM run_rounds r LEFT JOIN calls c ON c.run_id = r.run_id AND COALESCE(c.kind, 'run') = 'run' "
            "AND c.subset >= r.first_subset AND c.subset < r.first_subset + r.n_subsets "
            "WHERE r.run_id = ? GROUP BY r.round ORDER BY r.round", (run_id,))

    # -- subset results ------------------------------------------------------------------------
    def save_subset_result(self, run_id: str, subset: int, *, status: str, members: list[str],
                           picks: list[str], reasons: dict[str, str], raw: list[str], calls: list[dict],
                           error: str | None, note: str | None = None, orders: list[dict] | None = None) -> None:
        """Store one subset's outcome and its calls in one transaction (resume skips it afterwards).

        orders: each order the subset was shown in, with its picks (a run with P orders or an order check).

        Attempt numbers in the calls log keep counting across rounds (resume, retry) for a subset.
        """
        p_tok = sum(c.get("prompt_tokens", 0) for c in calls)
        c_tok = sum(c.get("completion_tokens", 0) for c in calls)
        with self._transaction() as db:
            (before,) = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) FROM calls WHERE run_id = ? AND subset = ?", (run_id, subset)
            ).fetchone()
            # a scored subset (SelectLLM's score aggregation) keeps the passes' calls and tokens in its totals
            earlier = db.execute(
                "SELECT attempts, prompt_tokens, completion_tokens FROM subset_results WHERE run_id = ? AND "
                "subset = ? AND status = 'scored'", (run_id, subset)).fetchone() or (0, 0, 0)
            db.execute(
                "INSERT OR REPLACE INTO subset_results (run_id, subset, status, members, picks, reasons, raw, "
                "attempts, prompt_tokens, completion_tokens, error, updated_at, note, orders) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, subset, status, json.dumps(members), json.dumps(picks),
                 json.dumps(reasons, ensure_ascii=False), json.dumps(raw, ensure_ascii=False),
                 len(calls) + earlier[0], p_tok + earlier[1], c_tok + earlier[2], error, _now(), note,
                 json.dumps(orders) if orders else None),
            )
            _insert_calls(db, run_id, subset, calls, first_attempt=before + 1)

    def record_calls(self, calls: list[dict], *, kind: str, run_id: str = "") -> None:
        """Store calls made outside a run's units (kind "preview": the Select page's dry run), with their cost."""
        with self._transaction() as db:
            _insert_calls(db, run_id, -1, calls, first_attempt=1, kind=kind)

    def add_orders(self, run_id: str, subset: int, orders: list[dict], calls: list[dict]) -> None:
        """Record a finished subset's answers in other orders (an order check) and their calls; picks stay."""
        with self._transaction() as db:
            (before,) = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) FROM calls WHERE run_id = ? AND subset = ?", (run_id, subset)
            ).fetchone()
            db.execute("UPDATE subset_results SET orders = ?, attempts = attempts + ?, prompt_tokens = prompt_tokens "
                       "+ ?, completion_tokens = completion_tokens + ? WHERE run_id = ? AND subset = ?",
                       (json.dumps(orders), len(calls), sum(c.get("prompt_tokens", 0) for c in calls),
                        sum(c.get("completion_tokens", 0) for c in calls), run_id, subset))
            _insert_calls(db, run_id, subset, calls, first_attempt=before + 1)

    def subset_results(self, run_id: str, subsets: Iterable[int] | None = None) -> list[dict]:
        """Every stored subset outcome of a run (or those of the given subsets), in subset order, JSON fields
        decoded."""
        cols = ["run_id", "subset", "status", "members", "picks", "reasons", "raw", "attempts",
                "prompt_tokens", "completion_tokens", "error", "updated_at", "note", "orders"]
        query = f"SELECT {', '.join(cols)} FROM subset_results WHERE run_id = ?"
        if subsets is None:
            rows = self._query(f"{query} ORDER BY subset", (run_id,))
        else:
            rows = []
            for part in _chunks(sorted({int(s) for s in subsets})):
                rows += self._query(f"{query} AND subset IN ({', '.join('?' * len(part))})", (run_id, *part))
            rows.sort(key=lambda r: r[1])
        out = []
        for row in rows:
            rec = dict(zip(cols, row))
            for key in ("members", "picks", "reasons", "raw"):
                rec[key] = json.loads(rec[key])
            rec["orders"] = json.loads(rec["orders"]) if rec["orders"] else []
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

    def usage(self, run_id: str, *, kind: str | None = None) -> dict:
        """Token usage, call counts and money of a run (or, with kind="preview", of every preview call).

        Returns:
            calls (answers recorded), sent (calls that reached the model), cached (answers from the response
            cache: no tokens were paid for them), prompt_tokens and completion_tokens (of the sent calls),
            cost (money of the sent calls whose price is known), unpriced (sent calls of a model with no price),
            answer_formats (the JSON constraint the usable answers used).
        """
        where, params = ("kind = ?", (kind,)) if kind else ("run_id = ? AND COALESCE(kind, 'run') = 'run'", (run_id,))
        row = self._query(
            "SELECT COUNT(*), COALESCE(SUM(cached), 0), "
            "COALESCE(SUM(CASE WHEN COALESCE(cached, 0) = 0 THEN prompt_tokens END), 0), "
            "COALESCE(SUM(CASE WHEN COALESCE(cached, 0) = 0 THEN completion_tokens END), 0), "
            "COALESCE(SUM(cost), 0), COALESCE(SUM(CASE WHEN cost IS NULL AND COALESCE(cached, 0) = 0 "
            f"AND ok = 1 THEN 1 END), 0) FROM calls WHERE {where}", params)[0]
        formats = dict(self._query(
            "SELECT COALESCE(answer_format, 'unrecorded'), COUNT(*) FROM calls WHERE "
            f"{where} AND ok = 1 GROUP BY 1 ORDER BY 1", params))
        return {"calls": row[0], "sent": row[0] - row[1], "cached": row[1], "prompt_tokens": row[2],
                "completion_tokens": row[3], "cost": round(row[4], 6), "unpriced": row[5],
                "answer_formats": formats}

    # -- settings ------------------------------------------------------------------------------
    def setting(self, key: str, default: str | None = None) -> str | None:
        """A workspace setting the curator chose (e.g. the cost above which a run asks for confirmation)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (f"setting:{key}",))
        return rows[0][0] if rows else default

    def set_setting(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"setting:{key}", str(value)))

    # -- prices --------------------------------------------------------------------------------
    def prices(self) -> dict[str, tuple[float, float]]:
        """The workspace's price table: model -> (money per million prompt tokens, per million answer tokens)."""
        return {m: (i, o) for m, i, o in self._query(
            "SELECT model, input_per_mtok, output_per_mtok FROM prices ORDER BY model")}

    def set_price(self, model: str, input_per_mtok: float, output_per_mtok: float) -> None:
        """Set (or replace) a model's price; it applies to calls recorded from now on."""
        if not model.strip():
            raise WorkspaceError("A price needs the model's name, as the backend is told it (e.g. gpt-4o-mini).")
        if min(input_per_mtok, output_per_mtok) < 0:
            raise WorkspaceError(f"A price cannot be negative (got {input_per_mtok}, {output_per_mtok}).")
        self._write("INSERT OR REPLACE INTO prices VALUES (?, ?, ?, ?)",
                    (model.strip(), float(input_per_mtok), float(output_per_mtok), _now()))

    def remove_price(self, model: str) -> None:
        self._write("DELETE FROM prices WHERE model = ?", (model,))

    # -- selection and decisions -----------------------------------------------------------------
    # Every change a curator makes (a decision, a bulk action, an import, a promotion, an undo) goes through
    # `_commit_change`: the new state and its history rows are written in the same transaction.
    def save_selection(self, run_id: str, rows: Iterable[tuple]) -> None:
        """Replace a run's final selection with (row_id, rank, score, reason[, subset]) rows.

        subset is the subset whose answer chose the pick and gave its reason (a tournament's last round);
        without it the pick is shown with its subset of the run's plan. A row that stays selected keeps its
        origin: a curator pick stays one when a retry re-trims the run.
        """
        rows = [(*r, None) if len(r) == 4 else tuple(r) for r in rows]
        with self._transaction() as db:
            origins = dict(db.execute("SELECT row_id, origin FROM selection WHERE run_id = ?", (run_id,)).fetchall())
            db.execute("DELETE FROM selection WHERE run_id = ?", (run_id,))
            db.executemany("INSERT INTO selection (run_id, row_id, rank, score, reason, subset, origin) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", [(run_id, *r, origins.get(r[0])) for r in rows])

    def selection(self, run_id: str) -> pd.DataFrame:
        """The run's selected rows by rank: text, cluster, subset, reason, origin, decision, note, extra columns.

        origin is "model pick" or "curator pick". Annotations imported for the picks come last, one column per
        field; a field named like a pool column replaces that column's value for the picks that have one.
        """
        run = self.get_run(run_id)
        frame = self._frame(
            "SELECT s.row_id AS id, p.instruction, p.input, rr.cluster, COALESCE(s.subset, rr.subset) AS subset, "
            "s.reason, s.score, s.rank, "
            f"COALESCE(s.origin, '{MODEL_PICK}') AS origin, COALESCE(d.decision, 'pending') AS decision, "
            "COALESCE(d.note, '') AS note, p.extra FROM selection s "
            # CROSS JOIN keeps the picks the outer loop: left to itself SQLite walks every row of the pool
            "CROSS JOIN pool_rows p ON p.pool_id = ? AND p.row_id = s.row_id "
            "LEFT JOIN run_rows rr ON rr.run_id = s.run_id AND rr.row_id = s.row_id "
            "LEFT JOIN decisions d ON d.run_id = s.run_id AND d.row_id = s.row_id "
            "WHERE s.run_id = ? ORDER BY s.rank",
            (run["pool_id"], run_id),
        )
        extras = pd.DataFrame.from_records([json.loads(e) for e in frame.pop("extra")], index=frame.index)
        frame = pd.concat([frame, extras], axis=1)
        with self._lock:
            annotations = _annotation_states(self._db, run_id)
        for field in dict.fromkeys(f for per_row in annotations.values() for f in per_row):
            old = frame[field] if field in frame else [None] * len(frame)
            frame[field] = [annotations.get(r, {}).get(field, o) for r, o in zip(frame["id"], old)]
        return frame

    def row_texts(self, run_id: str, row_ids: Iterable[str]) -> pd.DataFrame:
        """Instruction and input of some rows of a run's pool, indexed by id (rows not in the pool are left out)."""
        pool_id, ids, parts = self.get_run(run_id)["pool_id"], list(dict.fromkeys(row_ids)), []
        for chunk in _chunks(ids):
            parts.append(self._frame(
                "SELECT row_id AS id, instruction, input FROM pool_rows WHERE pool_id = ? AND row_id IN "
                f"({', '.join('?' * len(chunk))})", (pool_id, *chunk)))
        frame = pd.concat(parts) if parts else pd.DataFrame(columns=["id", "instruction", "input"])
        return frame.drop_duplicates("id").set_index("id")

    def set_decisions(self, run_id: str, decisions: dict[str, tuple[str, str]], *, curator: str = "",
                      action: str = "decide") -> int:
        """Upsert curator decisions {row_id: (decision, note)} and their history, in one transaction.

        Args:
            run_id: the run.
            decisions: the new (decision, note) of each row; a row already holding it is left alone.
            curator: who decided ("" when the curator gave no name).
            action: how the history names the change: "decide" (one by one) or "bulk".

        Returns:
            How many rows changed (all of them are one change of the history).
        """
        bad = {d for d, _ in decisions.values()} - set(DECISIONS)
        if bad:
            raise WorkspaceError(f"Unknown decision {sorted(bad)}; use one of {', '.join(DECISIONS)}.")
        with self._transaction() as db:
            now = _decision_states(db, run_id)
            rows = [_RowChange(r, now.get(r, UNDECIDED), (d, str(note or ""))) for r, (d, note) in decisions.items()]
            return _commit_change(db, run_id, _changed(rows), curator=curator, action=action)

    def accept_pending(self, run_id: str, note: str = "", *, curator: str = "") -> int:
        """Accept every pick of a run that has no decision yet, in one transaction; returns how many.

        A pick keeps its note unless `note` gives a new one. The history records it as one "bulk" change.
        """
        with self._transaction() as db:
            now = _decision_states(db, run_id)
            picks = [r for (r,) in db.execute("SELECT row_id FROM selection WHERE run_id = ? ORDER BY rank", (run_id,))]
            rows = [_RowChange(r, now.get(r, UNDECIDED), ("accepted", note or now.get(r, UNDECIDED)[1]))
                    for r in picks if now.get(r, UNDECIDED)[0] == "pending"]
            return _commit_change(db, run_id, rows, curator=curator, action="bulk")

    def import_decisions(self, run_id: str, rows: Mapping[str, tuple[str | None, str | None, Mapping[str, Any]]],
                         *, curator: str = "") -> int:
        """Apply decisions, notes and annotations read from a file: all of them in one transaction, or none.

        Args:
            run_id: the run.
            rows: {row_id: (decision or None to keep it, note or None to keep it, {field: annotation})}; every
                id must be a pick of the run.
            curator: who imported the file.

        Returns:
            How many rows changed, recorded as one "import" change.
        """
        bad = {d for d, _n, _a in rows.values() if d is not None} - set(DECISIONS)
        if bad:
            raise WorkspaceError(f"Unknown decision {sorted(bad)}; use one of {', '.join(DECISIONS)}.")
        with self._transaction() as db:
            picks = _pick_states(db, run_id)
            unknown = [r for r in rows if r not in picks]
            if unknown:
                raise WorkspaceError(f"Nothing was imported: {len(unknown)} id(s) are not picks of {run_id} "
                                     f"({', '.join(unknown[:5])}). Remove them from the file, or skip unknown ids.")
            now, stored = _decision_states(db, run_id), _annotation_states(db, run_id)
            changes = []
            for rid, (decision, note, given) in rows.items():
                before, old = now.get(rid, UNDECIDED), stored.get(rid, {})
                touched = {f: v for f, v in given.items() if old.get(f) != v}
                changes.append(_RowChange(rid, before, (decision or before[0], before[1] if note is None else note),
                                          before_annotations={f: old.get(f) for f in touched} or None,
                                          after_annotations=touched or None))
            return _commit_change(db, run_id, _changed(changes), curator=curator, action="import")

    def annotations(self, run_id: str) -> pd.DataFrame:
        """Annotations imported for a run's picks: (id, field, value, updated_at), values as the file held them."""
        frame = self._frame("SELECT row_id AS id, field, value, updated_at FROM annotations WHERE run_id = ? "
                            "ORDER BY row_id, field", (run_id,))
        frame["value"] = [json.loads(v) for v in frame["value"]]
        return frame

    def promote(self, run_id: str, candidates: Sequence[str], *, replace: str | None = None,
                curator: str = "") -> int:
        """Select rows the model passed over as curator picks (accepted), in one "promote" change.

        Args:
            run_id: the run.
            candidates: rows to select, none of them selected yet; without `replace` they take open places after
                the last rank, with the reason "curator pick (an open place of the budget)".
            replace: a selected pick that the single candidate replaces: the candidate takes its rank, with the
                reason "curator pick (replacing <id>)"; the replaced pick leaves the selection, rejected.
            curator: who promoted them.

        Returns:
            How many rows changed (the candidates, and the replaced pick).
        """
        with self._transaction() as db:
            picks, now = _pick_states(db, run_id), _decision_states(db, run_id)
            _check_promotion(run_id, picks, candidates, replace)
            if replace is not None:
                rank, reason = picks[replace]["rank"], f"curator pick (replacing {replace})"
                subset = picks[replace]["subset"]  # the replaced pick's subset (a tournament's later round)
            else:
                rank = max((p["rank"] or 0 for p in picks.values()), default=0) + 1
                reason, subset = "curator pick (an open place of the budget)", None
            rows = [_RowChange(c, now.get(c, UNDECIDED), ("accepted", now.get(c, UNDECIDED)[1]), replace or "", {},
                               {"rank": rank + i, "score": None, "reason": reason, "origin": CURATOR_PICK,
                                "subset": subset})
                    for i, c in enumerate(candidates)]
            if replace is not None:
                before = now.get(replace, UNDECIDED)
                rows.append(_RowChange(replace, before, ("rejected", before[1]), candidates[0], picks[replace], {}))
            return _commit_change(db, run_id, rows, curator=curator, action="promote")

    def removed_picks(self, run_id: str) -> set[str]:
        """Rows a curator swapped out of the selection and did not put back: a re-trim should not select them."""
        last: dict[str, tuple[str, str]] = {}
        for row_id, action, pick in self._query(
                "SELECT row_id, action, after_pick FROM decision_history WHERE run_id = ? AND after_pick IS NOT NULL "
                "ORDER BY change_id, rowid", (run_id,)):
            last[row_id] = (action, pick)
        selected = {r for (r,) in self._query("SELECT row_id FROM selection WHERE run_id = ?", (run_id,))}
        return {r for r, (action, pick) in last.items() if action == "promote" and pick == "{}" and r not in selected}

    def undo_last(self, run_id: str, curator: str = "", *, change_id: int | None = None) -> int | None:
        """Revert the latest change of a run that is not undone yet, in one transaction, recorded as an "undo".

        Args:
            run_id: the run.
            curator: who undoes it.
            change_id: the change the curator was shown as the last one; when another change has come since,
                nothing is undone and WorkspaceError says so.

        Returns:
            The change undone (every row of it), or None when there is nothing left to undo.
        """
        with self._transaction() as db:
            latest = _latest_undoable(db, run_id)
            if change_id is not None and latest != change_id:
                raise WorkspaceError("Nothing was undone: decisions changed since the page was drawn (another "
                                     "session, or another tab). Look at the last change now shown, and undo again.")
            if latest is None:
                return None
            history = db.execute("SELECT row_id, before_decision, before_note, swapped, before_pick, "
                                 "before_annotations FROM decision_history WHERE change_id = ? ORDER BY rowid",
                                 (latest,)).fetchall()
            state = _decision_states(db, run_id), _pick_states(db, run_id), _annotation_states(db, run_id)
            _commit_change(db, run_id, [_reverted(h, *state) for h in history], curator=curator, action="undo",
                           undoes=latest)
        return latest

    def last_change(self, run_id: str) -> pd.DataFrame:
        """The history rows of the change `undo_last` would revert (no rows when there is none)."""
        with self._lock:
            latest = _latest_undoable(self._db, run_id)
        return self._frame("SELECT * FROM decision_history WHERE change_id = ? ORDER BY rowid", (latest or -1,))

    def history(self, run_id: str) -> pd.DataFrame:
        """Every change to a run's decisions, one row per row changed, oldest first.

        Columns: change_id (the rows of one action share it), row_id, curator, at, action (decide, bulk, import,
        promote, undo), before/after decision and note, swapped (the other row of a promotion), before/after
        pick and annotations (JSON, empty when the change left them alone), undoes (the change an undo
        reverted) and undone_by (the undo that reverted this change).
        """
        frame = self._frame("SELECT * FROM decision_history WHERE run_id = ? ORDER BY change_id, rowid", (run_id,))
        undone = frame.dropna(subset=["undoes"]).groupby("undoes")["change_id"].min()
        frame["undone_by"] = frame["change_id"].map(undone).astype("Int64")
        frame["undoes"] = frame["undoes"].astype("Int64")
        return frame

    def mark_exported(self, run_id: str, row_ids: Iterable[str]) -> None:
        """Remember that these picks left the studio in an export: a later re-trim keeps them selected."""
        now = _now()
        self._write("INSERT OR IGNORE INTO exported VALUES (?, ?, ?)", [(run_id, str(r), now) for r in row_ids])

    def kept_picks(self, run_id: str) -> list[tuple[str, int, str]]:
        """Picks of the current selection that a curator decided, promoted or exported, by rank.

        Returns:
            (row_id, subset, reason) of each; re-trimming the run (after a retry) never drops them.
        """
        return [tuple(r) for r in self._query(
            "SELECT s.row_id, COALESCE(s.subset, rr.subset, -1), COALESCE(s.reason, '') FROM selection s "
            "LEFT JOIN run_rows rr ON rr.run_id = s.run_id AND rr.row_id = s.row_id "
            f"WHERE s.run_id = ? AND (s.origin = '{CURATOR_PICK}' OR EXISTS (SELECT 1 FROM decisions d "
            "WHERE d.run_id = s.run_id AND d.row_id = s.row_id AND d.decision != 'pending') OR EXISTS (SELECT 1 "
            "FROM exported e WHERE e.run_id = s.run_id AND e.row_id = s.row_id)) ORDER BY s.rank", (run_id,))]

    def decisions(self, run_id: str) -> pd.DataFrame:
        return self._frame(
            "SELECT row_id AS id, decision, note, updated_at FROM decisions WHERE run_id = ? ORDER BY row_id",
            (run_id,),
        )


@dataclass
class _RowChange:
    """One row's part of a change: its decision and note before and after, and the pick or annotations it touched.

    A pick is {"rank", "score", "reason", "origin"}, or {} for a row not selected; annotations are {field: value}
    (None: no such annotation). None for either means the change leaves it alone.
    """

    row_id: str
    before: tuple[str, str]
    after: tuple[str, str]
    swapped: str = ""
    before_pick: dict | None = None
    after_pick: dict | None = None
    before_annotations: dict | None = None
    after_annotations: dict | None = None


def _changed(rows: list[_RowChange]) -> list[_RowChange]:
    """The rows whose change would change something."""
    return [r for r in rows if (r.before, r.before_pick, r.before_annotations) != (r.after, r.after_pick,
                                                                                   r.after_annotations)]


def _commit_change(db: sqlite3.Connection, run_id: str, rows: list[_RowChange], *, curator: str, action: str,
                   undoes: int | None = None) -> int:
    """Write each row's after state and record the rows as one change of the history (caller's transaction).

    Returns:
        How many rows the change covers (0: nothing was written or recorded).
    """
    if not rows:
        return 0
    (change_id,) = db.execute("SELECT COALESCE(MAX(change_id), 0) + 1 FROM decision_history").fetchone()
    now = _now()
    db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, row_id) DO UPDATE SET "
                   "decision = excluded.decision, note = excluded.note, updated_at = excluded.updated_at",
                   [(run_id, r.row_id, *r.after, now) for r in rows if r.after != r.before])
    for r in rows:
        if r.after_pick:
            db.execute(f"INSERT OR REPLACE INTO selection (run_id, row_id, {', '.join(_PICK_FIELDS)}) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?)", (run_id, r.row_id, *(r.after_pick.get(k) for k in _PICK_FIELDS)))
        elif r.after_pick is not None:
            db.execute("DELETE FROM selection WHERE run_id = ? AND row_id = ?", (run_id, r.row_id))
        for field, value in (r.after_annotations or {}).items():
            db.execute("DELETE FROM annotations WHERE run_id = ? AND row_id = ? AND field = ?",
                       (run_id, r.row_id, field))
            if value is not None:
                db.execute("INSERT INTO annotations VALUES (?, ?, ?, ?, ?)",
                           (run_id, r.row_id, field, json.dumps(plain(value), ensure_ascii=False), now))
    db.executemany(f"INSERT INTO decision_history VALUES ({', '.join('?' * 16)})", [
        (change_id, run_id, r.row_id, curator, now, action, r.before[0], r.after[0], r.before[1], r.after[1],
         r.swapped, _json_or_null(r.before_pick), _json_or_null(r.after_pick),
         _json_or_null(r.before_annotations), _json_or_null(r.after_annotations), undoes) for r in rows])
    return len(rows)


_PICK_FIELDS = ("rank", "score", "reason", "origin", "subset")  # subset: None in history written before it


def _json_or_null(value: dict | None) -> str | None:
    return None if value is None else json.dumps(plain(value), ensure_ascii=False, sort_keys=True)


def _decision_states(db: sqlite3.Connection, run_id: str) -> dict[str, tuple[str, str]]:
    """(decision, note) of each row with a stored decision; a row missing here is ("pending", "")."""
    return {r: (d or "pending", n or "") for r, d, n in db.execute(
        "SELECT row_id, decision, note FROM decisions WHERE run_id = ?", (run_id,))}


def _pick_states(db: sqlite3.Connection, run_id: str) -> dict[str, dict]:
    """Each selected row's {"rank", "score", "reason", "origin", "subset"}."""
    rows = db.execute(f"SELECT row_id, {', '.join(_PICK_FIELDS)} FROM selection WHERE run_id = ?", (run_id,))
    return {r[0]: dict(zip(_PICK_FIELDS, r[1:])) for r in rows}


def _annotation_states(db: sqlite3.Connection, run_id: str) -> dict[str, dict[str, Any]]:
    """{row_id: {field: value}} of a run's annotations."""
    out: dict[str, dict[str, Any]] = {}
    for row_id, field, value in db.execute("SELECT row_id, field, value FROM annotations WHERE run_id = ? "
                                           "ORDER BY row_id, field", (run_id,)):
        out.setdefault(row_id, {})[field] = json.loads(value)
    return out


def _latest_undoable(db: sqlite3.Connection, run_id: str) -> int | None:
    """The latest change of a run that is neither an undo nor undone already."""
    return db.execute(
        "SELECT MAX(change_id) FROM decision_history WHERE run_id = ? AND action != 'undo' AND change_id NOT IN "
        "(SELECT undoes FROM decision_history WHERE run_id = ? AND undoes IS NOT NULL)", (run_id, run_id)
    ).fetchone()[0]


def _reverted(history: tuple, decisions: dict[str, tuple[str, str]], picks: dict[str, dict],
              annotations: dict[str, dict[str, Any]]) -> _RowChange:
    """The change that puts one row of a recorded change back as it was before it, from its state now."""
    row_id, decision, note, swapped, pick, noted = history
    pick = None if pick is None else json.loads(pick)
    noted = None if noted is None else json.loads(noted)
    return _RowChange(row_id, decisions.get(row_id, UNDECIDED), (decision, note), swapped or "",
                      None if pick is None else picks.get(row_id, {}), pick,
                      None if noted is None else {f: annotations.get(row_id, {}).get(f) for f in noted}, noted)


def _check_promotion(run_id: str, picks: dict[str, dict], candidates: Sequence[str], replace: str | None) -> None:
    """Refuse a promotion that does not fit the selection as it is now (nothing is changed then)."""
    if not candidates or len(set(candidates)) != len(candidates):
        raise WorkspaceError("Name each candidate to promote once (at least one).")
    taken = [c for c in candidates if c in picks]
    if taken:
        raise WorkspaceError(f"Already selected in {run_id}: {', '.join(taken[:5])}. Promote a row the run has not "
                             "selected.")
    if replace is not None and (replace not in picks or len(candidates) != 1):
        raise WorkspaceError(f"{replace} is not a pick of {run_id}, or more than one candidate was named to replace "
                             "it: swap one selected pick for one candidate.")


def _chunks(values: list, size: int = 500) -> Iterator[list]:
    """Consecutive slices of at most `size` values, for IN (...) lists within SQLite's bound-parameter limit."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _insert_calls(db: sqlite3.Connection, run_id: str, subset: int, calls: list[dict], *, first_attempt: int,
                  kind: str = "run") -> None:
    """Append calls to the ledger (inside the caller's transaction), each with its cost and origin."""
    db.executemany(
        "INSERT INTO calls (run_id, subset, attempt, prompt_tokens, completion_tokens, elapsed, ok, created_at, "
        "answer_format, cost, cached, kind, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(run_id, subset, first_attempt + i, c.get("prompt_tokens", 0), c.get("completion_tokens", 0),
          c.get("elapsed", 0.0), int(c.get("ok", True)), _now(), c.get("answer_format"), c.get("cost"),
          int(bool(c.get("cached"))), kind, c.get("model")) for i, c in enumerate(calls)],
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
