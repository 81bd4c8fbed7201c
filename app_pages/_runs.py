"""Streamlit views of runs for the Select and Compare pages and the sidebar: preview, progress, subsets."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from app_pages import _shared as shared
from selectllm_core.llm import ChatBackend
from selectllm_core.pipeline import degradations
from selectllm_core.select.listwise import PromptSpec
from selectllm_core.split import BudgetPlan
from selectllm_core.studio import compare_view, jobs, run_view
from selectllm_core.studio.map_build import MapBuild
from selectllm_core.studio.text import md_escape


def live(run_id: str, body: Callable[[], None], *, every: float = 2) -> None:
    """Draw body; while the run works in the background, as a fragment that draws itself again every few seconds."""
    if jobs.is_running(run_id):
        st.fragment(run_every=every)(body)()
    else:
        body()


def preview_subsets(build: MapBuild, budget: BudgetPlan, backend: ChatBackend, n: int) -> list[dict]:
    """Ask the model about the first n subsets of the current settings without storing anything."""
    cfg, prompt = st.session_state.run_config, st.session_state.prompt
    spec = PromptSpec(prompt["template"], shared.answer_format(), prompt["domain"], cfg["max_tokens"],
                      cfg["max_input_chars"])
    return run_view.preview_subsets(shared.pool(st.session_state.pool_id).frame, build.plan, backend=backend,
                                    prompt=spec, k=budget.picks_per_subset, seed=cfg["seed"], shuffle=cfg["shuffle"],
                                    n=n)


def show_subset(result: dict, frame_by_id: pd.DataFrame, *, retry: bool, run_id: str | None = None) -> None:
    """One subset: candidates as the model saw them, picks highlighted with their reasons; raw answer if failed."""
    status, subset = result["status"], result["subset"]
    st.markdown(f"**Subset {subset}** · {status} · {len(result['members'])} candidates, "
                f"{len(result['picks'])} pick(s)")
    table = run_view.subset_table(result, frame_by_id)
    table["pick"] = ["" if pd.isna(v) else f"pick {v}" for v in table["pick"]]
    styled = table.style.apply(lambda r: ["background-color: #fde68a" if r["pick"] else ""] * len(r), axis=1)
    st.dataframe(styled, hide_index=True, height=min(38 + 35 * len(table), 400), column_config={
        "#": st.column_config.NumberColumn("#", width="small", help="The id the model saw"),
        "pick": st.column_config.TextColumn("Pick", width="small", help="Pick order (empty: passed over)"),
        "instruction": st.column_config.TextColumn("Instruction", width="large"),
        "reason": st.column_config.TextColumn("Model's reason", width="large"),
        "input": st.column_config.TextColumn("Input", width="medium"), "id": None})
    if status == "ok":
        return
    st.error(md_escape(result.get("error") or "The model gave no usable answer."), icon=":material/error:")
    for i, raw in enumerate(result.get("raw") or [], start=1):
        st.caption(f"Raw answer {i} (shown as text)")
        st.code(raw or "(empty)", language=None, wrap_lines=True)
    if retry and run_id and st.button("Retry this subset", key=f"select_retry_{subset}"):
        jobs.start_retry(workspace=shared.workspace(), run_id=run_id, backend=shared.chat_backend(),
                         subsets=[subset])
        st.rerun()


def run_panel(run_id: str) -> None:
    """The run's progress read from the workspace; refreshes itself every 2 s while the run works."""
    def body() -> None:
        job, prog = jobs.get(run_id), run_view.run_progress(shared.store(), run_id)
        running = job is not None and job.running
        if prog is None:
            st.progress(0.0, text=f"Preparing ({job.stage})…" if running else "Not started")
        else:
            st.progress(prog.fraction, text=prog.text)
            usage = shared.store().usage(run_id)
            st.caption(f"Run {run_id}: {usage['calls']} LLM calls, {usage['prompt_tokens']:,} prompt and "
                       f"{usage['completion_tokens']:,} answer tokens.")
            for line in degradations(shared.store(), run_id):
                st.warning(md_escape(line), icon=":material/warning:")
            if not running and prog.status in ("running", "interrupted"):
                st.warning("This run stopped before it finished. Start it again with the same settings to "
                           "resume: finished subsets are kept.")
        if job is not None and job.error:
            st.error(md_escape(job.error), icon=":material/error:")
        if not running and st.session_state.get("select_was_running"):
            st.session_state.select_was_running = False
            st.rerun(scope="app")
        st.session_state.select_was_running = running

    live(run_id, body)


def method_panel(run_id: str) -> None:
    """A method the Compare page started: its progress, then its outcome (refreshes every 2 s while it works)."""
    ss = st.session_state

    def body() -> None:
        job = jobs.get(run_id)
        if job is None:
            return
        if job.running:
            count = f" {job.done:,} / {job.total:,}" if job.total else ""
            st.progress(min(1.0, job.done / job.total) if job.total else 0.0, text=f"{run_id}: {job.stage}{count}")
        elif job.error:
            st.error(md_escape(job.error), icon=":material/error:")
        elif job.summary:
            st.success(md_escape(compare_view.job_message(run_id, job.summary)), icon=":material/check_circle:")
        if not job.running and ss.get("compare_was_running"):
            ss.compare_was_running = False
            chosen = ss.get("compare_runs")
            if chosen is not None and run_id not in chosen:
                ss.compare_runs = [*chosen, run_id]
            st.rerun(scope="app")
        ss.compare_was_running = job.running

    live(run_id, body)


def sidebar_run() -> None:
    """A picker of the pool's runs, and the active run's state (refreshed every 3 s while it works)."""
    ss = st.session_state
    runs = shared.store().list_runs()
    runs = runs[runs["pool_id"] == ss.pool_id]
    if len(runs) > 1 or (len(runs) == 1 and ss.get("run_id") is None):
        labels = {r: f"{r} · {m}" for r, m in zip(runs["run_id"], runs["method"])}
        ids = list(labels)
        st.selectbox("Run", ids, ids.index(ss.run_id) if ss.get("run_id") in labels else None,
                     format_func=labels.get, key="sidebar_run", label_visibility="collapsed",
                     placeholder="Open a run", on_change=lambda: shared.open_run(ss.sidebar_run))

    def body() -> None:
        run_id = st.session_state.get("run_id")
        prog = run_view.run_progress(shared.store(), run_id) if run_id else None
        if not run_id:
            st.text("none yet")
        else:
            st.text(f"{run_id}\n" + (f"{prog.label} · {prog.done}/{prog.total} subsets" if prog else "starting"))

    run_id = st.session_state.get("run_id")
    if run_id:
        live(run_id, body, every=3)
    else:
        body()


def subset_browser(run_id: str, frame_by_id: pd.DataFrame) -> None:
    """Pick a stored subset (failed ones first) and show it."""
    results = shared.store().subset_results(run_id)
    if not results:
        return
    st.subheader("Subsets")
    results.sort(key=lambda r: (r["status"] == "ok", r["subset"]))
    labels = [f"subset {r['subset']} · {r['status']} · {len(r['picks'])} pick(s)" for r in results]
    index = st.selectbox("Subset", range(len(results)), format_func=labels.__getitem__, key="select_subset")
    show_subset(results[index], frame_by_id, retry=True, run_id=run_id)
