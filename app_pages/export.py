"""Export: the accepted (or selected) picks for annotation, byte for byte what `selectllm export` writes."""

from __future__ import annotations

import streamlit as st

from app_pages import _shared as shared
from selectllm_core.errors import UnknownRunError
from selectllm_core.runs.export import FORMATS, export_frame
from selectllm_core.runs.picks import which_picks
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
if fmt in download.FORMAT_NOTES:
    c2.caption(download.FORMAT_NOTES[fmt])
batch = int(c3.number_input("Rows per file (0 = one file)", 0, 100_000, 0, key="export_batch"))

frame = which_picks(picks, which)  # the picks read above: the workspace is read once more, by the export itself
if frame.empty:
    st.info("Nothing to export with this choice. Accept picks on the Review page, or export every pick.")
    st.stop()
st.subheader(f"Preview: the first rows of {len(frame):,}")
st.dataframe(export_frame(frame, run_id=run_id).head(20), hide_index=True)

out = download.export_bytes(store, run_id, fmt=fmt, which=which, batch_size=batch or None)
buttons = st.container(horizontal=True)
buttons.download_button(f"Download {out.kind(fmt)} ({len(frame):,} rows)", out.data, file_name=out.name,
                        mime=out.mime, type="primary", key="export_download", help=f"Saves {out.name}",
                        on_click=store.mark_exported, args=(run_id, frame["id"].tolist()))
if out.config is not None:
    buttons.download_button("Download the labeling config (XML)", out.config, file_name=out.config_name,
                            mime=download.EXPORT_MIME["config"], key="export_config", help=f"Saves {out.config_name}")
buttons.download_button("Download the manifest", out.manifest, file_name=out.manifest_name, mime="application/json",
                        key="export_manifest")
if out.config is not None:
    st.info(download.LABELSTUDIO_HOWTO, icon=":material/label:")
st.caption(f"The same file as `{download.cli_command(run_id, fmt=fmt, which=which, batch_size=batch)}`. The "
           "manifest records the pool, parameters, prompt and model (never a key), so the run can be repeated.")
