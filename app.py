"""SelectLLM Studio: pick which unlabeled instructions to annotate, the SelectLLM way.

Run it with `streamlit run app.py`. On a first start the workspace is empty and the studio opens the bundled
demo pool (600 real Dolly instructions, see demo/README.md), so the map works with no key and no network.

Cross-page session state. These are the only keys pages share; widget keys carry a page prefix
(data_, map_, prompt_, select_, compare_, review_, export_) and are never read by another page.

    pool_id     str          the pool being curated (first start: the demo pool)
    run_id      str | None   the run shown on Select, Review and Export (default: the pool's latest run)
    run_config  dict         budget, subset_size, picks_per_subset, split, seed, shuffle (RunConfig fields)
    prompt      dict         preset, template (text), domain, price_per_1k (for the cost estimate)
    backend     dict         kind ("local" | "openai"), model, base_url; never the key
    api_key     str          the OpenAI-compatible key, held in memory only (or st.secrets["openai_api_key"]);
                             never written to the workspace or to exports
    map_layout  str          "umap" (default) or "pca" (a fast, explicit choice)
    workspace   str          the workspace file this session opened in the picker (an absolute path); unset,
                             the session uses $SELECTLLM_WORKSPACE or ./selectllm-workspace.sqlite

The page scripts live in app_pages/, not pages/: Streamlit runs a folder named pages/ in its older
multipage mode when a fresh server's first request is a page URL (a bookmark or a reload), bypassing
this router and its session setup. Each page is a short script (read widgets, call the core, render);
what it computes lives in selectllm_core/studio/, plain functions that the tests call directly.

A core error (SelectLLMError) that no page handles is shown here as st.error with its message, which says how
to fix it; a workspace that cannot be opened also gets a picker for another one.

Everything else lives in the workspace file (pools, runs, subset results, decisions), so a reload or a
second browser tab sees the same state, and a background run keeps going while pages change.
"""

from __future__ import annotations

import os

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app_pages import _runs  # noqa: E402 - the environment above must be set first
from app_pages import _shared as shared  # noqa: E402
from selectllm_core.errors import ConfigError, SelectLLMError  # noqa: E402
from selectllm_core.studio.text import md_escape  # noqa: E402


def sidebar() -> None:
    """The active pool, run, backend and workspace."""
    ss = st.session_state
    active = shared.pool(ss.pool_id)
    st.markdown("**Pool**")
    pools = shared.store().list_pools().set_index("pool_id")
    version = int(pools["version"].get(ss.pool_id, 1))
    st.text(f"{active.name} · v{version}\n{len(active.frame):,} rows · {ss.pool_id}")
    if active.name == shared.DEMO_NAME:
        st.caption("Demo data: databricks-dolly-15k (CC BY-SA 3.0) by Databricks, via the AlpaGasus subset. "
                   "Load your own pool on the Data page.")
    st.markdown("**Run**")
    _runs.sidebar_run()
    st.markdown("**Backend**")
    if ss.backend["kind"] == "local":
        st.text("local SmolLM2-135M")
        st.caption(":warning: demo only: too small to judge quality")
    else:
        try:
            key_state = "key set (memory)" if shared.api_key() else "no key"
        except ConfigError as exc:  # a broken secrets file: say so here, the Select page takes a typed key
            key_state = "key unreadable"
            st.error(md_escape(str(exc)), icon=":material/error:")
        st.text(f"{ss.backend['model'] or '(no model)'}\n{ss.backend['base_url'] or 'api.openai.com'}\n{key_state}")
    st.markdown("**Workspace**")
    st.text(str(shared.workspace().resolve()))


st.set_page_config(page_title="SelectLLM Studio", page_icon=":material/filter_alt:", layout="wide")
nav = st.navigation([
    st.Page("app_pages/data.py", title="Data", icon=":material/table_view:"),
    st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:", default=True),
    st.Page("app_pages/prompt.py", title="Prompt", icon=":material/edit_note:"),
    st.Page("app_pages/select.py", title="Select", icon=":material/play_arrow:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("app_pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
])

try:  # only the core's errors: Streamlit's own stop and rerun exceptions must pass through
    shared.init_session()
    shared.warm_up()
    with st.sidebar:
        sidebar()
    nav.run()
except SelectLLMError as exc:
    shared.show_app_error(exc)
