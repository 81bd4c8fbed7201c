"""The Select page and the sidebar's view of runs: a dry run of a few subsets, each subset's table, progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectllm_core.errors import UnknownRunError
from selectllm_core.llm import ChatBackend
from selectllm_core.select.listwise import PromptSpec, select_subset
from selectllm_core.split import SubsetPlan
from selectllm_core.store import Store
from selectllm_core.studio.prompt_view import subset_candidates

RUN_STATUS_LABELS = {"created": "starting", "running": "in progress", "complete": "complete",
                     "incomplete": "finished, some subsets failed", "interrupted": "stopped before the end"}
LOCAL_WARNING = (
    "The bundled local model (SmolLM2-135M) runs offline, but it is far too small to judge instructions: its "
    "picks are close to arbitrary and its reasons often do not match the ids. Use it to try the studio. For "
    "selections worth annotating, choose **OpenAI-compatible** and point it at OpenAI, a vLLM or Ollama server, "
    "or a llama.cpp server (`python -m llama_cpp.server --model FILE`) running a capable model."
)


def default_budget(pool_size: int) -> int:
    """A first budget to try: a tenth of the pool (at least 2 rows, at most the paper's 3,000)."""
    return int(min(3000, max(2, pool_size // 10)))


def preview_subsets(pool: pd.DataFrame, plan: SubsetPlan, *, backend: ChatBackend, prompt: PromptSpec, k: int,
                    seed: int, shuffle: bool, n: int) -> list[dict]:
    """Ask the model about the first n subsets without storing anything (a dry run of the prompt).

    Args:
        pool: the pool frame the plan's positions point into.
        plan: the split the run will use (`map_build.MapBuild.plan`).
        backend: the chat backend.
        prompt: template, answer format, domain, answer length and input cut, as the run will send them.
        k: picks per subset.
        seed: the run's seed (it seeds the shuffle).
        shuffle: shuffle each subset's candidates, as the run will.
        n: subsets to ask about (at most every subset).

    Returns:
        One dict per subset with the keys of `Store.subset_results` (subset, status, members, picks, reasons,
        raw, error), for `subset_table`.
    """
    out = []
    for index in range(min(n, len(plan.subsets))):
        members = subset_candidates(pool, plan.subsets[index], plan.cluster_of, subset=index, seed=seed,
                                    shuffle=False)
        o = select_subset(backend, members, subset=index, k=k, prompt=prompt, seed=seed, shuffle=shuffle)
        out.append({"subset": o.subset, "status": o.status, "members": o.members, "picks": o.picks,
                    "reasons": o.reasons, "raw": o.raw, "error": o.error})
    return out


def subset_table(result: Mapping[str, Any], pool_by_id: pd.DataFrame) -> pd.DataFrame:
    """A subset's candidates in the order the model saw them, with pick order and reasons beside them.

    Args:
        result: one entry of Store.subset_results (members in shown order, picks, reasons).
        pool_by_id: the pool frame indexed by id.

    Returns:
        Columns "#" (the id the model saw), pick (1.., empty when passed over), instruction, reason, input, id.
    """
    picks = {rid: n for n, rid in enumerate(result.get("picks") or [], start=1)}
    reasons = result.get("reasons") or {}
    rows = pool_by_id.loc[list(result["members"]), ["instruction", "input"]]
    return pd.DataFrame({
        "#": range(1, len(rows) + 1), "pick": pd.array([picks.get(i) for i in rows.index], dtype="Int64"),
        "instruction": rows["instruction"].to_numpy(), "reason": [reasons.get(i, "") for i in rows.index],
        "input": rows["input"].to_numpy(), "id": list(rows.index)})


@dataclass(frozen=True)
class RunProgress:
    """A run's state as the store has it: subsets answered out of the plan."""

    total: int
    done: int
    counts: dict[str, int]
    status: str

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
        return f"{self.done} / {self.total} subsets answered ({counts}) · {self.label}"


def run_progress(store: Store, run_id: str) -> RunProgress | None:
    """Progress of a run from the store (None while the run is not recorded yet)."""
    try:
        run = store.get_run(run_id)
    except UnknownRunError:
        return None
    counts: dict[str, int] = {}
    for r in store.subset_results(run_id):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = sum(counts.values())
    total = int(run["params"].get("budget_plan", {}).get("n_subsets", 0)) or done  # other methods have no plan
    return RunProgress(total=total, done=done, counts=counts, status=run["status"])
