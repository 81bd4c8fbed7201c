"""Streamlit views of runs for the Select and Compare pages and the sidebar: preview, progress, subsets."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from app_pages import _shared as shared
from selectllm_core import pipeline
from selectllm_core.errors import SelectLLMError
from selectllm_core.llm import ChatBackend, can_score
from selectllm_core.methods.selectllm import PARAMS as SELECTLLM_PARAMS
from selectllm_core.pipeline import degradations
from selectllm_core.pool.load import format_text
from selectllm_core.runs.evidence import run_evidence
from selectllm_core.select.alignment import Alignment, check_reasons
from selectllm_core.split import BudgetPlan
from selectllm_core.studio import compare_view, curate, jobs, rounds_view, run_view
from selectllm_core.studio.map_build import MapBuild
from selectllm_core.studio.text import md_escape

PARAMS = {p.name: p for p in SELECTLLM_PARAMS}
ORDER_CHOICES = [1, 2, 4, 8]


def live(run_id: str, body: Callable[[], None], *, every: float = 2) -> None:
    """Draw body; while the run works in the background, as a fragment that draws itself again every few seconds."""
    if jobs.is_running(run_id):
        st.fragment(run_every=every)(body)()
    else:
        body()


def preview_subsets(build: MapBuild, budget: BudgetPlan, backend: ChatBackend, n: int) -> list[dict]:
    """Ask the model about the first n subsets of the current settings; the ledger records the calls as a preview."""
    cfg = st.session_state.run_config
    return run_view.preview_subsets(shared.pool(st.session_state.pool_id).frame, build.plan, backend=backend,
                                    prompt=shared.prompt_spec(), k=budget.picks_per_subset, seed=cfg["seed"],
                                    shuffle=cfg["shuffle"], n=n, store=shared.store(), meter=shared.meter())


HIGHLIGHT = {"model pick": "#fde68a", "curator pick": "#bbf7d0"}  # the table's row colours, by origin


def show_subset(result: dict, frame_by_id: pd.DataFrame, *, retry: bool, run_id: str | None = None,
                reasons_checked: dict | None = None) -> None:
    """One subset: candidates as the model saw them, picks highlighted with their reasons; raw answer if failed.

    With a stored run's id, each row's place in the selection and the controls to promote a left-out row.
    """
    status, subset = result["status"], result["subset"]
    now = run_view.subset_picks(shared.store(), run_id, result) if run_id else None
    head = f"**Subset {subset}** · {status} · {len(result['members'])} candidates"
    if now is None:
        st.markdown(f"{head}, {len(result['picks'])} pick(s)")
    else:
        curated = int((now.picks["origin"] == "curator pick").sum())
        st.markdown(f"{head} · the model picked {len(result['picks'])} · the selection holds {len(now.picks)}"
                    + (f" ({curate.plural(curated, 'curator pick')})" if curated else ""))
    table = run_view.subset_table(result, frame_by_id, now, reasons_checked)
    table["pick"] = ["" if pd.isna(v) else f"pick {v}" for v in table["pick"]]
    # a stored run's rows are coloured by their origin in the selection, a preview's by the model's picks
    origin = dict(zip(now.picks["id"], now.picks["origin"])) if now else \
        {rid: "model pick" for rid, pick in zip(table["id"], table["pick"]) if pick}
    styled = table.style.apply(lambda r: [f"background-color: {HIGHLIGHT[origin[r['id']]]}" if r["id"] in origin
                                          else ""] * len(r), axis=1)
    st.dataframe(styled, hide_index=True, height=min(38 + 35 * len(table), 400), column_config={
        "#": st.column_config.NumberColumn("#", width="small", help="The id the model saw"),
        "pick": st.column_config.TextColumn("Model's pick", width=100,
                                            help="The model's pick order (empty: passed over)"),
        "selection": st.column_config.TextColumn(
            "Selection", width="medium", help="Where the row stands in the run's selection now: a model "
            "pick, a curator pick (a row a curator promoted), swapped out by a curator, left out by the budget, "
            "or passed over by the model"),
        "instruction": st.column_config.TextColumn("Instruction", width="large"),
        "reason": st.column_config.TextColumn("Model's reason", width="large"),
        "fits": st.column_config.TextColumn("Reason fits", width=130, help=run_view.REASON_FITS_HELP),
        "input": st.column_config.TextColumn("Input", width="medium"), "id": None})
    if now is not None:
        st.caption("Highlighted: the rows in the run's selection, yellow for model picks, green for curator picks.")
    if status != "ok":
        st.error(md_escape(result.get("error") or "The model gave no usable answer."), icon=":material/error:")
        for i, raw in enumerate(result.get("raw") or [], start=1):
            st.caption(f"Raw answer {i} (shown as text)")
            st.code(raw or "(empty)", language=None, wrap_lines=True)
        if retry and run_id and st.button("Retry this subset", key=f"select_retry_{subset}"):
            jobs.start_retry(workspace=shared.workspace(), run_id=run_id, backend=shared.chat_backend(),
                             subsets=[subset])
            st.rerun()
    if now is not None:
        promote_panel(run_id, subset, now)


def _promote(run_id: str, candidate: str, replace: str | None) -> None:
    """Promote a row (a swap with `replace`, else an open place); the outcome shows after the rerun."""
    ss = st.session_state
    try:
        ss.select_promoted = curate.promote(shared.store(), run_id, candidate, replace=replace,
                                            curator=ss.get("curator") or "")
    except SelectLLMError as exc:
        ss.select_promote_refused = str(exc)
    ss.select_promote_version = ss.get("select_promote_version", 0) + 1  # the choices start fresh


def promote_panel(run_id: str, subset: int, now: run_view.SubsetPicks) -> None:
    """Promote one of the subset's left-out rows: swap it in for a pick of the subset, or add it in an open place."""
    ss, version = st.session_state, st.session_state.get("select_promote_version", 0)
    box = st.container(border=True)
    box.markdown("**Promote a candidate the model passed over**" if now.ok else
                 "**Promote a row of this subset** (the model gave no usable answer)")
    if done := ss.pop("select_promoted", None):
        box.success(md_escape(done), icon=":material/check:")
    if refused := ss.pop("select_promote_refused", None):
        box.error(md_escape(refused), icon=":material/error:")
    if jobs.is_running(run_id):  # the run gives out the budget's places when it ends
        box.caption("Promote a row once the run has finished: the selection is trimmed to the budget at its end.")
        return
    if now.left_out.empty:
        box.caption("Every row of this subset is in the selection.")
        return
    box.caption("A promoted row becomes a curator pick, accepted. Undo last change on the Review page reverts it.")
    candidate = box.selectbox("Candidate to promote", now.left_out["id"], format_func=now.candidate_label,
                              key=f"select_promote_candidate_{subset}_{version}")
    if not now.picks.empty:
        c1, c2 = box.columns([4, 1], vertical_alignment="bottom")
        out = c1.selectbox("Swap it in for this pick", now.picks["id"], format_func=now.pick_label,
                           key=f"select_promote_out_{subset}_{version}")
        c2.button("Swap in", key=f"select_promote_swap_{subset}", on_click=_promote, args=(run_id, candidate, out),
                  icon=":material/swap_horiz:", width="stretch",
                  help="The pick leaves the selection (recorded as rejected); the candidate takes its place.")
    elif now.ok:  # every model pick of the subset was left out by the budget
        box.caption("No row of this subset is in the selection, so there is no pick to swap out.")
    c3, c4 = box.columns([4, 1], vertical_alignment="center")
    c3.caption(_room_text(now))
    c4.button("Add to selection", key=f"select_promote_add_{subset}", on_click=_promote,
              args=(run_id, candidate, None), icon=":material/playlist_add:", disabled=not now.open_places,
              width="stretch", help="The candidate joins the selection in an open place of the budget.")


