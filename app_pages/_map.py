"""The budget-and-split controls, the cluster map and the near-duplicate panel that several pages draw
(Streamlit glue over `selectllm_core.studio.map_build`, `map_view` and `neardup_view`).

The near-duplicate threshold is the session key `near_dup_tau` (float, default 0.95): set on the Data or the
Map page, it holds on both. A pool above `map_density.ALL_POINTS_MAX` rows is drawn as a density and a sample of
points; the environment variables SELECTLLM_MAP_POINTS_MAX and SELECTLLM_MAP_SAMPLE move the threshold and the
sample size (to try other settings: the tests and benchmarks/README.md measure the defaults)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from app_pages import _shared as shared
from selectllm_core.embed import embed_texts
from selectllm_core.embed.neardup import (
    DEFAULT_TAU,
    NearDuplicates,
    cached_near_duplicates,
    cached_pool_vectors,
    keep_one_per_group,
)
from selectllm_core.embed.neardup import pool_near_duplicates as find_near_duplicates
from selectllm_core.embed.progress import Throughput
from selectllm_core.methods.selectllm import PARAMS as SELECTLLM_PARAMS
from selectllm_core.pool.load import Pool
from selectllm_core.studio import map_build, map_density, map_view, neardup_view
from selectllm_core.studio.map_build import MapBuild

PARAMS = {p.name: p for p in SELECTLLM_PARAMS}
AUTO_ROWS = 20_000  # the exact search takes seconds up to here (benchmarks/README.md); above, a page asks first


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
                                    layout=ss.map_layout, on_step=step, on_embed=embed_progress(bar))
        status.update(label=f"Map ready ({build.timing})", state="complete", expanded=False)
    memo[key] = build
    return build


def active_selection() -> Any:
    """The active run's picks with decisions, or None without a run."""
    run_id = st.session_state.get("run_id")
    return shared.store().selection(run_id) if run_id else None


def map_limits() -> tuple[int, int]:
    """Rows drawn one by one at most, and the sample a larger map draws (the defaults, or the environment's)."""
    return (int(os.environ.get("SELECTLLM_MAP_POINTS_MAX", map_density.ALL_POINTS_MAX)),
            int(os.environ.get("SELECTLLM_MAP_SAMPLE", map_density.SAMPLE_POINTS)))


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_figure(pool_id: str, build_id: int, color_by: str, height: int, names: tuple, picks: str, dups: str,
                marks: str, sample: int | None, *, _build: MapBuild, _selection: Any,
                _near_dups: NearDuplicates | None,
                _highlights: list[map_view.Highlight]) -> tuple[Any, map_density.LargeMap | None]:
    """The map's figure, kept while its inputs stay (each lasso reruns the page; 100k points take seconds), and
    what a large map draws (None for a map of every point)."""
    pool = shared.pool(pool_id).frame
    if sample is not None:
        return map_density.large_map_figure(pool, _build.coords, _build.plan.cluster_of, _selection, _near_dups,
                                            color_by=color_by, height=height, names=dict(names),
                                            highlights=_highlights, sample=sample)
    frame = map_view.map_frame(pool, _build.coords, _build.plan.cluster_of, _selection, _near_dups)
    return map_view.map_figure(frame, color_by=color_by, height=height, names=dict(names),
                               highlights=_highlights), None


def show_map(build: MapBuild, *, color_by: str, key: str, height: int = 560, names: dict[int, str] | None = None,
             near_dups: NearDuplicates | None = None,
             highlights: list[map_view.Highlight] | None = None) -> list[str]:
    """Draw the map (hovers name each row's near-duplicate group, highlights go on top); returns the row ids in
    the lasso or box. A large pool is drawn as a density and a sample, and the caption above the map says so;
    its lasso or box holds every row inside it, drawn or not."""
    selection, highlights = active_selection(), highlights or []
    dups = f"{near_dups.tau}|{near_dups.n_groups}|{near_dups.n_dropped}" if near_dups else ""
    most, sample = map_limits()
    fig, large = _map_figure(st.session_state.pool_id, id(build), color_by, height,
                             tuple(sorted((names or {}).items())), map_view.selection_key(selection), dups,
                             map_view.highlight_key(highlights), sample if len(build.coords) > most else None,
                             _build=build, _selection=selection, _near_dups=near_dups, _highlights=highlights)
    if large:
        st.caption(map_density.caption(large))
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("lasso", "box"),
                            config={"displaylogo": False})
    if not large:
        return map_view.selected_ids(event)
    chosen = map_density.selected_rows(event, build.coords, shared.pool(st.session_state.pool_id).frame["id"])
    if chosen:
        st.caption(map_density.selection_caption(len(chosen), len(map_view.selected_ids(event))))
    return chosen


# -- near-duplicates ------------------------------------------------------------------------------
def current_tau(prefix: str) -> float:
    """τ as the page's slider will show it on this run (its own state first, else the session's)."""
    ss = st.session_state
    return round(float(ss.get(f"{prefix}_neardup_tau", ss.get("near_dup_tau", DEFAULT_TAU))), 2)


def tau_slider(prefix: str) -> float:
    """The τ control, bound to st.session_state.near_dup_tau."""
    ss = st.session_state
    ss.near_dup_tau = st.slider("Similarity threshold τ (cosine)", neardup_view.TAU_MIN, neardup_view.TAU_MAX,
                                float(ss.get("near_dup_tau", DEFAULT_TAU)), neardup_view.TAU_STEP,
                                key=f"{prefix}_neardup_tau", help=neardup_view.TAU_HELP)
    return round(float(ss.near_dup_tau), 2)


@st.cache_resource(show_spinner=False, max_entries=4)
def _vector_memo() -> dict[tuple[str, str], np.ndarray]:
    return {}


