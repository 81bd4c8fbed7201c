"""The curator's control over decisions, as plain functions the Review page and the CLI share.

- the history: the last change in words (what "Undo last change" reverts), the history as a table and a CSV;
- importing decisions, notes or annotations by id from a CSV / JSONL file: a preview first, then the whole file
  in one transaction or nothing;
- promoting rows the model passed over: a swap for a pick of the same subset, or open places of the budget
  filled from the runners-up. A promoted row is a "curator pick", accepted.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from selectllm_core.errors import ConfigError
from selectllm_core.pool.readers import RawTable, parse_bytes
from selectllm_core.runs.export import CSV_ENCODING, neutralize_formulas, restore_formulas
from selectllm_core.store import DECISIONS, Store

UNNAMED = "(unnamed)"
# Columns of an exported selection that are the pool's or the run's, never annotations.
RESERVED = frozenset({"id", "decision", "note", "instruction", "input", "text", "cluster", "subset", "reason",
                      "origin", "run_id", "rank", "score", "updated_at"})
TRIMMED = "model pick, left out by the budget"
PASSED_OVER = "passed over by the model"
FAILED = "subset without model picks"  # failed, skipped or unreachable: every row of it is a candidate
_KIND_ORDER = {TRIMMED: 0, FAILED: 1, PASSED_OVER: 2}


# -- the history ---------------------------------------------------------------------------------
def curator_label(name: object) -> str:
    """A curator's name as shown: "(unnamed)" for an empty one."""
    return str(name) if isinstance(name, str) and name.strip() else UNNAMED


def clock(at: str, *, full: bool = False) -> str:
    """A stored time (ISO, UTC) in local time: "14:02" today (unless `full`), else "2026-03-01 14:02"."""
    local = datetime.fromisoformat(at).astimezone()
    today = not full and local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M" if today else "%Y-%m-%d %H:%M")


def plural(n: int, word: str) -> str:
    """ "1 pick", "12 picks"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def change_summary(rows: pd.DataFrame) -> str:
    """What one change did, in a few words ("accepted 12 picks", "swapped 1 pick for a passed-over candidate").

    Args:
        rows: the history rows of one change (`Store.last_change`, or one change_id of `Store.history`).
    """
    action = rows["action"].iloc[0]
    if action == "undo":
        return f"undid change {int(rows['undoes'].iloc[0])}"
    if action == "promote":
        out = int((rows["after_pick"] == "{}").sum())
        added = int((rows["before_pick"] == "{}").sum())
        if out:
            return f"swapped {plural(out, 'pick')} for a passed-over candidate"
        return f"added {plural(added, 'curator pick')}"
    moved = rows[rows["before_decision"] != rows["after_decision"]]
    words = {"accepted": "accepted", "rejected": "rejected", "pending": "set back to pending"}
    parts = [f"{words[d]} {plural(n, 'pick')}" for d, n in moved["after_decision"].value_counts().items()]
    notes = int((rows["before_note"].fillna("") != rows["after_note"].fillna("")).sum())
    if notes:
        parts.append(f"changed {plural(notes, 'note')}")
    cells = sum(len(json.loads(a)) for a in rows["after_annotations"].dropna())
    if cells:
        parts.append(f"stored {plural(cells, 'annotation')}")
    return ("imported: " if action == "import" else "") + (", ".join(parts) or "no change")


def describe_change(rows: pd.DataFrame) -> str:
    """A change with who made it and when: "accepted 12 picks (Ana, 14:02)", "(unnamed, 14:02)" without a name."""
    who = curator_label(rows["curator"].iloc[0]).removeprefix("(").removesuffix(")")
    return f"{change_summary(rows)} ({who}, {clock(rows['at'].iloc[0])})"


def undo_offer(store: Store, run_id: str) -> tuple[int | None, str]:
    """The change "Undo last change" would revert, and the button's help ("Undo: accepted 12 picks (Ana, 14:02)")."""
    rows = store.last_change(run_id)
    if rows.empty:
        return None, _nothing_to_undo(store, run_id)
    return int(rows["change_id"].iloc[0]), f"Undo: {describe_change(rows)}"


def _nothing_to_undo(store: Store, run_id: str) -> str:
    if store.history(run_id).empty:
        return "Nothing to undo: no decision of this run has been changed yet."
    return "Nothing left to undo: every change of this run has been undone (see the history)."


def undo(store: Store, run_id: str, *, curator: str = "", change_id: int | None = None) -> str:
    """Undo the last change (only `change_id`, when given: the one the curator was shown) and say what it was."""
    rows = store.last_change(run_id)
    if rows.empty:
        return _nothing_to_undo(store, run_id)
    what = describe_change(rows)
    store.undo_last(run_id, curator, change_id=change_id)
    return f"Undone: {what}."


