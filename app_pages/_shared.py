"""Streamlit glue the pages share: cached resources, session defaults, the map build with progress.

This module and the page scripts are the only code that imports streamlit. The session-state keys are
documented in app.py; every helper here reads or writes only those keys.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, default_cache_dir, embed_texts
from selectllm_core.errors import ConfigError, SelectLLMError, WorkspaceError
from selectllm_core.pipeline import RunConfig
from selectllm_core.select.prompts import PRESETS, load_template
from selectllm_core.split import SubsetPlan, make_subsets
from selectllm_core.store import Store, default_workspace
from selectllm_core.studio import ui_logic

DEMO_FILE = Path(__file__).resolve().parent.parent / "demo" / "dolly_demo.jsonl"
DEMO_NAME = "Dolly demo"
LOCAL_WARNING = (
    "The bundled local model (SmolLM2-135M) runs offline, but it is far too small to judge instructions: its "
    "picks are close to arbitrary and its reasons often do not match the ids. Use it to try the studio. For "
    "selections worth annotating, choose **OpenAI-compatible** and point it at OpenAI, a vLLM or Ollama server, "
    "or a llama.cpp server (`python -m llama_cpp.server --model FILE`) running a capable model."
)
PLAN_FIELDS = ("budget", "subset_size", "picks_per_subset", "split", "seed", "shuffle", "max_tokens",
               "max_input_chars", "sample")
# Widgets whose value comes from the cross-page keys: forgotten when a pool or run is opened, so they show it.
BOUND_WIDGETS = ("data_pool_choice", "map_budget", "map_subset_size", "map_picks", "map_split", "select_budget",
                 "select_subset_size", "select_picks", "select_split", "select_shuffle", "prompt_preset",
                 "prompt_template", "prompt_domain", "prompt_cut", "select_subset", "select_preview", "sidebar_run")


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


@st.cache_resource(show_spinner=False)
def embedder() -> Any:
    """The bundled all-MiniLM-L6-v2 (loaded on first encode)."""
    return SentenceTransformerEmbedder()


@st.cache_resource(show_spinner=False)
def _embedding_cache(root: str) -> EmbeddingCache:
    return EmbeddingCache(root)


def embedding_cache() -> EmbeddingCache:
    return _embedding_cache(str(default_cache_dir().resolve()))


@st.cache_resource(show_spinner=False, max_entries=4)
def pool(pool_id: str) -> Any:
    """A stored pool (shared read-only between sessions: never modify its frame)."""
    return store().load_pool(pool_id)


@st.cache_resource(show_spinner=False)
def local_backend() -> Any:
    """The bundled local model, shared by every session (it serialises its own calls)."""
    from selectllm_core.llm import make_backend

    return make_backend("local")


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Once per server: load the embedding model and compile UMAP in the background, so the first map is sooner."""
    from selectllm_core.embed.projection import warm_up as compile_umap

    model = embedder()

    def work() -> None:
        model.encode(["warm up"])
        compile_umap()

    thread = threading.Thread(target=work, name="selectllm-warm-up", daemon=True)
    thread.start()
    return thread


# -- session defaults -----------------------------------------------------------------------------
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
        from selectllm_core.pool.load import load_pool

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
    ss.run_config = {"budget": ui_logic.default_budget(len(pool(pool_id).frame)), "subset_size": None,
                     "picks_per_subset": None, "split": "diverse", "seed": 0, "shuffle": True, "max_tokens": 512,
                     "max_input_chars": None, "sample": None}
    ss.prompt = {"preset": "default", "template": PRESETS["default"].template, "domain": "", "price_per_1k": 0.001}
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
    params = run["params"]
    ss.run_id = run_id
    if run["method"] != "selectllm":  # another method's run: review and export it, keep the current settings
        return
    ss.run_config = {k: params.get(k, ss.run_config.get(k)) for k in PLAN_FIELDS}
    preset = params.get("prompt") if params.get("prompt") in PRESETS else "custom"
    ss.prompt = {**ss.prompt, "preset": preset, "template": run["prompt"], "domain": params.get("domain", "")}
    if run["backend"].get("kind") == "openai":
        ss.backend = {"kind": "openai", "model": run["backend"].get("model", ""),
                      "base_url": run["backend"].get("base_url", "")}