def _room_text(now: run_view.SubsetPicks) -> str:
    """Whether the candidate can be added without a swap: the open places, or how to open one."""
    if not now.open_places:
        swap = "Swap it in, or reject" if not now.picks.empty else "Reject"
        return (f"No open place to add it to: the picks not rejected fill the budget of {now.budget}. {swap} a pick "
                "on the Review page to open a place.")
    room = f"the selection has {curate.plural(now.open_places, 'open place')} (budget {now.budget}, minus the " \
           "picks not rejected)."
    return f"Or add it without swapping: {room}" if not now.picks.empty else f"Add it in an open place: {room}"


def run_panel(run_id: str) -> None:
    """The run's progress read from the workspace; refreshes itself every 2 s while the run works."""
    def body() -> None:
        job, prog = jobs.get(run_id), run_view.run_progress(shared.store(), run_id)
        running = job is not None and job.running
        if prog is None:
            st.progress(0.0, text=f"Preparing ({job.stage})…" if running else "Not started")
        else:
            st.progress(prog.fraction, text=prog.text)
            st.caption(run_view.spend_line(run_id, shared.store().usage(run_id),
                                           st.session_state.get("select_estimates", {}).get(run_id)))
            rounds = rounds_view.run_table(shared.store(), run_id)
            if not rounds.empty:  # a tournament: what each round asked and cost so far
                st.dataframe(rounds, hide_index=True, key=f"run_rounds_{run_id}")
            for line in degradations(shared.store(), run_id):
                st.warning(md_escape(line), icon=":material/warning:")
            if not running:
                evidence_panel(run_id)
            stopped = job is not None and job.stage == "stopped"  # job_message says so, with the counts
            if not running and prog.status in ("running", "interrupted") and not stopped:
                st.warning("This run stopped before it finished. Start it again with the same settings to "
                           "resume: finished subsets are kept.")
        stop_button(run_id, running)
        job_message(job)
        if not running and st.session_state.get("select_was_running"):
            st.session_state.select_was_running = False
            st.rerun(scope="app")
        st.session_state.select_was_running = running

    live(run_id, body)


