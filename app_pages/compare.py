"""Compare: run other selection methods on the pool, then set their picks beside SelectLLM's, in numbers and on the map."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import _map, _method_form, _runs
from app_pages import _shared as shared
from selectllm_core import methods
from selectllm_core.pipeline import which_picks
from selectllm_core.runs import compare
from selectllm_core.studio import compare_view
from selectllm_core.studio.text import md_escape

ss, store = st.session_state, shared.store()
st.title("Compare")
active = shared.pool(ss.pool_id)
st.caption("Is the model's choice better than the obvious alternatives? Run other methods on this pool with the "
           "same budget, then compare how well each selection covers the pool, how evenly it spreads over the "
           "clusters, how long its rows are and what it cost, and see the picks on the map.")

@st.cache_data(show_spinner="Comparing runs…", max_entries=16)
def comparison(run_ids: tuple[str, ...], which: str, fingerprint: str, workspace: str
               ) -> compare.Comparison:
    """compare_runs, cached; fingerprint and workspace are part of the cache key only."""
    return compare.compare_runs(store, list(run_ids), embedder=shared.embedder(), cache=shared.embedding_cache(),
                                which=which)


def columns(spec: dict[str, tuple[str, str | None, str | None]]) -> dict[str, Any]:
    """Number columns from compare_view's (title, format, help) table."""
    return {c: st.column_config.NumberColumn(t, format=f, help=h) for c, (t, f, h) in spec.items()}


# -- 1. another method --------------------------------------------------------------------------------------
pool_runs = store.list_runs().pipe(lambda f: f[f["pool_id"] == ss.pool_id])
with st.expander("Run another method on this pool", expanded=len(pool_runs) < 2 or "compare_job" in ss):
    _method_form.method_form(store, active)
if ss.get("compare_job"):
    _runs.method_panel(ss.compare_job)

# -- 2. which runs ------------------------------------------------------------------------------------------
runs = pool_runs[pool_runs["selected"] > 0]
if len(runs) < 2:
    st.info("Compare needs two or more finished runs of this pool. Start a SelectLLM run on the Select page and "
            "run another method above (random and k-center coreset take seconds).")
    st.stop()
records = {r: store.get_run(r) for r in runs["run_id"]}
titles = {name: m.title for name, m in methods.METHODS.items()}  # SelectLLM included
labels = compare_view.run_labels(records, {r: compare.run_setting(rec) for r, rec in records.items()}, titles)
if "compare_runs" in ss:
    ss.compare_runs = [r for r in ss.compare_runs if r in labels]
c1, c2 = st.columns([4, 3])
chosen = c1.multiselect("Runs to compare", list(labels), format_func=labels.get, key="compare_runs",
                        default=None if "compare_runs" in ss else compare_view.default_runs(runs))
which = c2.segmented_control("Picks compared", list(compare_view.WHICH), format_func=compare_view.WHICH.get,
                             default="all", key="compare_which", help="After review, compare what the curator kept.")
which = which or "all"
if len(chosen) < 2:
    st.info("Choose two or more runs.")
    st.stop()
if any(records[r]["method"] == "alpagasus" for r in chosen):
    st.caption(f":material/info: {methods.METHODS['alpagasus'].note}")
selections = {r: store.selection(r) for r in chosen}
# the fingerprint changes whenever a pick or decision of these runs changes: the comparison is then recomputed
result = comparison(tuple(chosen), which, compare_view.selections_key(selections),
                    str(shared.workspace().resolve()))

# -- 3. the tables ------------------------------------------------------------------------------------------
st.subheader("Measures")
text = st.column_config.TextColumn
st.dataframe(compare_view.measures_table(result.table, labels), hide_index=True, width="stretch",
             column_order=("label", *compare_view.MEASURES, "setting", "run"), column_config={
                 "label": text("Method", width="medium", pinned=True),
                 "setting": text("Setting", help="The parameters of this run."),
                 "run": text("Run id", help="Open it from the Run picker in the sidebar to review or export it."),
                 **columns(compare_view.MEASURES)})
st.caption(" · ".join(md_escape(n) for n in result.notes) + ". ↓ lower is better, ↑ higher is better.")
if note := compare_view.empty_note(result.table, labels, which):
    st.info(md_escape(note), icon=":material/info:")
left, right = st.columns(2)
with left:
    st.markdown("**Overlap** (Jaccard: shared picks / all picks of the two runs)")
    overlap = result.overlap.rename(index=labels, columns=labels)
    st.dataframe(overlap, width="stretch", column_config=columns({c: (c, "%.2f", None) for c in overlap.columns}))
with right:
    st.markdown("**Position bias** (listwise runs: does the model favour a position in its list?)")
    if result.position_bias.empty:
        st.caption("None of these runs is listwise (SelectLLM); the other methods score rows one by one.")
    else:
        bias = result.position_bias.assign(run=lambda f: f["run"].map(labels))
        st.dataframe(bias[["run", "shuffle", "picks", *compare_view.BIAS]], hide_index=True, width="stretch",
                     column_config={"run": text("Run"), **columns(compare_view.BIAS)})
        st.caption("Shuffling the candidates in each subset (the default) spreads a position bias over the rows.")

# -- 4. the map ---------------------------------------------------------------------------------------------
st.subheader("Picks on the map")
build = _map.build_map()
modes = {"overlay": "Overlaid", "panels": "Side by side"}
mode = st.segmented_control("Show", list(modes), format_func=modes.get, default="overlay",
                            key="compare_map_mode") or "overlay"
frame = compare_view.map_points(active.frame, build.coords)
layers = [compare_view.Layer(labels[r], which_picks(selections[r], which)) for r in chosen]
if mode == "overlay":
    st.caption("Grey: the pool. Each run has its own colour and symbol; click a legend entry to hide or show a "
               "run, double-click to show it alone. Hover a pick for its rank and reason.")
    fig = compare_view.overlay_figure(frame, layers)
else:
    st.caption("One map per run, on shared axes: zoom one and the others follow. Hover a pick for its rank and "
               "reason.")
    fig = compare_view.panels_figure(frame, layers)
st.plotly_chart(fig, key="compare_map", config={"displaylogo": False, "scrollZoom": True})
