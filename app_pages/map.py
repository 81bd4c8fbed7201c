"""Map: the pool embedded, split with equal-size K-means and laid out in 2-D; lasso a region to read it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from selectllm_core.studio import clusters, map_view, search
from selectllm_core.studio.map_view import LEGEND_MAX
from selectllm_core.studio.text import md_escape

ss = st.session_state
LIKE_K = 10  # rows "more like this" lists
LIST_MAX = 20_000  # rows listed under the map at most
st.title("Map")
if ss.get("map_saved"):
    st.success(md_escape(ss.pop("map_saved")))
active = shared.pool(ss.pool_id)
st.caption(f"{md_escape(active.name)}: {len(active.frame):,} instructions. Each point is one instruction; "
           "points close together ask for similar things. Hover to read one; lasso or box a region to list it.")

with st.expander("Budget and split (the clusters the run will use)", expanded=False):
    _map.plan_controls("map")
    layouts = {"umap": "UMAP (default)", "pca": "PCA (fast, rougher layout)"}
    ss.map_layout = st.radio("Layout", list(layouts), list(layouts).index(ss.map_layout), format_func=layouts.get,
                             horizontal=True, key="map_layout_choice")

build = _map.build_map()
dups = _map.near_duplicates(active, _map.current_tau("map"), build.vectors)
with st.expander(f"Near-duplicates: {dups.summary if dups else 'not searched yet at this τ'}", expanded=False):
    _map.near_dup_section("map", active, save=_map.save_and_open, vectors=build.vectors)


@st.cache_data(show_spinner="Labelling clusters…", max_entries=8)
def summary(pool_id: str, plan_key: str, _texts: list[str], _clusters, _vectors) -> pd.DataFrame:  # noqa: ANN001
    return clusters.cluster_summary(_texts, _clusters, _vectors)


plan_key = f"{shared.budget_plan()}|{ss.run_config['split']}|{ss.run_config['seed']}"
table = summary(ss.pool_id, plan_key, active.frame["instruction"].tolist(), build.plan.cluster_of, build.vectors)
names = clusters.short_names(table)

colors = {"cluster": "Cluster", "state": "Selection state", "neardup": "Near-duplicates"}
c1, c2 = st.columns([2, 3])
color_by = c1.segmented_control("Colour by", list(colors), format_func=colors.get, default="cluster",
                                key="map_color_by") or "cluster"
if color_by == "state" and not ss.run_id:
    c2.info("No run yet: every point is 'not picked'. Start one on the Select page.")
elif color_by == "neardup" and not dups:
    c2.info("Near-duplicates are not searched yet: open 'Near-duplicates' above and start the search.")
elif color_by == "neardup":
    c2.caption(f"{dups.n_groups:,} groups at τ = {dups.tau:g}. Blue: the row each group keeps; red: its "
               "near-duplicates; grey: every other row. Hover a point to read its group.")
elif color_by == "cluster" and build.plan.n_clusters > LEGEND_MAX:
    c2.caption(f"{build.plan.n_clusters:,} clusters are too many for a legend: clusters side by side get different "
               "colours, each cluster's number is written on the map, and hovering a point names its cluster. "
               "The table below lists them all.")
s1, s2 = st.columns([2, 3], vertical_alignment="bottom")
query = s1.text_input("Search the pool", key="map_search", placeholder=search.SEARCH_PLACEHOLDER,
                      help=search.SEARCH_HELP)
matches = shared.pool_index(ss.pool_id).search(query)["id"].tolist() if query.strip() else None
if matches is not None:
    s2.caption(f"{len(matches):,} of {len(active.frame):,} rows match: the outlined circles on the map, the other "
               "points faded. Lasso or box some to list only those." if matches else
               "No row matches. Every word typed must occur in the instruction or the input.")
# map_like, this page's own key: the pool and the selection that "more like this" started from, until cleared
like = ss.get("map_like") if ss.get("map_like", {}).get("pool_id") == ss.pool_id else None
near = search.more_like_this(build.vectors, active.frame["id"].astype(str).tolist(), like["seeds"],
                             k=LIKE_K) if like else None
highlights = map_view.search_highlights(matches, like["seeds"] if like else (), [] if near is None else near["id"])
chosen = _map.show_map(build, color_by=color_by, key="map_chart", names=names, near_dups=dups,
                       highlights=highlights)

frame = active.frame.assign(cluster=build.plan.cluster_of)
listed, heading = map_view.listed_rows(chosen, matches)
if heading:
    st.subheader(heading)
if len(listed) > LIST_MAX:  # a box on a 1M-row map can hold 300,000 rows: 30 MB of table on every rerun
    st.caption(f"The first {LIST_MAX:,} of these {len(listed):,} rows are listed; a smaller box or lasso, or a "
               "search, lists the rest.")
if listed:
    rows = frame.set_index("id").loc[listed[:LIST_MAX], ["instruction", "input", "cluster"]].reset_index()
    st.container(key="map_listed").dataframe(rows, hide_index=True, column_config={"id": None})
if chosen:
    st.button(f"More like this: the {LIKE_K} rows nearest the selection", key="map_like_find",
              on_click=ss.update, args=({"map_like": {"pool_id": ss.pool_id, "seeds": chosen}},),
              help="Rows whose embeddings lie nearest the mean of the selection's, the selection left out.")
elif matches is None and near is None:
    st.caption("Tip: pick the lasso or box tool at the top right of the map, then drag around a region.")
if near is not None:
    st.subheader(f"{len(near)} rows most like the {len(like['seeds']):,} you selected")
    st.caption("Nearest the mean embedding of the selection (similarity: cosine, 1 = same direction); the "
               "selection itself is left out. On the map: squares for the selection, diamonds for these rows.")
    st.container(key="map_like_rows").dataframe(
        search.found_rows(frame, near), hide_index=True, column_order=["similarity", "instruction", "input", "cluster"],
        column_config={"similarity": st.column_config.NumberColumn("Similarity", format="%.3f",
                                                                   help=search.SIMILARITY_HELP)})
    st.button("Clear 'more like this'", key="map_like_clear", on_click=lambda: ss.pop("map_like", None))

st.subheader("Clusters")
if build.plan.n_clusters == 0:
    st.info("The random split has no clusters. Choose the diverse or similar split above to see them.")
    st.stop()
b = build.plan.budget_plan
padding = (f" To make them equal the paper's way, the pool is padded by repeating its first {b.padded} rows; "
           "the row counts here leave the copies out." if b.padded and ss.run_config["split"] == "diverse" else "")
st.caption(f"{build.plan.n_clusters} clusters of equal size.{padding} Distinctive terms: the words that set a "
           "cluster apart. Representative instructions: the ones nearest the cluster's centre. Click a row to "
           "read the cluster.")
if table.attrs.get("note"):  # clusters whose label is empty: say why rather than show blank cells
    st.info(table.attrs["note"], icon=":material/info:")
event = st.dataframe(
    table, hide_index=True, width="stretch", height=min(38 + 35 * len(table), 600), on_select="rerun",
    selection_mode="single-row", key="map_clusters",
    column_config={"cluster": st.column_config.NumberColumn("Cluster", width="small"),
                   "size": st.column_config.NumberColumn("Rows", width="small"),
                   "label": st.column_config.TextColumn("Distinctive terms", width="medium"),
                   "examples": st.column_config.ListColumn("Representative instructions", width="large")})
if event.selection.rows:
    row = table.iloc[event.selection.rows[0]]
    st.markdown(f"**Cluster {row['cluster']}** · {row['size']} rows")
    members = frame[frame["cluster"] == row["cluster"]][["instruction", "input"]]
    st.dataframe(members, hide_index=True, height=min(38 + 35 * len(members), 400))
