"""SelectLLM Studio: pick which unlabeled instructions to annotate, the SelectLLM way.

Run it with `streamlit run app.py`. On a first start the workspace is empty and the studio opens the bundled
demo pool (600 real Dolly instructions, see demo/README.md), so the map works with no key and no network.

Cross-page session state. These are the only keys pages share; widget keys carry a page prefix
(data_, map_, prompt_, select_, compare_, review_, export_) and are never read by another page.

    pool_id     str          the pool being curated (first start: the demo pool)
    run_id      str | None   the run shown on Select, Review and Export (default: the pool's latest run)
    run_config  dict         budget, subset_size, picks_per_subset, split, seed, shuffle (RunConfig fields)
    prompt      dict         preset, template (text), domain
    backend     dict         kind ("local" | "openai"), model, base_url; never the key
    api_key     str          the OpenAI-compatible key, held in memory only (or st.secrets["openai_api_key"]);
                             never written to the workspace or to exports
    map_layout  str          "umap" (default) or "pca" (a fast, explicit choice)
    near_dup_tau float       the near-duplicate threshold τ (cosine, default 0.95) that the Data and Map pages share
    curator     str          the curator's name, recorded with every decision ("" until typed in the sidebar)
    response_cache bool      reuse stored answers (default True; the sidebar's Spending toggle)
    embed_model str | None   the embedding model: None (bundled MiniLM), "minilm-int8" or "model2vec" (sidebar)
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
from selectllm_core.llm import models as local_models  # noqa: E402
from selectllm_core.studio.text import md_escape  # noqa: E402


def sidebar() -> None:
    """The active pool, run, backend and workspace."""
    ss = st.session_state
    active = shared.pool_summary(ss.pool_id)  # the pool list's summary: no page loads a pool's rows for this
    st.markdown("**Pool**")
    st.text(f"{active['name']} · v{active['version']}\n{active['n_rows']:,} rows · {ss.pool_id}")
    if active["name"] == shared.DEMO_NAME:
        st.caption("Demo data: databricks-dolly-15k (CC BY-SA 3.0) by Databricks, via the AlpaGasus subset. "
                   "Load your own pool on the Data page.")
    st.markdown("**Run**")
    _runs.sidebar_run()
    st.markdown("**Backend**")
    if ss.backend["kind"] == "local":
        local = local_models.LOCAL_MODELS.get(ss.backend.get("local_model") or "", local_models.LOCAL_MODELS[
            local_models.DEFAULT_LOCAL_MODEL])
        st.text(f"local {local.title}")
        if local.too_small:
            st.caption(":warning: demo only: too small to judge quality")
        elif local.measured:
            st.caption(f"order consistency {local.measured.order_consistency:.2f} measured "
                       f"(chance {local.measured.chance:.2f})")
    else:
        try:
            key_state = "key set (memory)" if shared.api_key() else "no key"
        except ConfigError as exc:  # a broken secrets file: say so here, the Select page takes a typed key
            key_state = "key unreadable"
            st.error(md_escape(str(exc)), icon=":material/error:")
        st.text(f"{ss.backend['model'] or '(no model)'}\n{ss.backend['base_url'] or 'api.openai.com'}\n{key_state}")
    st.markdown("**Curator**")
    ss.curator = st.text_input("Your name", ss.get("curator", ""), key="sidebar_curator", placeholder="e.g. Ana",
                               help="Recorded with every decision you make (Review's history shows who changed "
                                    "what and when).")
    spending()
    embedding()
    st.markdown("**Workspace**")
    st.text(str(shared.workspace().resolve()))
    with st.expander("Open or create another workspace"):
        shared.workspace_picker("sidebar")


def embedding() -> None:
    """The embedding model the map, the search and new runs use."""
    ss = st.session_state
    with st.expander("Embedding model"):
        choices = list(dict.fromkeys([*shared.EMBED_CHOICES, ss.get("embed_model")]))  # + a run's own model
        ss.embed_model = st.selectbox("Embed rows with", choices, choices.index(ss.get("embed_model")),
                                      format_func=lambda name: shared.EMBED_CHOICES.get(name, name),
                                      key="sidebar_embed_model",
                                      help="Vectors of each model are cached apart; a run records the model "
                                           "it used. The int8 model is built once per cache folder (seconds).")
        st.caption(shared.embed_model_help(ss.embed_model))


def spending() -> None:
    """The confirmation threshold and the response cache."""
    ss = st.session_state
    with st.expander("Spending"):
        threshold = st.number_input("Ask before runs estimated above ($)", 0.0, 1e6, shared.confirm_above(), 0.5,
                                    key="sidebar_confirm_above", help="Saved in the workspace. The Select page "
                                    "asks for confirmation before starting a run whose estimate is higher.")
        if threshold != shared.confirm_above():
            shared.store().set_setting("confirm_above", str(threshold))
        ss.response_cache = st.toggle("Reuse stored answers (response cache)", ss.get("response_cache", True),
                                      key="sidebar_response_cache",
                                      help="A request answered before (same model, prompt, schema, temperature) "
                                           "is answered from the cache: no call, no cost. Off: every request is "
                                           "sent again.")
        cache = shared.stored_answers()
        info = cache.info()
        st.caption(f"{info['answers']:,} stored answers, reused {info['hits']:,} times.")
        if st.button("Clear stored answers", key="sidebar_clear_cache", disabled=not info["answers"]):
            st.toast(f"{cache.clear():,} stored answers removed")
            st.rerun()


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