def order_controls() -> None:
    """How many orders each subset is shown in (P), how they are combined, and the order check (session plan)."""
    cfg = st.session_state.run_config
    c1, c2, c3 = st.columns(3)
    cfg["orders"] = int(c1.selectbox(
        "Orders per subset (against position bias)", ORDER_CHOICES, ORDER_CHOICES.index(cfg.get("orders", 1))
        if cfg.get("orders", 1) in ORDER_CHOICES else 0, key="select_orders",
        format_func=lambda p: "1: once, as the paper" if p == 1 else f"{p} orders",
        help=PARAMS["orders"].help))
    scores_ok = can_score(shared.chat_backend())
    choices = list(PARAMS["aggregation"].choices)
    if not scores_ok:
        cfg["aggregation"] = "borda"
    cfg["aggregation"] = c2.selectbox(
        "Combine the orders by", choices, choices.index(cfg.get("aggregation", "borda")), key="select_aggregation",
        format_func=lambda a: {"borda": "Borda over generated answers",
                               "scores": "scores (score passes + 1 reasoned call)"}[a],
        disabled=not scores_ok,
        help=PARAMS["aggregation"].help + ("" if scores_ok else " This backend gives no token probabilities, so "
                                           "only Borda is possible with it."))
    single = cfg["orders"] == 1 and cfg["aggregation"] == "borda"
    cfg["check_orders"] = int(c3.number_input(
        "Order check: subsets re-asked reversed", 0, 1000, int(cfg.get("check_orders", 0)), key="select_check_orders",
        disabled=not single, help=PARAMS["check_orders"].help + " With 2 or more orders, consistency comes "
        "from the orders themselves."))
    if not single:
        cfg["check_orders"] = 0


