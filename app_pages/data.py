"""Data: load a pool (CSV, TSV, JSONL, JSON, Parquet), map its columns, check it, save it to the workspace."""

from __future__ import annotations

import io

import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages import _shared as shared
from selectllm_core.errors import PoolError
from selectllm_core.pool.load import ColumnMap, Pool, detect_columns, load_pool
from selectllm_core.pool.readers import parse_bytes
from selectllm_core.studio.text import md_escape

st.title("Data")
store = shared.store()


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
    st.dataframe(pool.frame.drop(columns=["text"]).head(50), hide_index=True, height=240)


def save(pool: Pool) -> None:
    """Store the checked pool and open it; what the save did is shown above the tabs after the rerun."""
    saved = store.save_pool(pool)
    shared.open_pool(saved.pool_id)
    st.session_state.data_pool_choice = saved.pool_id  # the picker shows the pool now open, not the last choice
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
    st.selectbox("Pool in the workspace", ids, index=ids.index(st.session_state.pool_id), format_func=labels.get,
                 key="data_pool_choice", on_change=lambda: shared.open_pool(st.session_state.data_pool_choice))
    active = shared.pool(st.session_state.pool_id)
    cols = active.report.columns
    st.caption(md_escape(f"Columns: instruction = {cols.instruction!r}, input = {cols.input!r}, "
                                  f"id = {cols.id!r} (schema {active.report.schema})"))
    report(active)

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
