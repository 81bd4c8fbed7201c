"""The Review page's logic: editor edits -> decisions, bulk decisions, counters against the budget, pages of the
filtered picks, and saving decisions without overwriting what another session decided meanwhile. Undo, history,
imports and promotions are in `studio/curate.py`."""

from __future__ import annotations

import hashlib
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectllm_core.pool.load import format_text
from selectllm_core.select.alignment import check_reasons
from selectllm_core.store import CURATOR_PICK, Store
from selectllm_core.studio.run_view import reason_fit

DECISION_OPTIONS = ("pending", "accepted", "rejected")
PAGE_SIZES = (50, 100, 250)  # rows per page the table offers
DEFAULT_PAGE_SIZE = 100
Decision = tuple[str, str]  # (decision, note)


def decisions_from_edits(shown: pd.DataFrame,
                         edited_rows: Mapping[Any, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Turn st.data_editor's `edited_rows` into decisions for the store.

    Args:
        shown: the frame given to the editor (columns id, decision, note; positional rows).
        edited_rows: {row position: {column: new value}} from the editor's session state.

    Returns:
        {row_id: (decision, note)} for the rows whose decision or note changed.
    """
    out: dict[str, tuple[str, str]] = {}
    for pos, change in edited_rows.items():
        row = shown.iloc[int(pos)]
        decision = change.get("decision", row["decision"]) or "pending"
        note = change.get("note", row["note"])
        note = "" if note is None or (isinstance(note, float) and math.isnan(note)) else str(note)
        if decision not in DECISION_OPTIONS:
            raise ValueError(f"unknown decision {decision!r}")
        if (decision, note) != (row["decision"], row["note"]):
            out[str(row["id"])] = (decision, note)
    return out


def bulk_decisions(rows: pd.DataFrame, decision: str) -> dict[str, tuple[str, str]]:
    """The same decision for every given row, keeping each row's note."""
    return {str(i): (decision, str(n or "")) for i, n in zip(rows["id"], rows["note"])}


def budget_counters(selection: pd.DataFrame, budget: int) -> dict[str, int]:
    """Counts a curator checks against the budget."""
    counts = selection["decision"].value_counts() if not selection.empty else pd.Series(dtype=int)
    accepted = int(counts.get("accepted", 0))
    return {"budget": budget, "picked": len(selection), "accepted": accepted,
            "rejected": int(counts.get("rejected", 0)), "pending": int(counts.get("pending", 0)),
            "to_go": max(0, budget - accepted)}


def budget_message(c: dict[str, int]) -> str:
    """What the counters mean for the budget, in words (from `budget_counters`)."""
    head = f"{c['accepted']:,} of {c['budget']:,} accepted"
    if c["to_go"] == 0:
        return f"{head}: the budget is filled."
    if c["pending"] >= c["to_go"]:
        return f"{head}; {c['to_go']:,} more needed, from {c['pending']:,} picks still to review."
    left = {0: "no picks are", 1: "only 1 pick is"}.get(c["pending"], f"only {c['pending']:,} picks are")
    return (f"{head}; {c['to_go']:,} more needed to fill the budget, but {left} left to review. Accept rejected "
            "picks again, fill the open places from the runners-up, or start a run with a larger budget.")


def filter_picks(picks: pd.DataFrame, clusters: Sequence[int], statuses: Sequence[str]) -> pd.DataFrame:
    """The picks in any of these clusters with any of these decisions; an empty choice keeps every pick."""
    keep = picks["cluster"].isin(clusters) | (not clusters)
    return picks[keep & (picks["decision"].isin(statuses) | (not statuses))]


def stored_decisions(store: Store, run_id: str, row_ids: Iterable[str]) -> dict[str, Decision]:
    """(decision, note) of each row as the workspace holds it now ("pending", "" for an undecided row)."""
    now = store.decisions(run_id).set_index("id")
    return {r: (now.at[r, "decision"], now.at[r, "note"]) if r in now.index else ("pending", "") for r in row_ids}


def stale_rows(edits: Mapping[str, Decision], seen: Mapping[str, Decision], now: Mapping[str, Decision]) -> list[str]:
    """Rows another session changed since they were shown: stored now as neither what was seen nor the edit."""
    return [r for r, edit in edits.items() if now[r] not in (edit, seen[r])]


def save_edits(store: Store, run_id: str, edits: Mapping[str, Decision], seen: Mapping[str, Decision], *,
               curator: str = "", action: str = "decide") -> list[tuple[str, str, str]]:
    """Save decisions made over rows as they were shown, skipping the rows another session changed since.

    Args:
        store: the workspace.
        run_id: the run under review.
        edits: {row_id: (decision, note)} the curator made.
        seen: {row_id: (decision, note)} as the page showed each edited row.
        curator: who made them, for the history ("" when no name was given).
        action: how the history names the change: "decide" (the table) or "bulk" (a bulk button).

    Returns:
        (row_id, decision, note) of each skipped row, as the workspace holds it now.
    """
    now = stored_decisions(store, run_id, edits)
    stale = stale_rows(edits, seen, now)
    store.set_decisions(run_id, {r: edit for r, edit in edits.items() if r not in stale}, curator=curator,
                        action=action)
    return [(r, *now[r]) for r in stale]


def bulk_edits(store: Store, run_id: str, drawn: Mapping[str, Decision],
               decision: str) -> tuple[dict[str, Decision], dict[str, Decision]]:
    """One decision for the pending picks as drawn, as (edits, seen) for `save_edits`.

    A pick still pending keeps its latest note; a pick another session decided since is seen as drawn, so
    `save_edits` leaves that decision alone and reports it.
    """
    seen = {r: now if now[0] == "pending" else drawn[r] for r, now in stored_decisions(store, run_id, drawn).items()}
    return {r: (decision, note) for r, (_d, note) in seen.items()}, seen


def stale_message(instruction: str, decision: str, note: str) -> str:
    """Why an edit of this pick was not saved, and what to do (plain text: escape it for markdown)."""
    return (f"Not saved: another session changed this pick after the table was shown "
            f"(now {decision}{', note: ' + note if note else ''}): "
            f'"{textwrap.shorten(instruction, 90)}". The table shows its current decision; decide it again to '
            "change it.")


# -- pages of the filtered picks ---------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """One page of the filtered picks: its number (from 1), the rows per page, and how many rows the filters keep."""

    number: int
    size: int
    rows: int

    @property
    def count(self) -> int:
        """How many pages there are (at least 1, so an empty list still has a page to show)."""
        return max(1, math.ceil(self.rows / self.size))

    @property
    def start(self) -> int:
        return (self.number - 1) * self.size

    @property
    def stop(self) -> int:
        return min(self.rows, self.start + self.size)

    def of(self, frame: pd.DataFrame) -> pd.DataFrame:
        """This page's rows of the filtered frame."""
        return frame.iloc[self.start:self.stop]

    def caption(self, picks: int) -> str:
        """Which rows the table shows: "Rows 201–300 of 10,000", with the count of picks when filters keep fewer."""
        if self.rows == 0:
            return f"No rows: the filters keep none of the {picks:,} picks."
        shown = f"Rows {self.start + 1:,}–{self.stop:,} of {self.rows:,}"
        return shown if self.rows == picks else f"{shown} filtered ({picks:,} picks in all)"


def page_of(rows: int, *, size: int, number: int) -> Page:
    """The page with this number, or the nearest one there is (filters that keep fewer rows shorten the list)."""
    if size < 1:
        raise ValueError(f"rows per page must be at least 1, got {size}")
    last = max(1, math.ceil(rows / size))
    return Page(min(max(1, int(number)), last), size, rows)


def page_holding(row: int, *, size: int) -> int:
    """The number of the page of this size that holds a row (0-based position): a new page size keeps it in view."""
    return max(0, row) // size + 1


def page_key(row_ids: Iterable[str]) -> str:
    """A short fingerprint of the rows a page shows: the table editor starts fresh whenever they change."""
    return hashlib.blake2b("\x1f".join(map(str, row_ids)).encode(), digest_size=6).hexdigest()


def with_decisions(picks: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The picks with the decision and note the workspace holds now.

    Args:
        picks: the run's selection as read earlier (`Store.selection`); its rows, texts and ranks still hold.
        decisions: `Store.decisions` now (id, decision, note); picks without a row are pending, with no note.

    Returns:
        The picks (same rows, same order) with current decision and note columns.
    """
    now = decisions.drop_duplicates("id").set_index("id")
    return picks.assign(decision=picks["id"].map(now["decision"]).fillna("pending").astype(str),
                        note=picks["id"].map(now["note"]).fillna("").astype(str))


def bulk_scope(clusters: Sequence[int], *, whole: bool | None) -> str:
    """What a bulk button says it decides: the picks shown, or this page or all pages, after the clusters chosen.

    Args:
        clusters: the clusters the filter keeps (none: every cluster).
        whole: True for every page of the filtered picks, False for this page, None when they fit one page.
    """
    where = f"cluster {', '.join(map(str, clusters))}" if clusters else ""
    if whole is None:
        return where or "shown"
    part = "all pages" if whole else "this page"
    return f"{where}, {part}" if where else part


def reason_fits(store: Store, run_id: str, rows: pd.DataFrame, *, embedder: Any, cache: Any = None) -> list[str]:
    """Whether each shown pick's reason describes it, checked against its subset's candidates by embedding.

    Args:
        store: the workspace.
        rows: picks as `Store.selection` gives them (id, subset, origin, reason).
        embedder: the run's embedding model; cache: the embedding cache (the candidates' vectors are in it).

    Returns:
        Per row, as the Select page's subset table says it: "✓ its pick", "⚠ fits #n better" (n: the id the
        model saw), "names no candidate"; "" for a row without a model reason (a curator pick, an ids-only
        answer) or without a stored subset.
    """
    subsets = {int(s) for s in rows["subset"].dropna()} if "subset" in rows else set()
    if not subsets:
        return [""] * len(rows)
    results = store.subset_results(run_id, subsets)
    members = list(dict.fromkeys(m for r in results for m in r["members"]))
    texts = {rid: format_text(row.instruction, row.input) for rid, row in store.row_texts(run_id, members).iterrows()}
    results = [r for r in results if all(m in texts for m in r["members"])]
    checks = check_reasons(results, texts, embedder=embedder, cache=cache)
    shown = {r["subset"]: {m: n for n, m in enumerate(r["members"], start=1)} for r in results}  # the ids seen
    out = []
    for rid, subset, origin in zip(rows["id"], rows["subset"], rows["origin"]):
        if pd.isna(subset) or origin == CURATOR_PICK or int(subset) not in shown:
            out.append("")
        else:
            out.append(reason_fit(checks.of(int(subset)).get(rid), shown[int(subset)]))
    return out
