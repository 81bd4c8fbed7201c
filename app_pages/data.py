"""Data: load a pool (CSV, TSV, JSONL, JSON, Parquet), map its columns, check it, save it to the workspace."""

from __future__ import annotations

import io
import zlib

import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from selectllm_core.errors import PoolError
from selectllm_core.pool.load import ColumnMap, Pool, detect_columns, load_pool
from selectllm_core.pool.readers import parse_bytes
from selectllm_core.studio import search
from selectllm_core.studio.text import md_escape

st.title("Data")
store = shared.store()
SHOWN, LIKE_K = 200, 10  # rows a search lists; rows "more like this" lists


@st.cache_data(show_spinner="Reading the file…", max_entries=4)
def read_raw(data: bytes, name: str) -> pd.DataFrame:
    return parse_bytes(data, name).frame


@st.cache_resource(show_spinner="Checking rows…", max_entries=4)
def check_pool(data: bytes, name: str, instruction: str, input_: str | None, id_: str | None) -> Pool:
    upload = io.BytesIO(data)
    upload.name = name
    return load_pool(upload, columns=ColumnMap(instruction, input_, id_))


def report(pool: Pool) -> None:
    """Counts, dropped rows, a length histogram and the first rows of a pool."""
    r = pool.report
    cols = st.columns(5)
    for col, (label, value) in zip(cols, [("Rows read", r.rows_read), ("Kept", r.rows_kept),
                                          ("Duplicates dropped", r.duplicates_dropped),
                                          ("Empty dropped", r.empty_dropped), ("Bad rows", len(r.bad_rows))]):
        col.metric(label, f"{value:,}")
    for note in r.notes:
        st.info(md_escape(note))
    if r.bad_rows:
        with st.expander(f"{len(r.bad_rows)} bad rows (not loaded)"):
            st.dataframe(pd.DataFrame(r.bad_rows, columns=["row", "problem"]), hide_index=True)
    lengths = pd.DataFrame({"instruction length (characters)": pool.frame["instruction"].str.len()})
    fig = px.histogram(lengths, x="instruction length (characters)", nbins=60, height=260)
    fig.update_layout(margin={"l": 0, "r": 0, "t": 10, "b": 0}, yaxis_title="rows")
    st.plotly_chart(fig, key=f"data_hist_{id(pool)}")


def rows(pool: Pool) -> None:
    """The stored pool's first rows, or the rows matching a search; a row chosen lists the rows most like it."""
    frame = pool.frame
    query = st.text_input("Search the pool", key="data_search", placeholder=search.SEARCH_PLACEHOLDER,
                          help=search.SEARCH_HELP)
    if query.strip():
        hits = shared.pool_index(pool.pool_id).search(query)
        table = search.found_rows(frame, hits.head(SHOWN))
        st.caption(search.match_caption(len(hits), len(frame), shown=len(table)))
    else:
        table = frame.drop(columns=["text"]).head(50)
        st.caption(f"The first {len(table)} of {len(frame):,} rows.")
    if table.empty:
        return
    # a new search is a new table: its selection starts empty rather than pointing at another row
    event = st.dataframe(table, hide_index=True, height=min(38 + 35 * len(table), 400), on_select="rerun",
                         selection_mode="single-row",
                         key=f"data_rows_{pool.pool_id}_{zlib.crc32(search.fts_query(query).encode())}",
                         column_config={"rank": None, "snippet": None})
    if not event.selection.rows:
        st.caption("Select a row (the box at its left) to list the rows most like it.")
        return
    row_id = str(table["id"].iloc[event.selection.rows[0]])
    title = frame.set_index("id").at[row_id, "instruction"]
    st.markdown(f"**More like this:** the {LIKE_K} rows of the pool most like “{md_escape(title[:120])}”")
    vectors = _map.pool_vectors(pool)
    if vectors is None:
        ask = st.empty()  # the question goes once it is answered
        with ask.container():
            st.info(search.not_embedded(shared.embedder().model_id), icon=":material/info:")
            if not st.button(f"Embed {len(frame):,} rows", key="data_like_embed"):
                return
        vectors = _map.embed_pool(pool)
        ask.empty()
    near = search.more_like_this(vectors, frame["id"].astype(str).tolist(), [row_id], k=LIKE_K)
    st.container(key="data_like").dataframe(
        search.found_rows(frame, near), hide_index=True, height=min(38 + 35 * len(near), 400),
        column_config={"similarity": st.column_config.NumberColumn("Similarity", format="%.3f",
                                                                   help=search.SIMILARITY_HELP)})


