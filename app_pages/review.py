"""Review: accept or reject every pick (one by one, per cluster, in bulk), against the budget and on the map."""

from __future__ import annotations

import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from selectllm_core.errors import ConfigError, UnknownRunError
from selectllm_core.studio import review
from selectllm_core.studio.review import Decision
from selectllm_core.studio.text import md_escape

ss, store = st.session_state, shared.store()
st.title("Review")
run_id = shared.require_run()
try:
    picks = store.selection(run_id)
    budget = int(store.get_run(run_id)["params"]["budget"])
except UnknownRunError:  # started in the background, not recorded yet
    st.info("The run is still preparing. Its picks appear here as soon as they are chosen.")
    st.stop()
if picks.empty:
    st.info("No picks yet: the run has not finished a subset, or every subset failed (see the Select page).")
    st.stop()

c = review.budget_counters(picks, budget)
cols = st.columns(5)
for col, (label, key) in zip(cols, [("Budget", "budget"), ("Picked", "picked"), ("Accepted", "accepted"),
                                    ("Rejected", "rejected"), ("Still to review", "pending")]):
    col.metric(label, f"{c[key]:,}")
st.progress(min(1.0, c["accepted"] / budget), text=review.budget_message(c))

f1, f2 = st.columns(2)
clusters = f1.multiselect("Clusters", sorted(picks["cluster"].dropna().astype(int).unique()), key="review_clusters",
                          placeholder="All clusters")
statuses = f2.multiselect("Status", list(review.DECISION_OPTIONS), key="review_status", placeholder="Every status")
shown = review.filter_picks(picks, clusters, statuses)
pending = shown[shown["decision"] == "pending"]
table = shown.set_index("id")[["decision", "note", "instruction", "reason", "input", "cluster", "rank"]]
editor_key = f"review_editor_{ss.setdefault('review_editor_version', 0)}"


def save(edits: dict[str, Decision], seen: dict[str, Decision]) -> None:
    """Save edits; the rows another session changed since are kept as they are and reported after the rerun."""
    skipped, titles = review.save_edits(store, run_id, edits, seen), picks.set_index("id")["instruction"]
    ss.review_stale = [review.stale_message(titles[r], decision, note) for r, decision, note in skipped]
    ss.review_editor_version += 1  # a fresh editor shows the store, with no earlier edits laid over it


def bulk(decision: str) -> None:
    """Decide the picks shown that are still pending, keeping their latest note; a decided pick keeps its decision."""
    drawn = dict(zip(pending["id"], zip(pending["decision"], pending["note"])))
    save(*review.bulk_edits(store, run_id, drawn, decision))


def save_table() -> None:
    """Save the editor's edits over the rows as it showed them."""
    drawn = dict(zip(table.index, zip(table["decision"], table["note"])))
    save(review.decisions_from_edits(table.reset_index(), ss[editor_key]["edited_rows"]), drawn)


b1, b2, b3 = st.columns([1, 1, 2], vertical_alignment="center")
scope = f"cluster {', '.join(map(str, clusters))}" if clusters else "shown"
b1.button(f"Accept {len(pending)} pending ({scope})", on_click=bulk, args=("accepted",), key="review_accept_all",
          disabled=pending.empty)
b2.button(f"Reject {len(pending)} pending ({scope})", on_click=bulk, args=("rejected",), key="review_reject_all",
          disabled=pending.empty)
b3.caption("Bulk buttons decide only pending picks; a decision made in the table stays.")

for message in ss.pop("review_stale", []):
    st.warning(md_escape(message), icon=":material/sync_problem:")
if table.empty:
    st.info("No picks match these filters.")
else:
    column = st.column_config
    st.data_editor(
        table, key=editor_key, on_change=save_table, hide_index=True, num_rows="fixed",
        height=min(38 + 35 * len(table), 460), disabled=["instruction", "input", "reason", "cluster", "rank"],
        column_config={
            "decision": column.SelectboxColumn("Decision", options=list(review.DECISION_OPTIONS), required=True,
                                               width=110),
            "note": column.TextColumn("Note", width=160),
            "instruction": column.TextColumn("Instruction", width="large"),
            "input": column.TextColumn("Input", width="medium"),
            "reason": column.TextColumn("Model's reason", width="large"),
            "cluster": column.NumberColumn("Cluster", width="small"),
            "rank": column.NumberColumn("Rank", width="small")})
st.caption("Edits are saved to the workspace as you make them.")

st.subheader("Decisions on the map")
try:
    _map.show_map(_map.build_map(), color_by="state", key="review_map", height=420)
except ConfigError as exc:  # settings another page left unworkable: the picks above still stand
    st.warning(md_escape(f"The map is not available with the current budget settings: {exc}"))