def history_changes(store: Store, run_id: str) -> pd.DataFrame:
    """One line per change, newest first: change, at (local time), curator, what it did, undone."""
    history = store.history(run_id)
    lines = [{"change": int(cid), "at": clock(rows["at"].iloc[0], full=True),
              "curator": curator_label(rows["curator"].iloc[0]), "what": change_summary(rows),
              "undone": "" if pd.isna(rows["undone_by"].iloc[0]) else f"by change {int(rows['undone_by'].iloc[0])}"}
             for cid, rows in history.groupby("change_id", sort=True)]
    return pd.DataFrame(lines, columns=["change", "at", "curator", "what", "undone"]).iloc[::-1].reset_index(drop=True)


def history_csv(store: Store, run_id: str) -> bytes:
    """The full history of a run as a spreadsheet-safe CSV (UTF-8 with BOM), one line per row changed.

    The curator column holds the name as recorded ("" when none was given); each row's instruction follows its id.
    """
    history = store.history(run_id)
    texts = store.row_texts(run_id, history["row_id"])
    history.insert(3, "instruction", history["row_id"].map(texts["instruction"]).fillna(""))
    text = neutralize_formulas(history).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    return text.encode(CSV_ENCODING)


# -- importing decisions and annotations ---------------------------------------------------------
@dataclass
class ImportPlan:
    """What importing a file would change, worked out before anything is written.

    rows holds the file's values for picks of the run: {id: (decision or None, note or None, {field: value})};
    None (an empty cell) keeps what is stored.
    """

    name: str
    rows: dict[str, tuple[str | None, str | None, dict[str, Any]]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # the annotation columns that change something
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("accepted", "rejected", "pending", "notes", "annotations", "unchanged"), 0))

    @property
    def unknown_message(self) -> str:
        """The ids that are not picks of the run: the first few, and how many in all."""
        shown = ", ".join(self.unknown[:5]) + (f" and {len(self.unknown) - 5} more" if len(self.unknown) > 5 else "")
        return f"{plural(len(self.unknown), 'id')} of the file {'is' if len(self.unknown) == 1 else 'are'} not " \
               f"picks of this run: {shown}"

    def summary(self) -> str:
        """What applying would change, in a sentence or two."""
        c = self.counts
        fields = f" ({', '.join(self.fields)})" if self.fields else ""
        parts = [text for n, text in (
            (c["accepted"], f"accepts {plural(c['accepted'], 'pick')}"),
            (c["rejected"], f"rejects {plural(c['rejected'], 'pick')}"),
            (c["pending"], f"sets {plural(c['pending'], 'pick')} back to pending"),
            (c["notes"], f"changes {plural(c['notes'], 'note')}"),
            (c["annotations"], f"stores {plural(c['annotations'], 'annotation')}{fields}")) if n]
        does = ", ".join(parts[:-1]) + " and " * (len(parts) > 1) + parts[-1] if parts else "changes nothing"
        same = f" {plural(c['unchanged'], 'row')} of the file change nothing." if c["unchanged"] and parts else ""
        return f"{self.name}: {plural(len(self.rows), 'row')} for picks of this run. Applying it {does}.{same}"

    def ready(self, *, skip_unknown: bool) -> bool:
        """Whether applying would go ahead."""
        return not self.problems and bool(self.rows) and (skip_unknown or not self.unknown)


def plan_import(store: Store, run_id: str, data: bytes, name: str) -> ImportPlan:
    """Read a file of decisions, notes or annotations by id and work out what it would change.

    Args:
        store: the workspace.
        run_id: the run whose picks the file decides.
        data: the file's bytes (CSV, TSV, JSONL or JSON, optionally gzip; any encoding the pool loader reads).
        name: the file name (its extension gives the format).

    Returns:
        The plan: rows to apply, unknown ids, problems (bad decision values with their line), counts.
        A column other than id, decision, note and the export's own columns is an annotation (e.g.
        response); a column the pool has too is stored only where the file's value differs from it.
    """
    table = parse_bytes(data, name)
    frame = restore_formulas(table.frame) if table.fmt in ("csv", "tsv") else table.frame
    columns = {str(c).strip().lower(): c for c in reversed(frame.columns)}
    if "id" not in columns:
        raise ConfigError(f"{name} has no id column. Import a file with an id column (an export of this run has "
                          "one) and any of decision, note and annotation columns.")
    plan = ImportPlan(name, notes=list(table.notes), problems=[message for _n, message in table.bad_rows])
    plan.fields = [c for c in frame.columns if str(c).strip().lower() not in RESERVED]
    if not plan.fields and "decision" not in columns and "note" not in columns:
        plan.problems.append(f"{name} has nothing to import besides ids: add a decision, note or annotation "
                             "column (e.g. response).")
    picks = store.selection(run_id).set_index("id")
    first_line: dict[str, str] = {}
    for i, record in enumerate(frame.to_dict("records")):
        where = _where(table, i)
        rid = _text(record.get(columns["id"]))
        if rid is None:
            plan.problems.append(f"{where}: the id is empty.")
            continue
        if rid in first_line:
            plan.problems.append(f"{where}: id {rid} again (first on {first_line[rid]}); give each id once.")
            continue
        first_line[rid] = where
        decision = _decision(record.get(columns.get("decision")), where, rid, plan.problems)
        note = _text(record.get(columns.get("note")), strip=False)
        if rid not in picks.index:
            plan.unknown.append(rid)
            continue
        current = picks.loc[rid]
        given = {f: v for f in plan.fields if (v := _value(record.get(f))) is not None
                 and not _same(v, current.get(f))}
        plan.rows[rid] = (decision, note, given)
        _tally(plan.counts, current, decision, note, given)
    plan.fields = [f for f in plan.fields if any(f in given for _d, _n, given in plan.rows.values())]
    return plan


