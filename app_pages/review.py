"""Review: accept or reject every pick (a page of the table at a time, per cluster, in bulk), against the budget and
on the map; undo and the history of changes; swap a pick for a candidate the model passed over, fill open places;
import a file.

The picks are read once per full run of the page. Counters, undo, history, filters, the page of the table, the bulk
buttons and the open places are one fragment: an edit, a bulk decision, a filter or another page reruns only it,
over those picks with the decisions the workspace holds now. An action that can change the picks themselves (undo,
swap, fill, import) reruns the whole page. The map is drawn with the page and redrawn by its Refresh button."""

from __future__ import annotations

import textwrap

import pandas as pd
import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from selectllm_core.errors import ConfigError, SelectLLMError, UnknownRunError
from selectllm_core.studio import curate, review, run_view
from selectllm_core.studio.review import Decision
from selectllm_core.studio.text import md_escape

ss, store = st.session_state, shared.store()
curator = ss.get("curator") or ""  # the sidebar's name; "" is recorded as is and shown as "(unnamed)"
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
version = ss.setdefault("review_curate_version", 0)  # curation widgets start fresh after each curation action
ss.setdefault("review_editor_version", 0)


def act(fn, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003 - any of curate's actions
    """Run a curator's action, then the whole page (it may change the picks); its message, or why it was refused,
    shows over a fresh table."""
    try:
        ss.review_done = fn(store, run_id, *args, curator=curator, **kwargs)
    except SelectLLMError as exc:
        ss.review_refused = str(exc)
    ss.review_editor_version += 1
    ss.review_curate_version += 1
    st.rerun()


def save(edits: dict[str, Decision], seen: dict[str, Decision], action: str = "decide") -> None:
    """Save edits; the rows another session changed since are kept as they are and reported after the rerun."""
    skipped = review.save_edits(store, run_id, edits, seen, curator=curator, action=action)
    titles = store.row_texts(run_id, [r for r, _d, _n in skipped])["instruction"] if skipped else {}
    ss.review_stale = [review.stale_message(titles[r], decision, note) for r, decision, note in skipped]
    ss.review_editor_version += 1  # a fresh editor shows the store, with no earlier edits laid over it


def bulk(drawn: dict[str, Decision], decision: str) -> None:
    """Decide these pending picks as drawn, keeping their latest note; a pick decided since keeps its decision."""
    save(*review.bulk_edits(store, run_id, drawn, decision), action="bulk")


def set_page(number: int) -> None:
    ss.review_page = number


def resize() -> None:
    """A new page size keeps the first row of the page in view."""
    ss.review_page = review.page_holding(ss.get("review_first_row", 0), size=ss.review_page_size)


def undo_row() -> None:
    change_id, undo_help = curate.undo_offer(store, run_id)
    u1, u2, u3 = st.columns([1, 1, 3], vertical_alignment="center")
    u1.button("Undo last change", key="review_undo", on_click=act, args=(curate.undo,),
              kwargs={"change_id": change_id}, help=undo_help, disabled=change_id is None, icon=":material/undo:")
    u2.download_button("History (CSV)", lambda: curate.history_csv(store, run_id), file_name=f"history-{run_id}.csv",
                       mime="text/csv", key="review_history", icon=":material/history:", on_click="ignore",
                       help="Every change to this run's decisions: who made it, when, and the values before and after.")
    u3.caption(md_escape(undo_help.replace("Undo: ", "Last change: ", 1)))
    notice = st.container()  # always drawn, so the elements below keep their place (and expanders their state)
    if done := ss.pop("review_done", None):
        notice.success(md_escape(done), icon=":material/check:")
    if refused := ss.pop("review_refused", None):
        notice.error(md_escape(refused), icon=":material/error:")


def filtered(now: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """The picks the filters keep, and the clusters chosen; a new filter starts again at the first page."""
    f1, f2, f3 = st.columns(3)
    clusters = f1.multiselect("Clusters", sorted(now["cluster"].dropna().astype(int).unique()), key="review_clusters",
                              placeholder="All clusters", on_change=set_page, args=(1,))
    statuses = f2.multiselect("Status", list(review.DECISION_OPTIONS), key="review_status", placeholder="Every status",
                              on_change=set_page, args=(1,))
    query = f3.text_input("Search the picks", key="review_search", placeholder='words, "a phrase", prefix*',
                          on_change=set_page, args=(1,),
                          help="Full-text search of instruction and input (every word must occur; accents ignored).")
    shown = review.filter_picks(now, clusters, statuses)
    if query.strip():
        found = shared.pool_index(store.get_run(run_id)["pool_id"]).search(query)
        shown = shown[shown["id"].isin(set(found["id"]))]
        f3.caption(f"{len(shown):,} of the picks match.")
    return shown, clusters


def pager(page: review.Page) -> None:
    """Rows per page, Previous, the page number and Next, and which rows the table shows (a short run: only that)."""
    if len(picks) <= review.PAGE_SIZES[0]:
        st.caption(page.caption(len(picks)))
        return
    p1, p2, p3, p4, p5 = st.columns([1.2, 0.9, 1, 0.9, 3], vertical_alignment="bottom")
    p1.selectbox("Rows per page", review.PAGE_SIZES, key="review_page_size", on_change=resize)
    p2.button("Previous", key="review_prev", on_click=set_page, args=(page.number - 1,), disabled=page.number == 1,
              icon=":material/chevron_left:", width="stretch")
    p3.number_input(f"Page (of {page.count:,})", 1, page.count, key="review_page")
    p4.button("Next", key="review_next", on_click=set_page, args=(page.number + 1,), icon=":material/chevron_right:",
              disabled=page.number == page.count, width="stretch")
    p5.caption(page.caption(len(picks)))


def bulk_row(shown: pd.DataFrame, page: review.Page, clusters: list[int]) -> None:
    """Accept or reject the pending picks of this page, or of every page the filters keep (the curator says which)."""
    paged = page.count > 1
    scopes = {"page": f"this page (rows {page.start + 1:,}–{page.stop:,})",
              "all": f"all pages ({len(shown):,} {'rows' if len(shown) == len(picks) else 'filtered rows'})"}
    whole = paged and st.radio("Bulk buttons apply to", list(scopes), key="review_bulk_scope", horizontal=True,
                               format_func=scopes.get) == "all"
    target = shown if whole else page.of(shown)
    pending = target[target["decision"] == "pending"]
    drawn = dict(zip(pending["id"], zip(pending["decision"], pending["note"])))
    scope = review.bulk_scope(clusters, whole=whole if paged else None)
    b1, b2, b3 = st.columns([1.4, 1.4, 1.2], vertical_alignment="center")
    b1.button(f"Accept {len(pending):,} pending ({scope})", on_click=bulk, args=(drawn, "accepted"),
              key="review_accept_all", disabled=pending.empty)
    b2.button(f"Reject {len(pending):,} pending ({scope})", on_click=bulk, args=(drawn, "rejected"),
              key="review_reject_all", disabled=pending.empty)
    b3.caption("Bulk buttons decide only pending picks; a decision made in the table stays.")


def reason_flags(rows: pd.DataFrame) -> list[str] | None:
    """Whether each of the page's reasons describes its pick (as on the Select page); None when it cannot be told.

    Kept for the page's rows and reasons, so an edit does not embed the reasons again."""
    key = (run_id, tuple(rows["id"]), tuple(rows["reason"].fillna("")), tuple(rows["origin"]))
    memo = ss.get("review_fits_memo")
    if memo is not None and memo[0] == key:
        return memo[1]
    try:
        fits = review.reason_fits(store, run_id, rows, embedder=shared.run_embedder(run_id),
                                  cache=shared.embedding_cache())
    except SelectLLMError as exc:
        st.caption(f"The \"Reason fits\" column is left out: {md_escape(str(exc))}")
        return None
    ss.review_fits_memo = (key, fits)
    return fits


def editor(rows: pd.DataFrame) -> None:
    """The page's rows in the table editor; each edit is saved as it is made."""
    table = rows.set_index("id")[["decision", "note", "instruction", "origin", "reason", "input", "cluster", "rank"]]
    fits = reason_flags(rows)
    if fits is not None:
        table.insert(table.columns.get_loc("origin") + 1, "fits", fits)  # beside the pick: seen unscrolled
    key = f"review_editor_{ss.review_editor_version}_{review.page_key(table.index)}"

    def save_table() -> None:
        drawn = dict(zip(table.index, zip(table["decision"], table["note"])))
        save(review.decisions_from_edits(table.reset_index(), ss[key]["edited_rows"]), drawn)

    column = st.column_config
    st.data_editor(
        table, key=key, on_change=save_table, hide_index=True, num_rows="fixed",
        height=min(38 + 35 * len(table), 38 + 35 * 20), disabled=["instruction", "origin", "input", "reason",
                                                                  "fits", "cluster", "rank"],
        column_config={
            "decision": column.SelectboxColumn("Decision", options=list(review.DECISION_OPTIONS), required=True,
                                               width=110),
            "note": column.TextColumn("Note", width=160),
            "instruction": column.TextColumn("Instruction", width="large"),
            "origin": column.TextColumn("Origin", width=100,
                                        help="model pick, or curator pick: a row a curator promoted"),
            "input": column.TextColumn("Input", width="medium"),
            "reason": column.TextColumn("Model's reason", width="large"),
            "fits": column.TextColumn("Reason fits", width=130, help=run_view.REASON_FITS_HELP),
            "cluster": column.NumberColumn("Cluster", width="small"),
            "rank": column.NumberColumn("Rank", width="small")})


def fill_places(now: pd.DataFrame) -> None:
    room = curate.open_places(now, budget)
    if not room:
        return
    fill = st.expander(f"Fill {curate.plural(room, 'open place')} from the runners-up", icon=":material/playlist_add:",
                       key="review_fill_open", on_change="rerun")
    with fill:
        st.caption("Open places: the budget minus the picks not rejected. Runners-up, best first: the model's picks "
                   "that the budget left out, every row of a subset where the model picked nothing (it failed), then "
                   "the rows the model passed over. Each row added is a curator pick, accepted.")
        if fill.open:  # the runners-up are read only while the list is open
            ups = curate.candidates(store, run_id, limit=300).set_index("id")
            chosen = st.multiselect("Runners-up to add", ups.index, max_selections=room, key=f"review_fill_{version}",
                                    format_func=lambda r: curate.candidate_label(ups.loc[r]))
            st.button(f"Add {curate.plural(len(chosen), 'curator pick')}", key="review_fill_add", on_click=act,
                      args=(curate.fill, chosen), kwargs={"budget": budget}, disabled=not chosen)


def history() -> None:
    shown = st.expander("History of changes, newest first", icon=":material/history:", key="review_history_open",
                        on_change="rerun")
    with shown:
        if shown.open:  # the history grows with every edit: read only while it is open
            changes = curate.history_changes(store, run_id)
            st.caption(f"{curate.plural(len(changes), 'change')}.")
            st.dataframe(changes, hide_index=True, height=min(38 + 35 * len(changes), 320))


@st.fragment(key="review_decide")
def decide(picks: pd.DataFrame) -> None:
    """Everything an edit changes, over the picks of the last full run with the decisions stored now."""
    now = review.with_decisions(picks, store.decisions(run_id))
    c = review.budget_counters(now, budget)
    for col, (label, k) in zip(st.columns(5), [("Budget", "budget"), ("Picked", "picked"), ("Accepted", "accepted"),
                                               ("Rejected", "rejected"), ("Still to review", "pending")]):
        col.metric(label, f"{c[k]:,}")
    st.progress(min(1.0, c["accepted"] / budget), text=review.budget_message(c))
    undo_row()
    shown, clusters = filtered(now)
    size = ss.setdefault("review_page_size", review.DEFAULT_PAGE_SIZE)
    page = review.page_of(len(shown), size=size, number=ss.get("review_page", 1))
    ss.review_page, ss.review_first_row = page.number, page.start  # a shorter list moves to its last page
    rows = page.of(shown)
    bulk_row(shown, page, clusters)
    pager(page)
    for message in ss.pop("review_stale", []):
        st.warning(md_escape(message), icon=":material/sync_problem:")
    if rows.empty:
        st.info("No picks match these filters.")
    else:
        editor(rows)
    st.caption("Edits are saved to the workspace as you make them.")
    history()
    st.subheader("Curator picks and imports")
    fill_places(now)


decide(picks)
swap = st.expander("Swap a pick for a candidate the model passed over", icon=":material/swap_horiz:",
                   key="review_swap_open", on_change="rerun")
with swap:
    if swap.open:  # its list names every pick: drawn only while open
        titles = picks.set_index("id")["instruction"]
        pick = st.selectbox("Pick to swap out", picks["id"], format_func=lambda r: textwrap.shorten(titles[r], 120),
                            key=f"review_swap_pick_{version}")
        try:
            others = curate.swap_candidates(store, run_id, pick).set_index("id")
        except ConfigError as exc:  # a method without subsets chose it
            st.info(md_escape(str(exc)))
        else:
            into = st.selectbox("Swap for…", others.index, format_func=lambda r: curate.candidate_label(others.loc[r]),
                                key=f"review_swap_for_{version}", placeholder="No other row in this pick's subset")
            st.button("Swap", key="review_swap", on_click=act, args=(curate.promote, into), kwargs={"replace": pick},
                      disabled=into is None, help="The pick leaves the selection (recorded as rejected); the candidate "
                      "takes its place as a curator pick, accepted. Undo last change puts both back.")
with st.expander("Import decisions or annotations (CSV, JSONL)", icon=":material/upload_file:",
                 key="review_import_open"):
    st.caption("A file with an id column and any of decision (accepted, rejected, pending), note and annotation "
               "columns (e.g. response: stored with the picks and exported with them). Empty cells change nothing. "
               "Nothing is saved until Apply; then the whole file is applied at once, or nothing is.")
    upload = st.file_uploader("Decisions file", type=["csv", "tsv", "jsonl", "ndjson", "json", "gz"],
                              key=f"review_import_{version}")
    plan = None
    try:
        plan = curate.plan_import(store, run_id, upload.getvalue(), upload.name) if upload else None
    except SelectLLMError as exc:  # unreadable, or no id column
        st.error(md_escape(str(exc)), icon=":material/error:")
    if plan:
        for line in [*plan.notes, plan.summary()]:
            st.markdown(md_escape(line))
        for problem in plan.problems[:10]:
            st.error(md_escape(problem), icon=":material/error:")
        if plan.unknown:
            st.warning(md_escape(plan.unknown_message + "."), icon=":material/help:")
        skip = st.checkbox("Skip unknown ids", key=f"review_import_skip_{version}", disabled=not plan.unknown,
                           help="Apply the rows whose id is a pick of this run; the others are skipped and counted.")
        st.button("Apply", key="review_import_apply", on_click=act, args=(curate.apply_import, plan),
                  kwargs={"skip_unknown": skip}, disabled=not plan.ready(skip_unknown=skip), type="primary",
                  help="Applies the whole file in one step, recorded as one change: Undo last change reverts it.")


@st.fragment(key="review_map_part")
def decisions_map() -> None:
    """The pool coloured by decision. Its figure holds every row of the pool, so an edit does not redraw it."""
    m1, m2 = st.columns([4, 1], vertical_alignment="center")
    m1.caption("Colours show the decisions as they were when the map was drawn; Refresh shows the latest.")
    m2.button("Refresh", key="review_map_refresh", icon=":material/refresh:", help="Redraw the map with the "
              "decisions stored now.")
    try:
        _map.show_map(_map.build_map(), color_by="state", key="review_map", height=420)
    except ConfigError as exc:  # settings another page left unworkable: the picks above still stand
        st.warning(md_escape(f"The map is not available with the current budget settings: {exc}"))


st.subheader("Decisions on the map")
decisions_map()
