"""Review: accept or reject every pick (one by one, per cluster, in bulk), against the budget and on the map."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import streamlit as st

from app_pages import _shared as shared
from selectllm_core.errors import SelectLLMError
from selectllm_core.studio import ui_logic

ss, store = st.session_state, shared.store()
st.title("Review")
run_id = shared.require_run()
try:
    picks = store.selection(run_id)
    budget = int(store.get_run(run_id)["params"]["budget"])
except SelectLLMError:
    st.info("The run is still preparing. Its picks appear here as soon as they are chosen.")
    st.stop()
if picks.empty:
    st.info("No picks yet: the run has not finished a subset, or every subset failed (see the Select page).")
    st.stop()

c = ui_logic.budget_counters(picks, budget)
cols = st.columns(5)
for col, (label, key) in zip(cols, [("Budget", "budget"), ("Picked", "picked"), ("Accepted", "accepted"),
                                    ("Rejected", "rejected"), ("Still to review", "pending")]):
    col.metric(label, f"{c[key]:,}")
st.progress(min(1.0, c["accepted"] / budget), text=ui_logic.budget_message(c))

f1, f2 = st.columns(2)
clusters = f1.multiselect("Clusters", sorted(picks["cluster"].dropna().astype(int).unique()), key="review_clusters",
                          placeholder="All clusters")
statuses = f2.multiselect("Status", list(ui_logic.DECISION_OPTIONS), key="review_status",
                          placeholder="Every status")
keep = picks["cluster"].isin(clusters) | (not clusters)
shown = picks[keep & (picks["decision"].isin(statuses) | (not statuses))]
version = ss.setdefault("review_editor_version", 0)
pending = shown[shown["decision"] == "pending"]


def stored(row_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(decision, note) of each row as the workspace holds it now."""
    now = store.decisions(run_id).set_index("id")
    return {r: (now.at[r, "decision"], now.at[r, "note"]) if r in now.index else ("pending", "") for r in row_ids}


def save(edits: dict[str, tuple[str, str]], seen: dict[str, tuple[str, str]]) -> None:
    """Save edits made over rows as seen; skip, and report, rows another session has changed since."""
    now = stored(edits)
    stale = [r for r, edit in edits.items() if now[r] not in (edit, seen[r])]
    store.set_decisions(run_id, {r: edit for r, edit in edits.items() if r not in stale})
    titles = picks.set_index("id")["instruction"]
    ss.review_stale = [(titles[r], *now[r]) for r in stale]
    ss.review_editor_version += 1  # a fresh editor shows the store, with no earlier edits laid over it


def bulk(decision: str) -> None:
    """Decide the picks shown that are still pending, keeping their latest note; a decided pick keeps its decision."""
    drawn = dict(zip(pending["id"], zip(pending["decision"], pending["note"])))
    seen = {r: now if now[0] == "pending" else drawn[r] for r, now in stored(drawn).items()}
    save({r: (decision, note) for r, (_d, note) in seen.items()}, seen)


b1, b2, b3 = st.columns([1, 1, 2], vertical_alignment="center")
scope = f"cluster {', '.join(map(str, clusters))}" if clusters else "shown"
b1.button(f"Accept {len(pending)} pending ({scope})", on_click=bulk, args=("accepted",), key="review_accept_all",
          disabled=pending.empty)
b2.button(f"Reject {len(pending)} pending ({scope})", on_click=bulk, args=("rejected",), key="review_reject_all",
          disabled=pending.empty)
b3.caption("Bulk buttons decide only pending picks; a decision made in the table stays.")

table = shown.set_index("id")[["decision", "note", "instruction", "reason", "input", "cluster", "rank"]]
editor_key = f"review_editor_{version}"


def save_edits() -> None:
    drawn = dict(zip(table.index, zip(table["decision"], table["note"])))
    save(ui_logic.decisions_from_edits(table.reset_index(), ss[editor_key]["edited_rows"]), drawn)


for instruction, decision, note in ss.pop("review_stale", []):
    st.warning(ui_logic.md_escape(f"Not saved: another session changed this pick after the table was shown "
                                  f"(now {decision}{', note: ' + note if note else ''}): "
                                  f'"{textwrap.shorten(instruction, 90)}". The table shows its current '
                                  "decision; decide it again to change it."), icon=":material/sync_problem:")
if table.empty:
    st.info("No picks match these filters.")
else:
    st.data_editor(
        table, key=editor_key, on_change=save_edits, hide_index=True, num_rows="fixed",
        height=min(38 + 35 * len(table), 460),
        disabled=["instruction", "input", "reason", "cluster", "rank"],
        column_config={
            "decision": st.column_config.SelectboxColumn("Decision", options=list(ui_logic.DECISION_OPTIONS),
                                                         required=True, width=110),
            "note": st.column_config.TextColumn("Note", width=160),
            "instruction": st.column_config.TextColumn("Instruction", width="large"),
            "input": st.column_config.TextColumn("Input", width="medium"),
            "reason": st.column_config.TextColumn("Model's reason", width="large"),
            "cluster": st.column_config.NumberColumn("Cluster", width="small"),
            "rank": st.column_config.NumberColumn("Rank", width="small")})
st.caption("Edits are saved to the workspace as you make them.")

st.subheader("Decisions on the map")
try:
    shared.show_map(shared.build_map(), color_by="state", key="review_map", height=420)
except SelectLLMError as exc:
    st.warning(ui_logic.md_escape(f"The map is not available with the current budget settings: {exc}"))