def apply_import(store: Store, run_id: str, plan: ImportPlan, *, curator: str = "", skip_unknown: bool = False) -> str:
    """Apply a plan in one transaction (the history records it as one "import" change); say what was done.

    Raises ConfigError, applying nothing, when the file has problems, or unknown ids and `skip_unknown` is off.
    """
    if plan.problems:
        more = f"; and {len(plan.problems) - 8} more" if len(plan.problems) > 8 else ""
        raise ConfigError(f"{plan.name}: nothing was imported. {' '.join(plan.problems[:8])}{more} Fix the file "
                          f"and import it again (decision must be one of {', '.join(DECISIONS)}, or empty).")
    if plan.unknown and not skip_unknown:
        raise ConfigError(f"{plan.name}: nothing was imported: {plan.unknown_message}. Remove those rows, or skip "
                          f"unknown ids (--skip-unknown; in the app, tick \"Skip unknown ids\") to import the other "
                          f"{plural(len(plan.rows), 'row')}.")
    changed = store.import_decisions(run_id, plan.rows, curator=curator)
    skipped = f"; skipped {plural(len(plan.unknown), 'unknown id')}" if plan.unknown else ""
    return f"Imported {plan.name}: {plural(changed, 'pick')} changed{skipped}."


def _where(table: RawTable, i: int) -> str:
    """Where a row of the file is: its line (text formats) or its record number."""
    return f"line {table.lines[i]}" if table.lines else f"record {table.rows[i]}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _text(value: object, *, strip: bool = True) -> str | None:
    """A cell as text; None for an empty cell."""
    if _missing(value):
        return None
    return str(value).strip() if strip else str(value)


def _value(value: object) -> Any:
    """An annotation as the file holds it (JSON values keep their type); None for an empty cell."""
    return None if _missing(value) else value


def _decision(value: object, where: str, rid: str, problems: list[str]) -> str | None:
    """A decision cell, case-insensitive; a value that is not a decision becomes a problem naming its line."""
    text = _text(value)
    if text is None:
        return None
    if text.lower() not in DECISIONS:
        problems.append(f"{where} (id {rid}): decision {text!r} is not one of {', '.join(DECISIONS)}.")
        return None
    return text.lower()


def _same(value: object, current: object) -> bool:
    """Whether an annotation equals the value the pick holds now (a pool column read back as text counts)."""
    if isinstance(current, list | dict):
        return value == current
    return not _missing(current) and (value == current or str(value) == str(current))


def _tally(counts: dict[str, int], current: pd.Series, decision: str | None, note: str | None,
           given: dict[str, Any]) -> None:
    """Count what one row of the file changes."""
    moves = decision is not None and decision != current["decision"]
    notes = note is not None and note != current["note"]
    if moves:
        counts[decision] += 1
    counts["notes"] += notes
    counts["annotations"] += len(given)
    counts["unchanged"] += not (moves or notes or given)


