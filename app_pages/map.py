"""Map: the pool embedded, split with equal-size K-means and laid out in 2-D; lasso a region to read it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from selectllm_core.studio import clusters
from selectllm_core.studio.map_view import LEGEND_MAX
from selectllm_core.studio.text import md_escape

ss = st.session_state
st.title("Map")
active = shared.pool(ss.pool_id)
st.caption(f"{md_escape(active.name)}: {len(active.frame):,} instructions. Each point is one instruction; "
           "points close together ask for similar things. Hover to read one; lasso or box a region to list it.")

with st.expander("Budget and split (the clusters the run will use)", expanded=False):
    _map.plan_controls("map")
    layouts = {"umap": "UMAP (default)", "pca": "PCA (fast, rougher layout)"}
    ss.map_layout = st.radio("Layout", list(layouts), list(layouts).index(ss.map_layout), format_func=layouts.get,
                             horizontal=True, key="map_layout_choice")

build = _map.build_map()


@st.cache_data(show_spinner="Labelling clusters…", max_entries=8)
def summary(pool_id: str, plan_key: str, _texts: list[str], _clusters, _vectors) -> pd.DataFrame:  # noqa: ANN001
    return clusters.cluster_summary(_texts, _clusters, _vectors)


plan_key = f"{shared.budget_plan()}|{ss.run_config['split']}|{ss.run_config['seed']}"
table = summary(ss.pool_id, plan_key, active.frame["instruction"].tolist(), build.plan.cluster_of, build.vectors)
names = clusters.short_names(table)

colors = {"cluster": "Cluster", "state": "Selection state"}
c1, c2 = st.columns([2, 3])
color_by = c1.segmented_control("Colour by", list(colors), format_func=colors.get, default="cluster",
                                key="map_color_by") or "cluster"
if color_by == "state" and not ss.run_id:
    c2.info("No run yet: every point is 'not picked'. Start one on the Select page.")
elif color_by == "cluster" and build.plan.n_clusters > LEGEND_MAX:
    c2.caption(f"{build.plan.n_clusters:,} clusters are too many for a legend: clusters side by side get different "
               "colours, each cluster's number is written on the map, and hovering a point names its cluster. "
               "The table below lists them all.")
chosen = _map.show_map(build, color_by=color_by, key="map_chart", names=names)

frame = active.frame.assign(cluster=build.plan.cluster_of)
if chosen:
    st.subheader(f"{len(chosen):,} instruction{'s' if len(chosen) != 1 else ''} in the selection")
    rows = frame.set_index("id").loc[chosen, ["instruction", "input", "cluster"]].reset_index()
    st.dataframe(rows, hide_index=True, column_config={"id": None})
else:
    st.caption("Tip: pick the lasso or box tool at the top right of the map, then drag around a region.")

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
