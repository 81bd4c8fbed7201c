"""Select: choose the model, preview a few subsets, run the whole pool in the background, read each subset."""

from __future__ import annotations

import streamlit as st

from app_pages import _map, _runs
from app_pages import _shared as shared
from selectllm_core import pipeline
from selectllm_core.llm import models as local_models
from selectllm_core.llm.prices import money
from selectllm_core.studio import jobs, rounds_view
from selectllm_core.studio.run_view import LOCAL_WARNING
from selectllm_core.studio.text import md_escape

ss, store = st.session_state, shared.store()
st.title("Select")

st.subheader("Model")
b = ss.backend
kinds = {"local": "Local model (offline)", "openai": "OpenAI-compatible server"}
b["kind"] = st.radio("Backend", list(kinds), list(kinds).index(b["kind"]), format_func=kinds.get,
                     horizontal=True, key="select_backend")
if b["kind"] == "local":
    offered = {m.name: m for m in local_models.installed_models()}
    names = list(offered)
    current = b.get("local_model") if b.get("local_model") in offered else local_models.DEFAULT_LOCAL_MODEL
    b["local_model"] = st.selectbox("Local model", names, names.index(current), key="select_local_model",
                                    format_func=lambda name: local_models.choice_label(offered[name]),
                                    # a callback runs before the script, so the sidebar already names the choice
                                    on_change=lambda: ss.backend.update(local_model=ss.select_local_model),
                                    help="Installed local models, with the order consistency bench_judge "
                                         "measured (benchmarks/README.md, Offline judging).")
    chosen = offered[b["local_model"]]
    st.caption(chosen.measured.caption() if chosen.measured else "Not measured: run benchmarks/bench_judge.py.")
    for m in local_models.LOCAL_MODELS.values():
        if m.name not in offered:
            st.caption(f"Not installed: {m.title}. Install it with `{m.install_command()}`.")
    if chosen.too_small:
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
_runs.order_controls()
build, budget = _map.build_map(), shared.budget_plan()
config, backend = shared.run_config(), shared.chat_backend()
target = pipeline.run_id_of(shared.pool(ss.pool_id), config, backend, budget_plan=budget)
if budget.next_rounds:  # a tournament: say so before the run, with why
    st.info(md_escape(rounds_view.plan_summary(budget)) + ". " + rounds_view.ROUNDS_HELP,
            icon=":material/account_tree:")
st.caption((budget.rounds[0].describe_round() + " in round 1" + (f"; capped: {budget.cap_note}" if budget.cap_note
                                                                 else "") if budget.next_rounds else budget.describe())
           + f". Prompt: {ss.prompt['preset']} (edit it on the Prompt page).")

frame_by_id = shared.pool(ss.pool_id).frame.set_index("id")
with st.expander("Preview a few subsets before the full run"):
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n = c1.number_input("Subsets to preview", 1, min(5, len(build.plan.subsets)), 2, key="select_preview_n")
    if c2.button("Preview", key="select_preview_go"):
        with st.spinner(f"Asking the model about {n} subset(s)…"):
            ss.select_preview = _runs.preview_subsets(build, budget, backend, int(n))
    for result in ss.get("select_preview", []):
        _runs.show_subset(result, frame_by_id, retry=False)
    previews = store.usage("", kind="preview")
    st.caption(f"Previews are paid calls: the ledger records them ({previews['sent']:,} sent in this workspace so "
               f"far, {money(previews['cost'])}). The run answers a previewed subset from the response cache.")

st.subheader("Full run")
runs = store.list_runs()
status = runs.set_index("run_id")["status"].get(target)
spend = shared.spend_estimate(build.plan, budget, exact=False)  # the cost needs no exact count: local is free
m1, m2, m3 = st.columns(3)
m1.metric("LLM calls to send", f"{spend.to_send:,}", help=f"{spend.calls:,} requests; {spend.cached:,} are answered "
          "by the response cache (no call, no cost). A repair retry per unusable answer comes on top.")
m2.metric("Estimated cost", money(spend.cost) if spend.price else "unknown",
          help=f"At most {money(spend.cost_bound)} if every answer used its full length. Price: "
               + (spend.price.source if spend.price else "none known for this model: set it on the Prompt page"))
cap = m3.number_input("Spending cap ($, 0 = none)", 0.0, 1e6, 0.0, step=0.5, key="select_max_cost",
                      disabled=spend.price is None or b["kind"] == "local",
                      help="No call starts that could take this run's spending past the cap; the run stays "
                           "resumable with a higher cap.") or None
threshold = shared.confirm_above()
ask = status != "complete" and b["kind"] != "local" and (spend.cost is None or spend.cost > threshold)
if ask:
    st.warning(f"This run is estimated at {money(spend.cost)}, above your confirmation threshold of "
               f"{money(threshold)}." if spend.price else "No price is known for this model, so the cost of this "
               "run is unknown. Set its price on the Prompt page, or confirm below.", icon=":material/payments:")
confirmed = not ask or st.checkbox(
    f"Yes, spend up to {money(spend.cost_bound)} on this run" if spend.price else
    "Yes, start although the cost is unknown (no price for this model)", key=f"select_confirm_spend_{target}",
    help=f"Runs estimated above {money(threshold)} ask first (change it in the sidebar under Spending).")
start = dict(workspace=shared.workspace(), backend=backend, responses=shared.response_cache() is not None)
if jobs.is_running(target):
    st.button("Running…", disabled=True, key="select_running")
elif status == "complete":
    st.success(f"Run {target} with these settings is complete: review its picks.", icon=":material/check:")
    st.page_link("app_pages/review.py", label="Go to Review", icon=":material/fact_check:")
elif status == "incomplete":
    if st.button("Retry the failed subsets", type="primary", key="select_retry_failed"):
        jobs.start_retry(run_id=target, **start)
        st.rerun()
elif st.button("Start the run" if status is None else "Resume this run", type="primary", key="select_start",
               disabled=not confirmed):
    jobs.start_run(pool_id=ss.pool_id, config=config, embedder=shared.embedder(),
                   cache_root=shared.embedding_cache().root, max_cost=cap, **start)
    ss.setdefault("select_estimates", {})[target] = spend.cost
    ss.run_id = target
    ss.pop("sidebar_run", None)  # the sidebar's run picker shows the new run
    st.rerun()
if ss.run_id and ss.run_id != target:
    st.caption(f"Showing run {ss.run_id}; the settings above describe run {target}.")
if not ss.run_id and not jobs.is_running(target):
    st.stop()
_runs.run_panel(ss.run_id or target)
_runs.subset_browser(ss.run_id or target, frame_by_id)