def run_config() -> RunConfig:
    """The RunConfig the current settings describe (a custom template is saved beside the workspace)."""
    ss = st.session_state
    path = workspace().resolve()
    folder = path.with_name(path.name + ".templates")  # beside the workspace, named after it
    prompt = ui_logic.template_ref(ss.prompt["template"], folder=folder)
    return RunConfig(**{k: ss.run_config[k] for k in PLAN_FIELDS}, prompt=prompt, domain=ss.prompt["domain"])


def api_key() -> str | None:
    """The OpenAI-compatible key: typed in this session, else st.secrets["openai_api_key"]; never stored."""
    if st.session_state.get("api_key"):
        return st.session_state.api_key
    try:
        return st.secrets.get("openai_api_key")
    except FileNotFoundError as exc:  # Streamlit's StreamlitSecretNotFoundError, for a missing or a broken file
        if getattr(exc, "error_id", None) in (None, "no-secrets-found"):
            return None  # no secrets file at all: simply no key
        raise ConfigError(_secrets_message(exc)) from exc


def _secrets_message(exc: Exception) -> str:
    """What is wrong with Streamlit's secrets file and how to go on (a TOML parse error quotes no file content)."""
    found = getattr(exc, "exec_kwargs", {})
    where = f" {found['path']}" if found.get("path") else ""
    return (f"Cannot read the API key from the secrets file{where}: {found.get('error', exc)}. Fix the TOML there "
            "(a quoted string: openai_api_key = \"sk-...\"), or type the key in the API key box on the Select page, "
            "which needs no file and keeps the key in this session's memory only.")


def chat_backend() -> Any:
    """The backend the current settings describe (the key lives only in this object, in memory)."""
    from selectllm_core.llm import make_backend

    b = st.session_state.backend
    if b["kind"] == "local":
        return local_backend()
    return make_backend("openai", model=b["model"], base_url=b["base_url"] or None, api_key=api_key())


# -- budget, split and map ------------------------------------------------------------------------
def plan_controls(prefix: str, *, order: bool = False) -> None:
    """Budget and split inputs (and, with order, the shuffle switch), bound to st.session_state.run_config."""
    cfg = st.session_state.run_config
    n = len(pool(st.session_state.pool_id).frame)
    c1, c2, c3, c4 = st.columns(4)
    cfg["budget"] = int(c1.number_input("Budget (rows to annotate)", 1, max(1, n - 1), int(cfg["budget"]),
                                        key=f"{prefix}_budget"))
    size = c2.number_input("Subset size (0 = as in the paper)", 0, n, int(cfg["subset_size"] or 0),
                           key=f"{prefix}_subset_size", help="Candidates the model sees per call.")
    cfg["subset_size"] = int(size) or None
    picks = c3.number_input("Picks per subset (0 = derived)", 0, 50, int(cfg["picks_per_subset"] or 0),
                            key=f"{prefix}_picks")
    cfg["picks_per_subset"] = int(picks) or None
    splits = ["diverse", "similar", "random"]
    cfg["split"] = c4.selectbox("Split", splits, splits.index(cfg["split"]), key=f"{prefix}_split",
                                help="diverse: each subset holds one row of every cluster (the paper's method).")
    if order:
        cfg["shuffle"] = st.checkbox(
            "Shuffle the candidates in each subset", bool(cfg["shuffle"]), key=f"{prefix}_shuffle",
            help="On (the default): each subset is shown to the model in a seeded random order, which spreads a "
                 "preference for early or late positions over all rows. Off: the split's own order. The Compare "
                 "page tests each run's picks for such a position bias.")


@dataclass
class MapBuild:
    """What the map shows: vectors, the split the run will use, and 2-D coordinates."""

    model_id: str
    vectors: np.ndarray
    plan: SubsetPlan
    coords: np.ndarray


@st.cache_resource(show_spinner=False)
def _builds() -> dict:
    return {}


def budget_plan() -> Any:
    """The Budget of the current settings (raises ConfigError with a fix when they cannot work)."""
    from selectllm_core.pipeline import plan

    return plan(pool(st.session_state.pool_id), run_config(), backend=chat_backend())


