"""Streamlit glue the pages share: cached resources, the session's settings, and widgets more than one page draws.

This module and the page scripts are the only code that imports streamlit; what they compute comes from
`selectllm_core.studio`. The session-state keys are documented in app.py; every helper here reads or writes
only those keys.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import streamlit as st

from selectllm_core.embed import (
    EMBED_MODEL_LABELS,
    EmbeddingCache,
    default_cache_dir,
    embedder_for,
)
from selectllm_core.engines.meter import Meter
from selectllm_core.errors import ConfigError, SelectLLMError, WorkspaceError
from selectllm_core.llm import DEFAULT_LOCAL_MODEL, ChatBackend, make_backend
from selectllm_core.llm.cache import ResponseCache
from selectllm_core.llm.prices import Price, price_for
from selectllm_core.methods.selectllm import order_checks
from selectllm_core.pipeline import RunConfig, plan
from selectllm_core.pool.load import Pool, load_pool
from selectllm_core.select.listwise import PromptSpec
from selectllm_core.select.prompts import load_template
from selectllm_core.select.spend import SpendEstimate, estimate_spend, subset_requests
from selectllm_core.split import BudgetPlan, SubsetPlan
from selectllm_core.store import Store, default_workspace
from selectllm_core.studio import map_build, settings
from selectllm_core.studio.search import PoolIndex
from selectllm_core.studio.text import md_escape

DEMO_FILE = Path(__file__).resolve().parent.parent / "demo" / "dolly_demo.jsonl"
DEMO_NAME = "Dolly demo"
# Widgets whose value comes from the cross-page keys: forgotten when a pool or run is opened, so they show it.
BOUND_WIDGETS = ("data_pool_choice", "map_budget", "map_subset_size", "map_picks", "map_split", "select_budget",
                 "select_subset_size", "select_picks", "select_split", "select_shuffle", "prompt_preset",
                 "prompt_template", "prompt_domain", "prompt_cut", "select_subset", "select_preview", "sidebar_run",
                 "sidebar_embed_model", "select_orders", "select_check_orders",
                 "select_aggregation")


# -- resources (one per server process) -----------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


def workspace() -> Path:
    """This session's workspace file: the one opened in the picker, else $SELECTLLM_WORKSPACE or
    ./selectllm-workspace.sqlite."""
    return Path(st.session_state.get("workspace") or default_workspace())


def store() -> Store:
    """The Store of this session's workspace (one per file, shared by the sessions that use it)."""
    return _store(str(workspace().resolve()))


# The embedding models the sidebar offers: None is the bundled all-MiniLM-L6-v2 (exact, the default).
EMBED_CHOICES = {None: "all-MiniLM-L6-v2 (exact, the default)",
                 "minilm-int8": "MiniLM int8 (2.4x faster, near-exact)",
                 "model2vec": "model2vec (fastest, approximate)"}


@st.cache_resource(show_spinner=False)
def _embedder(name: str | None) -> Any:
    return embedder_for(name)  # one per server process: it holds its loaded model


def embedder() -> Any:
    """The session's embedding model (sidebar; default the bundled all-MiniLM-L6-v2), loaded on first encode."""
    return _embedder(st.session_state.get("embed_model"))


def run_embedder(run_id: str) -> Any:
    """The embedding model a stored run used (the session's when it is the same one)."""
    name = store().get_run(run_id)["params"].get("embed_model")
    return embedder() if name == st.session_state.get("embed_model") else _embedder(name)


def embed_model_help(name: str | None) -> str:
    """What an embedding choice is, with its measured agreement with MiniLM."""
    return EMBED_MODEL_LABELS.get(name, "the bundled all-MiniLM-L6-v2 in fp32: the paper's embedder, the reference")


@st.cache_resource(show_spinner=False)
def _embedding_cache(root: str) -> EmbeddingCache:
    return EmbeddingCache(root)


def embedding_cache() -> EmbeddingCache:
    return _embedding_cache(str(default_cache_dir().resolve()))


@st.cache_resource(show_spinner=False)
def _response_cache(root: str) -> ResponseCache:
    return ResponseCache(root)


def stored_answers() -> ResponseCache:
    """The cache folder's response cache, whether or not this session reads it (the sidebar shows and clears it)."""
    return _response_cache(str(default_cache_dir().resolve()))


def response_cache() -> ResponseCache | None:
    """The response cache runs of this session read, unless the curator turned it off in the sidebar."""
    return stored_answers() if st.session_state.get("response_cache", True) else None


@st.cache_resource(show_spinner=False, max_entries=4)
def pool(pool_id: str) -> Pool:
    """A stored pool (shared read-only between sessions: never modify its frame)."""
    return store().load_pool(pool_id)