def evidence_panel(run_id: str) -> None:
    """Validity, order consistency and position bias of the run, the warning at chance, and the order check."""
    store = shared.store()
    try:
        evidence = run_evidence(store, run_id, embedder=shared.run_embedder(run_id), cache=shared.embedding_cache())
    except SelectLLMError as exc:  # the reasons cannot be checked: the rest of the evidence stands, and why
        evidence = run_evidence(store, run_id)
        st.warning(md_escape(f"Reasons not checked: {exc}"), icon=":material/warning:")
    if not evidence.asked:
        return
    metrics = run_view.evidence_metrics(evidence)
    for column, (label, value, against, help_) in zip(st.columns(len(metrics)), metrics, strict=True):
        column.metric(label, value, against, delta_color="off", delta_arrow="off", help=help_)
    if evidence.warning:
        st.error(md_escape(evidence.warning), icon=":material/casino:")
    c = evidence.consistency
    if (c.value is not None and c.clearly_above) or not evidence.unchecked:
        return
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n = int(c1.number_input("Subsets to re-ask", 1, evidence.unchecked, min(4, evidence.unchecked),
                            key=f"select_check_n_{run_id}"))
    label = (f"Measure order consistency: re-ask {n} subset(s) in reversed order ({n} more call(s))"
             if c.value is None else f"Measure on {n} more subset(s) ({n} more call(s))")
    if c2.button(label, key=f"select_check_{run_id}",
                 help="The answers are evidence only: the run's picks do not change. The calls go in the ledger."):
        with st.spinner(f"Asking {n} subset(s) again in reversed order…"):
            try:
                pipeline.check_orders(store, run_id, backend=shared.chat_backend(), subsets=n,
                                      responses=shared.response_cache() is not None)
            except SelectLLMError as exc:
                st.error(md_escape(str(exc)), icon=":material/error:")
                return
        st.rerun()


def stop_button(run_id: str, running: bool) -> None:
    """Stop a running job: no new call starts, calls in flight finish and are kept; the run can be resumed."""
    if not running:
        return
    job = jobs.get(run_id)
    if job is not None and job.cancel.is_set():
        st.button("Stopping: waiting for the calls in flight…", disabled=True, key=f"stop_wait_{run_id}")
    elif st.button("Stop the run", key=f"stop_{run_id}", icon=":material/stop_circle:",
                   help="No new call starts; calls already sent finish and are kept (they are paid for). The run "
                        "stays resumable: Resume continues where it stopped."):
        jobs.stop(run_id)
        st.rerun(scope="fragment")


def job_message(job: jobs.Job | None) -> None:
    """A finished job's outcome: stopped on request (resumable) or failed (with what to do)."""
    if job is None or not job.error:
        return
    if job.stage == "stopped":
        st.info(md_escape(job.error), icon=":material/pause_circle:")
    else:
        st.error(md_escape(job.error), icon=":material/error:")


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
            stop_button(run_id, True)
        elif job.error:
            job_message(job)
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
    round_of = rounds_view.round_of(shared.store(), run_id)
    labels = [(f"round {round_of[r['subset']]} · " if len(set(round_of.values())) > 1 else "")
              + f"subset {r['subset']} · {r['status']} · {len(r['picks'])} pick(s)" for r in results]
    index = st.selectbox("Subset", range(len(results)), format_func=labels.__getitem__, key="select_subset")
    try:
        checks = check_reasons([results[index]], {rid: format_text(row.instruction, row.input) for rid, row in
                                                  frame_by_id.loc[results[index]["members"]].iterrows()},
                               embedder=shared.run_embedder(run_id), cache=shared.embedding_cache())
    except SelectLLMError:  # the run panel above says why
        checks = Alignment(())
    show_subset(results[index], frame_by_id, retry=True, run_id=run_id, reasons_checked=checks.of(
        results[index]["subset"]) if checks.checks else None)