# -- promoting passed-over candidates ------------------------------------------------------------
def candidates(store: Store, run_id: str, *, subset: int | None = None, limit: int | None = None) -> pd.DataFrame:
    """The rows of the run's subsets that the selection does not hold, best runners-up first.

    Args:
        store: the workspace.
        run_id: the run.
        subset: only this subset's rows.
        limit: at most this many rows (the first ones).

    Returns:
        id, subset, kind, decision, instruction, input. kind: "model pick, left out by the budget" (the model
        picked it, the trim to the budget left it out; these come first, in the order the trim takes picks),
        "subset without model picks" (every row of a subset that failed, was skipped, or never reached the
        model), "passed over by the model" (ok subsets). Rejected rows (a pick swapped out) come last.
    """
    selected = store.selection(run_id)
    taken, rejected = set(selected["id"]), set(store.decisions(run_id).query("decision == 'rejected'")["id"])
    rows = []
    for result in store.subset_results(run_id):
        if subset is not None and result["subset"] != subset:
            continue
        ok = result["status"] == "ok"
        picked = {r: i for i, r in enumerate(result["picks"])} if ok else {}
        for position, rid in enumerate(result["members"]):
            if rid not in taken:
                kind = TRIMMED if rid in picked else PASSED_OVER if ok else FAILED
                order = (rid in rejected, _KIND_ORDER[kind], picked.get(rid, 0), result["subset"], position)
                rows.append((order, rid, result["subset"], kind, "rejected" if rid in rejected else "pending"))
    rows = sorted(rows)[:limit]
    frame = pd.DataFrame([r[1:] for r in rows], columns=["id", "subset", "kind", "decision"])
    texts = store.row_texts(run_id, frame["id"])
    return frame.join(texts, on="id")


def swap_candidates(store: Store, run_id: str, pick_id: str) -> pd.DataFrame:
    """The rows of a pick's subset that the selection does not hold (see `candidates`)."""
    picks = store.selection(run_id).set_index("id")
    if pick_id not in picks.index:
        raise ConfigError(f"{pick_id} is not a pick of {run_id}. Swap one of the picks `selectllm status` lists.")
    subset = picks.at[pick_id, "subset"]
    if pd.isna(subset):
        raise ConfigError(f"The pick {pick_id} belongs to no subset of {run_id} (a method without subsets chose "
                          "it): there are no passed-over candidates to swap it for.")
    return candidates(store, run_id, subset=int(subset))


def open_places(selection: pd.DataFrame, budget: int) -> int:
    """Places of the budget no pick fills: the budget minus the picks that are not rejected."""
    return max(0, budget - int((selection["decision"] != "rejected").sum()))


def candidate_label(row: pd.Series | dict) -> str:
    """A candidate as a choice in a list: its instruction (cut), subset and kind."""
    rejected = " · rejected earlier" if row.get("decision") == "rejected" else ""
    return f"{textwrap.shorten(str(row['instruction']), 110)} · subset {row['subset']} · {row['kind']}{rejected}"


def promote(store: Store, run_id: str, candidate: str, *, replace: str | None = None, curator: str = "") -> str:
    """Make a passed-over row a curator pick (accepted), in place of a pick of its subset or in an open place.

    Args:
        store: the workspace.
        run_id: the run.
        candidate: a row of one of the run's subsets that the selection does not hold.
        replace: a pick of the same subset that leaves the selection (recorded as rejected); without it the
            candidate fills an open place of the budget.
        curator: who promotes it.

    Returns:
        What was done, in a sentence.
    """
    selection = store.selection(run_id)
    if replace is None:
        budget = int(store.get_run(run_id)["params"].get("budget", len(selection)))
        fill(store, run_id, [candidate], budget=budget, curator=curator)
        into = store.row_texts(run_id, [candidate]).at[candidate, "instruction"]
        return (f"Added 1 curator pick (accepted) in an open place of the budget: \"{textwrap.shorten(into, 70)}\"; "
                f"{plural(open_places(store.selection(run_id), budget), 'open place')} left.")
    pool = swap_candidates(store, run_id, replace)
    if candidate not in set(pool["id"]):
        raise ConfigError(f"{candidate} is not a row of the subset of {replace} that the selection leaves out. "
                          "Swap a pick only for a row the model passed over in its own subset.")
    store.promote(run_id, [candidate], replace=replace, curator=curator)
    out = selection.set_index("id").at[replace, "instruction"]
    into = pool.set_index("id").at[candidate, "instruction"]
    return (f"Swapped: \"{textwrap.shorten(out, 70)}\" left the selection (recorded as rejected); "
            f"\"{textwrap.shorten(into, 70)}\" takes its place as a curator pick, accepted.")


def fill(store: Store, run_id: str, chosen: list[str], *, budget: int, curator: str = "") -> str:
    """Fill open places of the budget with runners-up, as curator picks (accepted), in one change."""
    room = open_places(store.selection(run_id), budget)
    if len(chosen) > room:
        raise ConfigError(f"The selection of {run_id} has {plural(room, 'open place')} (budget {budget}, minus the "
                          f"picks not rejected), not {len(chosen)}. Swap a pick instead (--replace PICK_ID), or "
                          "reject picks first.")
    known = set(candidates(store, run_id)["id"])
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"Not rows of {run_id}'s subsets that the selection leaves out: {', '.join(unknown[:5])}. "
                          "Promote a row the model was shown and did not pick (see `selectllm status`).")
    store.promote(run_id, chosen, curator=curator)
    return f"Added {plural(len(chosen), 'curator pick')} (accepted) in open places of the budget."
