"""Export: the accepted (or selected) picks for annotation, byte for byte what `selectllm export` writes."""

from __future__ import annotations

import streamlit as st

from app_pages import _shared as shared
from selectllm_core.errors import UnknownRunError
from selectllm_core.pipeline import selection_frame
from selectllm_core.runs.export import FORMATS, export_frame
from selectllm_core.studio import download

ss, store = st.session_state, shared.store()
st.title("Export")
run_id = shared.require_run()
try:
    picks = store.selection(run_id)
except UnknownRunError:  # started in the background, not recorded yet
    st.info("The run is still preparing: nothing to export yet.")
    st.stop()
choices = download.row_choices(picks)
c1, c2, c3 = st.columns(3)
which = c1.radio("Rows", list(choices), 0 if (picks["decision"] == "accepted").any() else 1, format_func=choices.get,
                 key="export_which")
fmt = c2.selectbox("Format", FORMATS, key="export_format", format_func=download.FORMAT_LABELS.get)
batch = int(c3.number_input("Rows per file (0 = one file)", 0, 100_000, 0, key="export_batch"))

frame = selection_frame(store, run_id, which=which)
if frame.empty:
    st.info("Nothing to export with this choice. Accept picks on the Review page, or export every pick.")
    st.stop()
st.subheader(f"Preview: the first rows of {len(frame):,}")
st.dataframe(export_frame(frame, run_id=run_id).head(20), hide_index=True)

out = download.export_bytes(store, run_id, fmt=fmt, which=which, batch_size=batch or None)
d1, d2 = st.columns([1, 3])
d1.download_button(f"Download {out.kind(fmt)} ({len(frame):,} rows)", out.data, file_name=out.name, mime=out.mime,
                   type="primary", key="export_download", help=f"Saves {out.name}",
                   on_click=store.mark_exported, args=(run_id, frame["id"].tolist()))
d2.download_button("Download the manifest", out.manifest, file_name=out.manifest_name, mime="application/json",
                   key="export_manifest")
st.caption(f"The same file as `{download.cli_command(run_id, fmt=fmt, which=which, batch_size=batch)}`. The "
           "manifest records the pool, parameters, prompt and model (never a key), so the run can be repeated.")