def pool_summary(pool_id: str) -> dict:
    """A stored pool's name, version and row count, from the workspace's pool list (its rows are not loaded)."""
    pools = store().list_pools().set_index("pool_id")
    if pool_id not in pools.index:
        store().load_pool(pool_id)  # raises UnknownPoolError, whose message says how to go on
    row = pools.loc[pool_id]
    return {"name": str(row["name"]), "version": int(row["version"]), "n_rows": int(row["n_rows"])}


@st.cache_resource(show_spinner=False, max_entries=4)
def pool_index(pool_id: str) -> PoolIndex:
    """The full-text index of a stored pool (built once per pool, in memory; searches never write)."""
    return PoolIndex(pool(pool_id).frame)


@st.cache_resource(show_spinner=False)
def local_backend(model: str = DEFAULT_LOCAL_MODEL) -> ChatBackend:
    """A local model by its registry name (default: the bundled SmolLM2), shared by every session (it serialises
    its own calls); a model that is not installed raises ConfigError with the install command."""
    return make_backend("local", model=model)


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Once per server: load the embedding model and compile UMAP in the background, so the first map is sooner."""
    thread = threading.Thread(target=map_build.warm_up, args=(embedder(),), name="selectllm-warm-up", daemon=True)
    thread.start()
    return thread


# -- the session's settings -----------------------------------------------------------------------
def init_session() -> None:
    """Set the cross-page keys once per session; on a first start, open the bundled demo pool."""
    ss = st.session_state
    ss.setdefault("backend", {"kind": "local", "model": "", "base_url": ""})
    ss.setdefault("api_key", "")
    ss.setdefault("map_layout", "umap")
    if "pool_id" in ss:
        return
    pools = store().list_pools()
    if pools.empty:
        open_pool(store().save_pool(load_pool(DEMO_FILE, name=DEMO_NAME)).pool_id)
    else:
        open_pool(str(pools["pool_id"].iloc[-1]))


def open_pool(pool_id: str) -> None:
    """Make a pool active, with its latest run (and that run's settings) when it has one."""
    ss = st.session_state
    for key in BOUND_WIDGETS:
        ss.pop(key, None)
    ss.pool_id = pool_id
    runs = store().list_runs()
    runs = runs[runs["pool_id"] == pool_id]
    ss.run_config, ss.prompt = settings.default_settings(pool_summary(pool_id)["n_rows"])
    ss.run_id = None
    selectllm = runs[runs["method"] == "selectllm"]  # other methods' runs are opened from the sidebar
    if not selectllm.empty:
        open_run(str(selectllm["run_id"].iloc[-1]))


def open_run(run_id: str) -> None:
    """Make a run active; a SelectLLM run's plan, prompt and model become the current settings."""
    ss = st.session_state
    for key in BOUND_WIDGETS:
        ss.pop(key, None)
    run = store().get_run(run_id)
    ss.run_id = run_id
    if run["method"] != "selectllm":  # another method's run: review and export it, keep the current settings
        return
    ss.run_config, ss.prompt, backend = settings.run_settings(run, ss.run_config, ss.prompt)
    ss.embed_model = run["params"].get("embed_model")
    if backend is not None:
        ss.backend = backend


def run_config() -> RunConfig:
    """The RunConfig the current settings describe (a custom template is saved beside the workspace)."""
    config = settings.run_config(st.session_state.run_config, st.session_state.prompt, workspace=workspace())
    return replace(config, embed_model=st.session_state.get("embed_model"))


def answer_format() -> str:
    """'json' when the current template asks for picks with reasons, else 'ids'."""
    return load_template(run_config().prompt)[1]


def api_key() -> str | None:
    """The OpenAI-compatible key: typed in this session, else st.secrets["openai_api_key"]; never stored."""
    if st.session_state.get("api_key"):
        return st.session_state.api_key
    try:
        return st.secrets.get("openai_api_key")
    except FileNotFoundError as exc:  # Streamlit's StreamlitSecretNotFoundError, for a missing or a broken file
        if getattr(exc, "error_id", None) in (None, "no-secrets-found"):
            return None  # no secrets file at all: simply no key
        raise ConfigError(settings.secrets_message(exc)) from exc


def chat_backend() -> ChatBackend:
    """The backend the current settings describe (the key lives only in this object, in memory)."""
    b = st.session_state.backend
    if b["kind"] == "local":
        name = b.get("local_model") or DEFAULT_LOCAL_MODEL
        return local_backend() if name == DEFAULT_LOCAL_MODEL else local_backend(name)
    return make_backend("openai", model=b["model"], base_url=b["base_url"] or None, api_key=api_key())


def price() -> Price | None:
    """The price of the current backend's calls (the workspace's table, else list prices; None: unknown)."""
    return price_for(chat_backend().describe(), store().prices())


def meter(**kwargs: Any) -> Meter:
    """A meter over the current backend: the session's response cache and the workspace's prices."""
    return Meter.for_backend(store(), chat_backend(), cache=response_cache(), **kwargs)


def prompt_spec() -> PromptSpec:
    """The prompt side of the current settings, as the run will send it."""
    cfg, prompt = st.session_state.run_config, st.session_state.prompt
    return PromptSpec(prompt["template"], answer_format(), prompt["domain"], cfg["max_tokens"], cfg["max_input_chars"])


def spend_estimate(plan: SubsetPlan, budget: BudgetPlan, *, exact: bool = True) -> SpendEstimate:
    """Calls, tokens and cost of the current settings' run over this split (the numbers `selectllm plan` prints)."""
    cfg, spec, backend = st.session_state.run_config, prompt_spec(), chat_backend()
    orders = cfg.get("orders", 1)
    requests = subset_requests(pool(st.session_state.pool_id).frame, plan.subsets, plan.cluster_of, prompt=spec,
                               k=budget.picks_per_subset, seed=cfg["seed"], shuffle=cfg["shuffle"], orders=orders,
                               checks=order_checks(cfg, budget.n_subsets))
    return estimate_spend(requests, backend=backend, price=price(), answer_format=spec.answer_format,
                          max_tokens=spec.max_tokens, cache=response_cache(), exact=exact, rounds=budget.rounds,
                          orders=orders, aggregation=cfg.get("aggregation", "borda"))


def confirm_above() -> float:
    """The estimated cost above which a run asks for confirmation (a workspace setting; $1 until set)."""
    return float(store().setting("confirm_above", "1.0"))


def budget_plan(config: RunConfig | None = None) -> BudgetPlan:
    """The plan of the current settings (raises ConfigError with a fix when they cannot work)."""
    return plan(pool(st.session_state.pool_id), config or run_config(), backend=chat_backend())


# -- pages' shared widgets ------------------------------------------------------------------------
def require_run() -> str:
    """The active run id, or a pointer to the Select page and a stop."""
    run_id = st.session_state.get("run_id")
    if not run_id:
        st.info("No selection run for this pool yet. Start one on the Select page.")
        st.page_link("app_pages/select.py", label="Go to Select", icon=":material/play_arrow:")
        st.stop()
    return run_id


def open_workspace(path: str | Path) -> None:
    """Open (or create) a workspace file and make it this session's; the session then starts over on it.

    Raises:
        WorkspaceError: the file cannot be opened (its message says why and how to fix it).
    """
    chosen = Path(path).expanduser().resolve()
    _store(str(chosen))  # opens it now, so a bad choice fails here, in the picker
    ss = st.session_state
    ss.workspace = str(chosen)
    for key in ("pool_id", "run_id", *BOUND_WIDGETS):  # init_session opens this workspace's latest pool
        ss.pop(key, None)


def workspace_picker(prefix: str) -> None:
    """A workspace file path and an Open button (or Enter): opens or creates that file for this session, reruns."""
    with st.form(f"{prefix}_workspace_form", border=False):
        path = st.text_input("Workspace file", key=f"{prefix}_workspace_path",
                             placeholder="/path/to/selectllm-workspace.sqlite",
                             help="An existing SelectLLM workspace, or a new file name to start an empty one.")
        if not st.form_submit_button("Open workspace", key=f"{prefix}_workspace_open", type="primary"):
            return
    if not path.strip():
        st.error("Enter the path of a workspace file first.", icon=":material/error:")
        return
    try:
        open_workspace(path.strip())
    except WorkspaceError as exc:
        st.error(md_escape(str(exc)), icon=":material/error:")
        return
    st.rerun()


def stop_on_error(exc: SelectLLMError) -> None:
    """Show a core error where it happened (in a tab or form; its message says how to fix it) and stop the page."""
    st.error(md_escape(str(exc)), icon=":material/error:")
    st.stop()


def show_app_error(exc: SelectLLMError) -> None:
    """The app's last line of defence: a core error no page handled, shown with its fix, never redacted.

    A workspace error also offers another workspace, since no page can work without one.
    """
    st.error(md_escape(str(exc)), icon=":material/error:")
    if isinstance(exc, WorkspaceError):
        st.subheader("Open another workspace")
        st.markdown("An existing workspace file, or a new file name to start an empty workspace; the file above is "
                    "left untouched. To change the default for every session, start the studio with "
                    "`SELECTLLM_WORKSPACE=FILE streamlit run app.py`.")
        workspace_picker("app")
