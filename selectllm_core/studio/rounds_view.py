"""A tournament's rounds as the pages show them: planned before a run, and asked and paid for during it."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pandas as pd

from selectllm_core.llm.prices import money
from selectllm_core.select.spend import SpendEstimate
from selectllm_core.split import BudgetPlan
from selectllm_core.store import Store

ROUNDS_HELP = ("More subsets than places in the budget (their size is capped by the model's context, or set): the winners "
               "of each round are split again into diverse subsets over their own embeddings and asked again, "
               "until a round has no more subsets than the budget. Every row is shown exactly once in round 1.")


def plan_summary(budget: BudgetPlan) -> str:
    """One line: the plan of a one-round run, or the rounds of a tournament ("3 rounds: 1,000,000 → ...")."""
    if not budget.next_rounds:
        return budget.describe()
    path = " → ".join(f"{r.pool_size:,}" for r in budget.rounds)
    return (f"{len(budget.rounds)} rounds: {path} rows, then the last round's picks are trimmed to the budget of "
            f"{budget.budget:,}; {budget.total_subsets:,} subsets in all")


def plan_table(budget: BudgetPlan, spend: SpendEstimate | None = None) -> pd.DataFrame:
    """One row per planned round: rows, subsets, their size, picks each, winners, and the estimate's calls and tokens."""
    rows = [{"round": i, "rows": r.pool_size, "subsets": r.n_subsets, "subset size": r.subset_size,
             "picks each": r.picks_per_subset, "passes on": r.winners if i < len(budget.rounds) else budget.budget}
            for i, r in enumerate(budget.rounds, 1)]
    frame = pd.DataFrame(rows)
    if spend is not None and len(spend.by_round) == len(rows):
        frame["prompt tokens (estimate)"] = [p for _c, p, _a in spend.by_round]
        frame["answer tokens (estimate)"] = [a for _c, _p, a in spend.by_round]
    return frame


def run_table(store: Store, run_id: str) -> pd.DataFrame:
    """One row per round a run has begun: rows, subsets answered of planned, calls, tokens sent and money."""
    usage = store.round_usage(run_id)
    if len(usage) <= 1:
        return pd.DataFrame()
    of = round_of(store, run_id)
    answered = Counter(of[result["subset"]] for result in store.subset_results(run_id))
    return pd.DataFrame({
        "round": usage["round"], "rows": usage["rows"],
        "subsets answered": [f"{answered.get(r, 0):,} / {n:,}" for r, n in zip(usage["round"], usage["subsets"])],
        "calls": usage["calls"], "from the cache": usage["cached"],
        "tokens sent": usage["prompt_tokens"] + usage["completion_tokens"],
        "cost": [money(None if c is None or (isinstance(c, float) and math.isnan(c)) else c) for c in usage["cost"]],
    })


def round_of(store: Store, run_id: str) -> dict[int, int]:
    """Each subset's round (every subset is in round 1 for a run of one round)."""
    out: dict[int, int] = {}
    for r in store.rounds(run_id):
        out.update(dict.fromkeys(range(r["first_subset"], r["first_subset"] + r["n_subsets"]), r["round"]))
    return defaultdict(lambda: 1, out)
