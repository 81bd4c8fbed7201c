"""Select: choose the model, preview a few subsets, run the whole pool in the background, read each subset."""

from __future__ import annotations

import streamlit as st

from app_pages import _map, _runs
from app_pages import _shared as shared
from selectllm_core import pipeline
from selectllm_core.studio import jobs
from selectllm_core.studio.run_view import LOCAL_WARNING

ss, store = st.session_state, shared.store()
st.title("Select")

st.subheader("Model")
b = ss.backend
kinds = {"local": "Local (bundled SmolLM2-135M, offline)", "openai": "OpenAI-compatible server"}
b["kind"] = st.radio("Backend", list(kinds), list(kinds).index(b["kind"]), format_func=kinds.get,
                     horizontal=True, key="select_backend")
if b["kind"] == "local":
    st.warning(LOCAL_WARNING, icon=":material/warning:")
else:
    c1, c2, c3 = st.columns(3)
    b["base_url"] = c1.text_input("Base URL", b["base_url"], placeholder="https://api.openai.com/v1",
                                  key="select_base_url", help="vLLM, Ollama or llama.cpp: http://HOST:PORT/v1")
    b["model"] = c2.text_input("Model", b["model"], placeholder="gpt-4o-mini", key="select_model")
    typed = c3.text_input("API key", type="password", key="select_api_key",
                          # a callback runs before the script, so the sidebar already sees a new key
                          on_change=lambda: ss.update(api_key=ss.select_api_key or ss.api_key),
                          help="Held in this browser session's memory only; never saved or exported. "
                               "Leave empty for servers without keys, or set openai_api_key in st.secrets.")
    ss.api_key = typed or ss.api_key
    st.caption("Key: " + ("held in memory for this session." if shared.api_key() else "none (fine for local servers)."))
    if not b["model"]:
        st.info("Enter the model name the server knows.")
        st.stop()

st.subheader("Budget and split")
_map.plan_controls("select", order=True)
build, budget = _map.build_map(), shared.budget_plan()
config, backend = shared.run_config(), shared.chat_backend()
target = pipeline.run_id_of(shared.pool(ss.pool_id), config, backend, budget_plan=budget)
st.caption(budget.describe() + f". Prompt: {ss.prompt['preset']} (edit it on the Prompt page).")

frame_by_id = shared.pool(ss.pool_id).frame.set_index("id")
with st.expander("Preview a few subsets before the full run"):
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n = c1.number_input("Subsets to preview", 1, min(5, len(build.plan.subsets)), 2, key="select_preview_n")
    if c2.button("Preview", key="select_preview_go"):
        with st.spinner(f"Asking the model about {n} subset(s)…"):
            ss.select_preview = _runs.preview_subsets(build, budget, backend, int(n))
    for result in ss.get("select_preview", []):
        _runs.show_subset(result, frame_by_id, retry=False)

st.subheader("Full run")
runs = store.list_runs()
status = runs.set_index("run_id")["status"].get(target)
start = dict(workspace=shared.workspace(), backend=backend)
if jobs.is_running(target):
    st.button("Running…", disabled=True, key="select_running")
elif status == "complete":
    st.success(f"Run {target} with these settings is complete: review its picks.", icon=":material/check:")
    st.page_link("app_pages/review.py", label="Go to Review", icon=":material/fact_check:")
elif status == "incomplete":
    if st.button("Retry the failed subsets", type="primary", key="select_retry_failed"):
        jobs.start_retry(run_id=target, **start)
        st.rerun()
elif st.button("Start the run" if status is None else "Resume this run", type="primary", key="select_start"):
    jobs.start_run(pool_id=ss.pool_id, config=config, embedder=shared.embedder(),
                   cache_root=shared.embedding_cache().root, **start)
    ss.run_id = target
    ss.pop("sidebar_run", None)  # the sidebar's run picker shows the new run
    st.rerun()
if ss.run_id and ss.run_id != target:
    st.caption(f"Showing run {ss.run_id}; the settings above describe run {target}.")
if not ss.run_id and not jobs.is_running(target):
    st.stop()
_runs.run_panel(ss.run_id or target)
_runs.subset_browser(ss.run_id or target, frame_by_id)
