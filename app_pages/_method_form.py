"""The Compare page's form: choose another method, set its parameters (widgets made from the method
registry's Params) and budget, and start it in the background."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import _shared as shared
from selectllm_core import methods
from selectllm_core.errors import ConfigError
from selectllm_core.methods import Param
from selectllm_core.pool.load import Pool
from selectllm_core.store import Store
from selectllm_core.studio import compare_view, jobs
from selectllm_core.studio.run_view import LOCAL_WARNING


def param_input(p: Param, key: str, store: Store, active: Pool) -> Any:
    """The widget of one method parameter, made from its registry declaration (label, help, bounds, choices)."""
    label, help_ = p.title, p.help
    if p.widget == "run":
        return st.selectbox(label, compare_view.score_runs(store.list_runs(), active.pool_id), index=None, key=key,
                            help=help_, placeholder="row length")
    if p.widget == "column":
        numeric = compare_view.numeric_columns(active.frame)
        return st.selectbox(label, numeric, index=None, key=key, help=help_,
                            placeholder="none" if numeric else "the pool has no numeric column")
    if p.widget == "slider":
        return st.slider(label, float(p.min), float(p.max), float(p.default), 0.01, key=key, help=help_)
    if p.choices:
        return st.radio(label, list(p.choices), index=list(p.choices).index(p.default), key=key, horizontal=True,
                        help=help_)
    if p.type is bool:
        return st.checkbox(label, bool(p.default), key=key, help=help_)
    if p.type is int:
        return int(st.number_input(label, int(p.min or 0), int(p.max) if p.max is not None else None,
                                   int(p.default or 0), key=key, help=help_))
    if p.type is float:
        return float(st.number_input(label, p.min, p.max, float(p.default or 0.0), step=0.1, key=key, help=help_))
    return st.text_input(label, str(p.default or ""), key=key, help=help_) or None


def method_form(store: Store, active: Pool) -> None:
    """Pick a method, set its parameters and budget, start it in the background."""
    names = [n for n, m in methods.METHODS.items() if m.run is None]  # SelectLLM runs from the Select page
    name = st.selectbox("Method", names, key="compare_method",
                        format_func=lambda n: f"{methods.METHODS[n].title}: {methods.METHODS[n].summary}")
    method = methods.METHODS[name]
    if method.note:
        st.info(method.note, icon=":material/info:")
    ss, uses_llm = st.session_state, "llm" in method.needs
    n = len(active.frame)
    shown = [p for p in method.params if p.ui]
    cols = st.columns(4)
    budget = int(cols[0].number_input("Budget (rows to select)", 1, max(1, n - 1),
                                      min(int(ss.run_config["budget"]), n - 1), key="compare_budget",
                                      help="The same budget as the SelectLLM run makes a fair comparison."))
    params: dict[str, Any] = {}
    for i, p in enumerate(shown, start=1):
        with cols[i % 4]:
            params[p.name] = param_input(p, f"compare_{name}_{p.name}", store, active)
    if uses_llm:
        b = ss.backend
        model = (f"the local model {b.get('local_model') or 'smollm2-135m'}" if b["kind"] == "local"
                 else f"{b['model']} at {b['base_url'] or 'OpenAI'}")
        calls = compare_view.method_calls(method, params, n)
        st.caption(f"This method asks {model} about every one of the {n:,} rows (about {calls:,} model calls; "
                   "change the model on the Select page). A stopped run resumes from its saved batches.")
        if b["kind"] == "local":
            st.warning(LOCAL_WARNING, icon=":material/warning:")
    if st.button(f"Run {method.title}", type="primary", key="compare_start"):
        try:
            job = jobs.start_method(workspace=shared.workspace(), pool_id=ss.pool_id, name=name, budget=budget,
                                    params=params, backend=shared.chat_backend() if uses_llm else None,
                                    embedder=shared.embedder() if "embeddings" in method.needs else None,
                                    responses=shared.response_cache() is not None)
        except ConfigError as exc:  # parameters that cannot work: said here, in the form
            shared.stop_on_error(exc)
        ss.compare_job = job.run_id