def build_map() -> MapBuild:
    """Embed, split and project the active pool; the first build shows its steps, later ones are instant."""
    from selectllm_core.embed.projection import ProjectionParams, cached_projection, compute_projection

    ss, emb, cache = st.session_state, embedder(), embedding_cache()
    p, budget = pool(ss.pool_id), budget_plan()
    params = ProjectionParams(method=ss.map_layout)
    key = (ss.pool_id, emb.model_id, str(asdict(budget)), ss.run_config["split"], ss.run_config["seed"], params)
    memo = _builds()
    if key in memo:
        return memo[key]
    texts, clock = p.frame["text"].tolist(), time.perf_counter()
    with st.status("Building the map…", expanded=True) as status:
        bar = st.progress(0.0, text="Loading the embedding model")
        # longest first: each batch then pads to similar lengths (4x less work on pools with long inputs)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        done = embed_texts([texts[i] for i in order], embedder=emb, cache=cache, batch_size=64,
                           progress=lambda d, t: bar.progress(d / t, text=f"Embedding {d:,} / {t:,} rows")).vectors
        vectors = np.empty_like(done)
        vectors[order] = done
        bar.progress(1.0, text=f"Embedded {len(texts):,} rows with {emb.model_id}")
        times = {"embedding": time.perf_counter() - clock}
        st.write(f"Clustering: {budget.describe()}")
        plan = make_subsets(vectors, budget, strategy=ss.run_config["split"], random_state=ss.run_config["seed"])
        times["clustering"] = time.perf_counter() - clock - times["embedding"]
        if cached_projection(model_id=emb.model_id, pool_id=ss.pool_id, n_rows=len(texts), params=params) is None:
            st.write(f"Projecting to 2-D with {params.method.upper()} (the first map after a server start takes "
                     "longest)")
        coords = compute_projection(vectors, model_id=emb.model_id, pool_id=ss.pool_id, params=params,
                                    progress=lambda m: st.write(m[0].upper() + m[1:]))
        times["layout"] = time.perf_counter() - clock - times["embedding"] - times["clustering"]
        spent = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        status.update(label=f"Map ready ({spent})", state="complete", expanded=False)
    memo[key] = MapBuild(emb.model_id, vectors, plan, coords)
    return memo[key]


def active_selection() -> Any:
    """The active run's picks with decisions, or None without a run."""
    run_id = st.session_state.get("run_id")
    return store().selection(run_id) if run_id else None


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_figure(pool_id: str, build_id: int, color_by: str, height: int, names: tuple, picks: str, *,
                _build: MapBuild, _selection: Any) -> Any:
    """The map's figure, kept while its inputs stay (each lasso reruns the page; 100k points take seconds)."""
    frame = ui_logic.map_frame(pool(pool_id).frame, _build.coords, _build.plan.cluster_of, _selection)
    return ui_logic.map_figure(frame, color_by=color_by, height=height, names=dict(names))


def show_map(build: MapBuild, *, color_by: str, key: str, height: int = 560,
             names: dict[int, str] | None = None) -> list[str]:
    """Draw the map; returns the row ids inside the current lasso or box."""
    selection = active_selection()
    picks = "" if selection is None else str(pd.util.hash_pandas_object(selection[["id", "decision"]]).sum())
    fig = _map_figure(st.session_state.pool_id, id(build), color_by, height, tuple(sorted((names or {}).items())),
                      picks, _build=build, _selection=selection)
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("lasso", "box"),
                            config={"displaylogo": False})
    return ui_logic.selected_ids(event)


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
        st.error(ui_logic.md_escape(str(exc)), icon=":material/error:")
        return
    st.rerun()


def show_app_error(exc: SelectLLMError) -> None:
    """The app's last line of defence: a core error no page handled, shown with its fix, never redacted.

    A workspace error also offers another workspace, since no page can work without one.
    """
    st.error(ui_logic.md_escape(str(exc)), icon=":material/error:")
    if isinstance(exc, WorkspaceError):
        st.subheader("Open another workspace")
        st.markdown("An existing workspace file, or a new file name to start an empty workspace; the file above is "
                    "left untouched. To change the default for every session, start the studio with "
                    "`SELECTLLM_WORKSPACE=FILE streamlit run app.py`.")
        workspace_picker("app")


def stop_on_error(exc: SelectLLMError) -> None:
    """Show a core error (its message says how to fix it) and stop the page."""
    st.error(ui_logic.md_escape(str(exc)), icon=":material/error:")
    st.stop()


def answer_format() -> str:
    """'json' when the current template asks for picks with reasons, else 'ids'."""
    return load_template(run_config().prompt)[1]
