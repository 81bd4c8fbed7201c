"""The budget-and-split controls and the cluster map that several pages draw (Streamlit glue over
`selectllm_core.studio.map_build` and `map_view`)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import _shared as shared
from selectllm_core.methods.selectllm import PARAMS as SELECTLLM_PARAMS
from selectllm_core.studio import map_build, map_view
from selectllm_core.studio.map_build import MapBuild

PARAMS = {p.name: p for p in SELECTLLM_PARAMS}


def plan_controls(prefix: str, *, order: bool = False) -> None:
    """Budget and split inputs (and, with order, the shuffle switch), bound to st.session_state.run_config."""
    cfg = st.session_state.run_config
    n = len(shared.pool(st.session_state.pool_id).frame)
    c1, c2, c3, c4 = st.columns(4)
    cfg["budget"] = int(c1.number_input("Budget (rows to annotate)", 1, max(1, n - 1), int(cfg["budget"]),
                                        key=f"{prefix}_budget"))
    size = c2.number_input("Subset size (0 = as in the paper)", 0, n, int(cfg["subset_size"] or 0),
                           key=f"{prefix}_subset_size", help=PARAMS["subset_size"].help)
    cfg["subset_size"] = int(size) or None
    picks = c3.number_input("Picks per subset (0 = derived)", 0, 50, int(cfg["picks_per_subset"] or 0),
                            key=f"{prefix}_picks", help=PARAMS["picks_per_subset"].help)
    cfg["picks_per_subset"] = int(picks) or None
    splits = list(PARAMS["split"].choices)
    cfg["split"] = c4.selectbox("Split", splits, splits.index(cfg["split"]), key=f"{prefix}_split",
                                help=PARAMS["split"].help)
    if order:
        cfg["shuffle"] = st.checkbox("Shuffle the candidates in each subset", bool(cfg["shuffle"]),
                                     key=f"{prefix}_shuffle", help=PARAMS["shuffle"].help + " The Compare page "
                                     "tests each run's picks for a position bias.")


@st.cache_resource(show_spinner=False)
def _builds() -> dict[tuple, MapBuild]:
    return {}


def build_map() -> MapBuild:
    """Embed, split and project the active pool; the first build shows its steps, later ones are instant."""
    ss, emb, active = st.session_state, shared.embedder(), shared.pool(st.session_state.pool_id)
    config = shared.run_config()
    budget = shared.budget_plan(config)
    key = map_build.build_key(active, emb.model_id, budget, config, layout=ss.map_layout)
    memo = _builds()
    if key in memo:
        return memo[key]
    with st.status("Building the map…", expanded=True) as status:
        bar = st.progress(0.0, text="Loading the embedding model")

        def step(name: str, sentence: str) -> None:
            bar.progress(1.0, text=sentence) if name == "embedded" else st.write(sentence)

        build = map_build.build_map(active, config, budget=budget, embedder=emb, cache=shared.embedding_cache(),
                                    layout=ss.map_layout, on_step=step,
                                    on_embed=lambda d, t: bar.progress(d / t, text=f"Embedding {d:,} / {t:,} rows"))
        status.update(label=f"Map ready ({build.timing})", state="complete", expanded=False)
    memo[key] = build
    return build


def active_selection() -> Any:
    """The active run's picks with decisions, or None without a run."""
    run_id = st.session_state.get("run_id")
    return shared.store().selection(run_id) if run_id else None


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_figure(pool_id: str, build_id: int, color_by: str, height: int, names: tuple, picks: str, *,
                _build: MapBuild, _selection: Any) -> Any:
    """The map's figure, kept while its inputs stay (each lasso reruns the page; 100k points take seconds)."""
    frame = map_view.map_frame(shared.pool(pool_id).frame, _build.coords, _build.plan.cluster_of, _selection)
    return map_view.map_figure(frame, color_by=color_by, height=height, names=dict(names))


def show_map(build: MapBuild, *, color_by: str, key: str, height: int = 560,
             names: dict[int, str] | None = None) -> list[str]:
    """Draw the map; returns the row ids inside the current lasso or box."""
    selection = active_selection()
    fig = _map_figure(st.session_state.pool_id, id(build), color_by, height, tuple(sorted((names or {}).items())),
                      map_view.selection_key(selection), _build=build, _selection=selection)
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("lasso", "box"),
                            config={"displaylogo": False})
    return map_view.selected_ids(event)