def save(pool: Pool) -> None:
    """Store the checked pool and open it; what the save did is shown above the tabs after the rerun."""
    saved = store.save_pool(pool)
    shared.open_pool(saved.pool_id)
    st.session_state.data_saved = saved.message


if st.session_state.get("data_saved"):
    (st.info if "Identical" in st.session_state.data_saved else st.success)(
        md_escape(st.session_state.pop("data_saved")))

tab_current, tab_upload = st.tabs(["Current pool", "Load a new pool"])
with tab_current:
    pools = store.list_pools()
    labels = {pid: f"{name} · v{v} · {n:,} rows · {pid}"
              for pid, name, v, n in zip(pools["pool_id"], pools["name"], pools["version"], pools["n_rows"])}
    ids = list(labels)
    if st.session_state.get("data_pool_choice") != st.session_state.pool_id:
        # the picker shows the pool now open (after a save, or one opened elsewhere), not its last choice; set
        # through its key alone, as Streamlit asks of a widget whose state the page sets
        st.session_state.data_pool_choice = st.session_state.pool_id
    st.selectbox("Pool in the workspace", ids, format_func=labels.get,
                 key="data_pool_choice", on_change=lambda: shared.open_pool(st.session_state.data_pool_choice))
    active = shared.pool(st.session_state.pool_id)
    cols = active.report.columns
    st.caption(md_escape(f"Columns: instruction = {cols.instruction!r}, input = {cols.input!r}, "
                                  f"id = {cols.id!r} (schema {active.report.schema})"))
    report(active)
    st.subheader("Rows")
    rows(active)
    st.subheader("Near-duplicates")
    _map.near_dup_section("data", active, save=save)

with tab_upload:
    upload = st.file_uploader("Pool file", type=["csv", "tsv", "jsonl", "json", "parquet", "gz"],
                              key="data_upload", help="CSV, TSV, JSONL, JSON or Parquet, optionally .gz.")
    if upload is None:
        st.caption("Each row needs an instruction; an input (context) and an id column are optional.")
        st.stop()
    data = upload.getvalue()
    try:
        raw = read_raw(data, upload.name)
    except PoolError as exc:  # a file that cannot be read: say why in this tab
        shared.stop_on_error(exc)
    try:
        guess = detect_columns(raw)[1]
    except PoolError:
        st.warning("No column is named like an instruction (instruction, prompt, text): choose it below.")
        guess = ColumnMap(str(raw.columns[0]))
    st.dataframe(raw.head(10), hide_index=True, height=200)
    names, none = [str(c) for c in raw.columns], "(none)"
    c1, c2, c3 = st.columns(3)
    instruction = c1.selectbox("Instruction column", names, names.index(guess.instruction), key="data_col_ins")
    input_ = c2.selectbox("Input column", [none, *names], ([none, *names]).index(guess.input or none),
                          key="data_col_input")
    id_ = c3.selectbox("Id column", [none, *names], ([none, *names]).index(guess.id or none), key="data_col_id")
    try:
        new = check_pool(data, upload.name, instruction, None if input_ == none else input_,
                         None if id_ == none else id_)
    except PoolError as exc:  # rows or columns that cannot make a pool
        shared.stop_on_error(exc)
    st.button(f"Save to the workspace and open it ({len(new.frame):,} rows)", type="primary", key="data_save",
              on_click=save, args=(new,))
    report(new)
    st.dataframe(new.frame.drop(columns=["text"]).head(50), hide_index=True, height=240)