def pool_vectors(pool: Pool) -> np.ndarray | None:
    """The pool's vectors when the embedding cache holds them all (read once per server), else None."""
    key, memo = (pool.pool_id, shared.embedder().model_id), _vector_memo()
    if key not in memo:
        found = cached_pool_vectors(pool, model_id=key[1], cache=shared.embedding_cache())
        if found is None:
            return None
        if len(memo) >= 4:  # a pool of 100k rows holds 150 MB of vectors
            memo.clear()
        memo[key] = found
    return memo[key]


@st.cache_resource(show_spinner=False)
def _dup_memo() -> dict[tuple[str, str, float], NearDuplicates | None]:
    return {}  # None: looked for in the result cache, not there, and not searched (a pool above AUTO_ROWS)


def near_duplicates(pool: Pool, tau: float, vectors: np.ndarray, *, search: bool | None = None) -> NearDuplicates | None:
    """The pool's groups at τ: remembered, else read from the result cache, else searched now (by default only
    up to AUTO_ROWS rows; None when not searched). A miss is remembered too: each lasso reruns the page, and
    hashing 100k vectors to look again costs half a second."""
    key, memo = (pool.pool_id, shared.embedder().model_id, tau), _dup_memo()
    if memo.get(key) is None and (key not in memo or search):
        found = cached_near_duplicates(pool, vectors=vectors, tau=tau) if key not in memo else None
        if found is None and (len(pool.frame) <= AUTO_ROWS if search is None else search):
            with st.spinner(f"Looking for near-duplicates among {len(pool.frame):,} rows…"):
                found = find_near_duplicates(pool, tau=tau, vectors=vectors)
        if len(memo) >= 64:
            memo.clear()
        memo[key] = found
    return memo[key]


def embed_progress(bar: Any) -> Callable[[int, int], None]:
    """Report embedding on a progress bar: rows done, rows per second and the time left."""
    rate = Throughput()
    return lambda done, total: bar.progress(done / total if total else 1.0, text=rate.sentence(done, total))


def embed_pool(pool: Pool) -> np.ndarray:
    """Embed the pool through the cache with a progress bar (the Map page would do the same)."""
    bar = st.progress(0.0, text="Loading the embedding model")
    embed_texts(pool.frame["text"].tolist(), embedder=shared.embedder(), cache=shared.embedding_cache(),
                batch_size=map_build.EMBED_BATCH, progress=embed_progress(bar))
    bar.empty()
    return pool_vectors(pool)


def near_dup_section(prefix: str, pool: Pool, *, save: Callable[[Pool], None],
                     vectors: np.ndarray | None = None) -> None:
    """τ, the counts, a few groups and the keep-one-per-group button; embeds or searches on request if needed."""
    tau, n = tau_slider(prefix), len(pool.frame)
    vectors = vectors if vectors is not None else pool_vectors(pool)
    dups = near_duplicates(pool, tau, vectors) if vectors is not None else None
    if dups is None:
        ask = st.empty()  # the question goes once it is answered
        with ask.container():
            st.info(neardup_view.not_embedded(pool, shared.embedder().model_id) if vectors is None
                    else neardup_view.not_searched(n), icon=":material/info:")
            label = "Embed {:,} rows and look for near-duplicates" if vectors is None else \
                "Look for near-duplicates among {:,} rows"
            if not st.button(label.format(n), key=f"{prefix}_neardup_{'embed' if vectors is None else 'search'}"):
                return
        dups = near_duplicates(pool, tau, vectors if vectors is not None else embed_pool(pool), search=True)
        ask.empty()
    near_dup_panel(prefix, pool, dups, save=save)


def save_and_open(pool: Pool) -> None:
    """Store a pool and make it the current one; the Map page shows what the save did on its next run."""
    saved = shared.store().save_pool(pool)
    shared.open_pool(saved.pool_id)
    st.session_state.map_saved = saved.message


def near_dup_panel(prefix: str, pool: Pool, dups: NearDuplicates, *, save: Callable[[Pool], None]) -> None:
    """The counts, the first groups and the button that saves the pool with one row per group."""
    st.caption(neardup_view.explain(dups, pool.report))
    for col, (label, value) in zip(st.columns(3), neardup_view.counts(dups), strict=True):
        col.metric(label, value)
    if not dups.groups:
        st.caption(f"{dups.summary} Lower τ to find looser matches.")
        return
    table = neardup_view.example_table(dups, pool)
    shown = table["group"].nunique()
    st.caption(f"The first {shown} of {dups.n_groups:,} groups, in pool order; similarity is the cosine to the kept "
               f"row of its group. Found in {dups.seconds:.1f} s with {dups.library}.")
    st.dataframe(neardup_view.shown_table(table), hide_index=True, height=min(38 + 35 * len(table), 400),
                 key=f"{prefix}_neardup_table",
                 column_config={"group": st.column_config.NumberColumn("Group", width="small"),
                                "role": st.column_config.TextColumn("Row", width="small"),
                                "similarity": st.column_config.TextColumn("Similarity", width="small"),
                                "instruction": st.column_config.TextColumn("Instruction", width="large"),
                                "input": st.column_config.TextColumn("Input", width="medium"), "id": None})
    if dups.n_groups > shown:
        with st.expander(f"All {dups.n_groups:,} groups ({dups.rows_in_groups:,} rows)"):
            st.dataframe(neardup_view.shown_table(neardup_view.example_table(dups, pool, groups=dups.n_groups)),
                         hide_index=True,
                         key=f"{prefix}_neardup_all", column_config={"id": None})
    st.button(neardup_view.keep_label(dups), key=f"{prefix}_neardup_keep", help=neardup_view.keep_help(dups, pool),
              on_click=lambda: save(keep_one_per_group(pool, dups)))

