"""The Select page and the sidebar's view of runs: a dry run of a few subsets, each subset's table, progress, and
what a curator can promote in a subset of a stored run."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectllm_core.engines import Meter
from selectllm_core.errors import UnknownRunError
from selectllm_core.llm import ChatBackend
from selectllm_core.llm.prices import money
from selectllm_core.runs.evidence import Evidence
from selectllm_core.select.alignment import ReasonCheck
from selectllm_core.select.listwise import PromptSpec, select_subset
from selectllm_core.select.spend import subset_candidates
from selectllm_core.split import SubsetPlan
from selectllm_core.store import CURATOR_PICK, Store
from selectllm_core.studio import curate

RUN_STATUS_LABELS = {"created": "starting", "running": "in progress", "complete": "complete",
                     "incomplete": "finished, some subsets failed", "interrupted": "stopped before the end"}
LOCAL_WARNING = (
    "The bundled local model (SmolLM2-135M) runs offline, but it is far too small to judge instructions: its "
    "picks are close to arbitrary and its reasons often do not match the ids. Use it to try the studio. For "
    "selections worth annotating, choose **OpenAI-compatible** and point it at OpenAI, a vLLM or Ollama server, "
    "or a llama.cpp server (`python -m llama_cpp.server --model FILE`) running a capable model."
)
_REPLACING = re.compile(r"curator pick \(replacing (.+)\)")  # Store.promote's reason for a swapped-in row


def default_budget(pool_size: int) -> int:
    """A first budget to try: a tenth of the pool (at least 2 rows, at most the paper's 3,000)."""
    return int(min(3000, max(2, pool_size // 10)))


def preview_subsets(pool: pd.DataFrame, plan: SubsetPlan, *, backend: ChatBackend, prompt: PromptSpec, k: int,
                    seed: int, shuffle: bool, n: int, store: Store | None = None,
                    meter: Meter | None = None) -> list[dict]:
    """Ask the model about the first n subsets, storing no outcome (a dry run of the prompt); its calls are paid.

    Args:
        pool: the pool frame the plan's positions point into.
        plan: the split the run will use (`map_build.MapBuild.plan`).
        backend: the chat backend.
        prompt: template, answer format, domain, answer length and input cut, as the run will send them.
        k: picks per subset.
        seed: the run's seed (it seeds the shuffle).
        shuffle: shuffle each subset's candidates, as the run will.
        n: subsets to ask about (at most every subset).
        store: the workspace whose ledger records the preview's calls with their cost (kind "preview").
        meter: the response cache and prices (a previewed subset the run asks again is answered from the cache).

    Returns:
        One dict per subset with the keys of `Store.subset_results` (subset, status, members, picks, reasons,
        raw, error), for `subset_table`.
    """
    out = []
    backend = meter.wrap(backend) if meter is not None else backend
    for index in range(min(n, len(plan.subsets))):
        members = subset_candidates(pool, plan.subsets[index], plan.cluster_of, subset=index, seed=seed,
                                    shuffle=False)
        o = select_subset(backend, members, subset=index, k=k, prompt=prompt, seed=seed, shuffle=shuffle)
        if store is not None and o.calls:
            store.record_calls(o.calls, kind="preview")
        out.append({"subset": o.subset, "status": o.status, "members": o.members, "picks": o.picks,
                    "reasons": o.reasons, "raw": o.raw, "error": o.error})
    return out


def spend_line(run_id: str, usage: Mapping[str, Any], estimate: float | None = None) -> str:
    """A run's calls, tokens and money so far, against its estimate when one was made before it started."""
    unpriced = (f"; {usage['unpriced']} call(s) of a model with no price (set it on the Prompt page)"
                if usage.get("unpriced") else "")
    against = f" of about {money(estimate)} estimated" if estimate is not None else ""
    return (f"Run {run_id}: {usage['sent']:,} LLM calls sent and {usage['cached']:,} answered by the response "
            f"cache; {usage['prompt_tokens']:,} prompt and {usage['completion_tokens']:,} answer tokens sent; "
            f"spent {money(usage['cost'])}{against}{unpriced}.")


def subset_table(result: Mapping[str, Any], pool_by_id: pd.DataFrame,
                 now: SubsetPicks | None = None, reasons_checked: Mapping[str, ReasonCheck] | None = None
                 ) -> pd.DataFrame:
    """A subset's candidates in the order the model saw them, with pick order and reasons beside them.

    Args:
        result: one entry of Store.subset_results (members in shown order, picks, reasons).
        pool_by_id: the pool frame indexed by id.
        now: where the subset's rows stand in the run's selection (`subset_picks`); a preview has none.
        reasons_checked: each pick's reason check (`Alignment.of(subset)`), for a "reason fits" column.

    Returns:
        Columns "#" (the id the model saw), pick (1.., empty when passed over), instruction, reason, input, id;
        with `now`, a "selection" column after pick (`SubsetPicks.states`); with `reasons_checked`, "fits"
        after those ("its pick", "#n better" for a reason that describes candidate #n better, "no candidate").
    """
    picks = {rid: n for n, rid in enumerate(result.get("picks") or [], start=1)}
    reasons = result.get("reasons") or {}
    rows = pool_by_id.loc[list(result["members"]), ["instruction", "input"]]
    table = pd.DataFrame({
        "#": range(1, len(rows) + 1), "pick": pd.array([picks.get(i) for i in rows.index], dtype="Int64"),
        "instruction": rows["instruction"].to_numpy(), "reason": [reasons.get(i, "") for i in rows.index],
        "input": rows["input"].to_numpy(), "id": list(rows.index)})
    if reasons_checked is not None:
        shown = {rid: n for n, rid in enumerate(rows.index, start=1)}
        table.insert(2, "fits", [reason_fit(reasons_checked.get(i), shown) for i in rows.index])
    if now is not None:
        states = now.states()
        table.insert(2, "selection", [states.get(i, "") for i in rows.index])
    return table


REASON_FITS_HELP = ("Which candidate of its subset the reason describes best, by embedding: its own pick (✓), another "
                    "candidate (⚠ #n: the id the model saw; the Select page shows the subset), or none clearly. "
                    "Empty for a curator pick or an answer without reasons.")


def reason_fit(check: ReasonCheck | None, shown: Mapping[str, int]) -> str:
    """A pick's reason check in a few words; empty for a row without a checked reason."""
    if check is None:
        return ""
    if check.status == "misaligned":
        return f"⚠ fits #{shown.get(check.better, '?')} better"
    return {"aligned": "✓ its pick", "generic": "names no candidate"}[check.status]


@dataclass(frozen=True)
class SubsetPicks:
    """One stored subset as the run's selection holds it now, and what a curator can promote there.

    picks: the subset's rows in the selection (Store.selection's columns); left_out: the subset's rows the
    selection leaves out, best runners-up first (`curate.candidates`). Both carry "#", the id the model saw.
    """

    ok: bool
    picks: pd.DataFrame
    left_out: pd.DataFrame
    open_places: int
    budget: int

    def _swapped(self) -> dict[str, str]:
        """Swapped-out row -> the curator pick that took its place (both of this subset)."""
        return {m.group(1): rid for rid, reason in zip(self.picks["id"], self.picks["reason"])
                if (m := _REPLACING.fullmatch(str(reason)))}

    def states(self) -> dict[str, str]:
        """Each row's place now: "model pick", "curator pick, in place of #3", "swapped out for #7", "passed over".

        A model pick the budget left out says so; the rows of a failed subset that stay out have no state.
        """
        number = dict(zip(self.picks["id"], self.picks["#"])) | dict(zip(self.left_out["id"], self.left_out["#"]))
        swapped = self._swapped()
        into = {pick: gone for gone, pick in swapped.items()}
        states: dict[str, str] = {}
        for rid, origin, decision in zip(self.picks["id"], self.picks["origin"], self.picks["decision"]):
            if origin != CURATOR_PICK:
                text = "model pick"
            elif into.get(rid) in number:
                text = f"curator pick, in place of #{number[into[rid]]}"
            else:
                text = "curator pick, in an open place"
            states[rid] = text + (" · rejected" if decision == "rejected" else "")
        for rid, kind, decision in zip(self.left_out["id"], self.left_out["kind"], self.left_out["decision"]):
            if decision == "rejected":
                states[rid] = f"swapped out for #{number[swapped[rid]]}" if swapped.get(rid) in number else "swapped out"
            elif kind == curate.TRIMMED:
                states[rid] = "model pick, left out by the budget"
            elif kind == curate.PASSED_OVER:
                states[rid] = "passed over"
        return states

    def candidate_label(self, rid: str) -> str:
        """A row to promote, as a choice: "#4 · its instruction (cut)", and why it is out when not passed over."""
        row = self.left_out.set_index("id").loc[rid]
        why = {curate.TRIMMED: " · the model picked it, the budget left it out"}.get(row["kind"], "")
        if row["decision"] == "rejected":
            why = " · swapped out earlier"
        return f"#{row['#']} · {textwrap.shorten(str(row['instruction']), 100)}{why}"

    def pick_label(self, rid: str) -> str:
        """A pick to swap out, as a choice: "#1 · model pick · its instruction (cut)"."""
        row = self.picks.set_index("id").loc[rid]
        rejected = " · rejected" if row["decision"] == "rejected" else ""
        return f"#{row['#']} · {row['origin']}{rejected} · {textwrap.shorten(str(row['instruction']), 90)}"


def subset_picks(store: Store, run_id: str, result: Mapping[str, Any]) -> SubsetPicks:
    """Where a stored subset's rows stand in the run's selection, and the budget's open places.

    Args:
        store: the workspace.
        run_id: the run the subset belongs to.
        result: one entry of Store.subset_results.

    Returns:
        The subset's picks and left-out rows, numbered as the model saw them, with the run's open places.
    """
    number = {rid: n for n, rid in enumerate(result["members"], start=1)}
    selection = store.selection(run_id)
    budget = int(store.get_run(run_id)["params"].get("budget", len(selection)))
    picks = selection[selection["id"].isin(number)].assign(**{"#": lambda f: f["id"].map(number)})
    left_out = curate.candidates(store, run_id, subset=int(result["subset"]))
    left_out.insert(0, "#", left_out["id"].map(number))
    return SubsetPicks(ok=result["status"] == "ok", picks=picks.reset_index(drop=True), left_out=left_out,
                       open_places=curate.open_places(selection, budget), budget=budget)


@dataclass(frozen=True)
class RunProgress:
    """A run's state as the store has it: subsets answered out of the plan (every round's, for a tournament)."""

    total: int
    done: int
    counts: dict[str, int]
    status: str
    round: int = 1  # the round being asked (the last begun)
    rounds: int = 1  # rounds planned

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def label(self) -> str:
        """The run's status in a curator's words."""
        return RUN_STATUS_LABELS.get(self.status, self.status)

    @property
    def text(self) -> str:
        """The progress bar's text, e.g. "6 / 6 subsets answered (1 failed, 5 ok) · complete"."""
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())) or "none yet"
        rounds = f" · round {self.round} of {self.rounds}" if self.rounds > 1 else ""
        return f"{self.done} / {self.total} subsets answered ({counts}){rounds} · {self.label}"


def run_progress(store: Store, run_id: str) -> RunProgress | None:
    """Progress of a run from the store (None while the run is not recorded yet).

    A tournament's total counts the subsets of the rounds begun as they were split, and the planned subsets of
    the rounds still to come.
    """
    try:
        run = store.get_run(run_id)
    except UnknownRunError:
        return None
    counts: dict[str, int] = {}
    for r in store.subset_results(run_id):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = sum(counts.values())
    plan = run["params"].get("budget_plan", {})  # other methods have no plan
    later = plan.get("next_rounds") or []
    begun = store.rounds(run_id) if later else []
    if begun:
        total = sum(r["n_subsets"] for r in begun) + sum(int(r["n_subsets"]) for r in later[len(begun) - 1:])
    else:
        total = int(plan.get("n_subsets", 0)) + sum(int(r["n_subsets"]) for r in later)
    return RunProgress(total=total or done, done=done, counts=counts, status=run["status"],
                       round=max(1, len(begun)), rounds=max(1 + len(later), len(begun)))


def evidence_metrics(evidence: Evidence) -> list[tuple[str, str, str | None, str]]:
    """(label, value, what to read it against, help) of the run's evidence, for metrics side by side."""
    c = evidence.consistency
    measured = c.value is not None
    has_picks = evidence.front_share == evidence.front_share  # not NaN
    a = evidence.alignment
    reasons = [] if a is None or not a.checks else [
        ("Reasons that match their pick", f"{a.aligned} of {a.judged}" if a.judged else "–",
         f"{len(a.checks) - a.judged} name no candidate" if len(a.checks) > a.judged else None,
         "Each reason is compared (by embedding) with every candidate of its subset: it matches when its own pick "
         "is the candidate it describes best. A flagged reason (⚠ in the subset table) describes another "
         "candidate better. Reasons that name no candidate clearly are not judged.")]
    return [
        ("Valid answers", f"{evidence.valid} of {evidence.asked}" if evidence.asked else "–", None,
         "Subsets whose answer named exactly k distinct candidates (after at most one repair request)."),
        ("Order consistency", f"{c.value:.2f}" if measured else "not measured",
         f"chance {c.chance:.2f}" if measured else None,
         c.verdict() + " Measured by showing subsets in other orders: a model that reads the candidates picks the "
         "same ones whatever the order."),
        ("Picks at shown positions 1–2", f"{evidence.front_share:.0%}" if has_picks else "–",
         f"uniform {evidence.front_expected:.0%}" if has_picks else None,
         "How often the model picked one of the first two candidates shown, against a uniform choice"
         + (f" (chi-square p = {evidence.bias_p:.2g})." if evidence.bias_p == evidence.bias_p else ".")),
        *reasons,
    ]
