"""The budget plan: how many subsets, how large, and how many picks each, for a budget of M rows.

Budget (pool N rows, budget M rows to select):
- neither subset size S nor picks per subset k given: Q = min(1000, M) queries (the paper's 1000, fewer for
  small budgets so every query picks at least one row), k = ceil(M / Q), S = ceil(N / Q);
- S given: Q = ceil(N / S), k = ceil(M / Q);
- k given: Q = ceil(M / k), S = ceil(N / Q);
- both given: Q = ceil(N / S), and Q * k must reach M.
Q * k >= M always; the selection is trimmed to exactly M by taking every subset's first pick, then every
subset's second pick, and so on, in subset order (see `select.listwise.trim_picks`).

Rounds (a tournament). When the subset size is capped by the model's context (or given), Q = ceil(N / S) can
exceed the budget: more subsets than places, so trimming would throw whole subsets' picks away by their order.
Then the run goes in rounds: round 1 asks every subset (every row is shown exactly once) for its k picks; the
winners, Q * k rows, are split again into diverse subsets over their own embeddings and asked again; and so on
until a round has no more subsets than the budget, whose picks are trimmed as above. Each round has at most
1 / S of the rows of the one before, so calls and tokens grow linearly in N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from selectllm_core.errors import ConfigError

PAPER_QUERIES = 1000
MAX_ROUNDS = 12  # a tournament of subsets of 2 halves the rows each round: 12 rounds cover 4,096 x the budget


def check_budget(budget: int, pool_size: int) -> None:
    """Raise ConfigError unless 1 <= budget < pool size (every method checks its budget here)."""
    if budget < 1:
        raise ConfigError(f"The budget must be at least 1 row (got {budget}).")
    if budget >= pool_size:
        raise ConfigError(
            f"The budget ({budget}) covers the whole pool ({pool_size} rows): there is nothing to choose. "
            "Lower --budget or load a larger pool."
        )


@dataclass(frozen=True)
class BudgetPlan:
    """How a budget is spread: n_subsets queries of subset_size rows, picks_per_subset picks each."""

    pool_size: int
    budget: int
    subset_size: int
    n_subsets: int
    picks_per_subset: int
    cap_note: str = ""  # why the subset size is smaller than the paper's arithmetic gives, when it is
    subset_cap: int | None = None  # the most candidates one prompt holds, when a later round must plan again
    cap_reason: str = ""  # why that is the most
    next_rounds: tuple[BudgetPlan, ...] = ()  # the tournament's later rounds, over each round's winners
    rounds_note: str = ""  # why a round with more subsets than the budget is the last one, when one is

    @property
    def rounds(self) -> tuple[BudgetPlan, ...]:
        """Every round of the run, this one first (one round: the paper's plan)."""
        return (self, *self.next_rounds)

    @property
    def winners(self) -> int:
        """Rows this round passes on (every subset's picks): the next round's pool."""
        return self.n_subsets * self.picks_per_subset

    @property
    def total_subsets(self) -> int:
        """LLM queries over every round (each one call when its answer is usable)."""
        return sum(r.n_subsets for r in self.rounds)

    @property
    def padded(self) -> int:
        """Rows repeated to make subset_size * n_subsets cells."""
        return self.subset_size * self.n_subsets - self.pool_size

    def describe_round(self) -> str:
        """This round alone, in one line."""
        return (f"{self.pool_size} rows -> {self.n_subsets} subsets of {self.subset_size} (padding {self.padded}), "
                f"{self.picks_per_subset} pick(s) each -> {self.winners} picks")

    def describe(self) -> str:
        """One line a curator can check (one line per round for a tournament)."""
        capped = f"; capped: {self.cap_note}" if self.cap_note else ""
        last = self.rounds[-1]
        note = f"; {last.rounds_note}" if last.rounds_note else ""
        if not self.next_rounds:
            return f"{self.describe_round()}, trimmed to the budget of {self.budget}{capped}{note}"
        lines = [f"{len(self.rounds)} rounds ({self.total_subsets} subsets in all), because {self.n_subsets} "
                 f"subsets are more than the budget of {self.budget}{capped}:"]
        lines += [f"  round {i}: {r.describe_round()}" for i, r in enumerate(self.rounds, 1)]
        return "\n".join(lines) + f", trimmed to the budget of {self.budget}{note}"


def plan_budget(
    pool_size: int,
    budget: int,
    *,
    subset_size: int | None = None,
    picks_per_subset: int | None = None,
    max_queries: int = PAPER_QUERIES,
    max_subset_size: int | None = None,
    cap_reason: str = "",
) -> BudgetPlan:
    """Work out subset size, number of subsets and picks per subset for a budget.

    Args:
        pool_size: rows in the pool (N).
        budget: rows to select (M).
        subset_size: candidates per query (S); derived when None.
        picks_per_subset: picks per query (k); derived when None.
        max_queries: the paper's number of queries when neither S nor k is given.
        max_subset_size: the most candidates one prompt holds (the backend's context); a derived S above it
            is lowered to it (more, smaller subsets, every row still shown once), an explicit S above it is
            an error.
        cap_reason: why that is the most (said in the plan).

    Returns:
        A BudgetPlan whose n_subsets * picks_per_subset >= budget; when it has more subsets than the budget,
        its `next_rounds` plan the tournament over the winners.
    """
    return _plan(pool_size, budget, subset_size=subset_size, picks_per_subset=picks_per_subset,
                 max_queries=max_queries, max_subset_size=max_subset_size, cap_reason=cap_reason, depth=1)


def _plan(pool_size: int, budget: int, *, subset_size: int | None, picks_per_subset: int | None, max_queries: int,
          max_subset_size: int | None, cap_reason: str, depth: int) -> BudgetPlan:
    """One round's plan, and the plans of the rounds after it."""
    n, m = pool_size, budget
    check_budget(m, n)
    for name, value in (("subset size", subset_size), ("picks per subset", picks_per_subset)):
        if value is not None and value < 1:
            raise ConfigError(f"The {name} must be at least 1 (got {value}).")
    if subset_size and max_subset_size and subset_size > max_subset_size:
        raise ConfigError(f"--subset-size {subset_size} is too large: {cap_reason or 'the prompt would not fit'}. "
                          f"Use --subset-size {max_subset_size} or less, shorten inputs with --max-input-chars, "
                          "or use a model with a larger context.")
    if subset_size and picks_per_subset:
        q, s, k = math.ceil(n / subset_size), subset_size, picks_per_subset
        if q * k < m:
            raise ConfigError(
                f"{q} subsets of {s} with {k} pick(s) each give only {q * k} picks for a budget of {m}. "
                "Use a smaller --subset-size or more --picks-per-subset."
            )
    elif subset_size:
        s = subset_size
        q = math.ceil(n / s)
        k = math.ceil(m / q)
    elif picks_per_subset:
        k = picks_per_subset
        q = math.ceil(m / k)
        s = math.ceil(n / q)
    else:
        q = min(max_queries, m)
        k = math.ceil(m / q)
        s = math.ceil(n / q)
    note = ""
    if not subset_size and max_subset_size and s > max_subset_size:
        note = f"{cap_reason or 'the context holds no more'} (the paper's arithmetic gives {s})"
        s = max(2, max_subset_size)
        q = math.ceil(n / s)
        k = picks_per_subset or math.ceil(m / q)
    if s < 2 or k >= s - math.ceil((s * q - n) / q):
        raise ConfigError(
            f"Each subset would hold {s} rows and need {k} pick(s): the model would have nothing to choose. "
            "Lower the budget, raise --subset-size, or lower --picks-per-subset."
        )
    later: tuple[BudgetPlan, ...] = ()
    rounds_note = ""
    if q > m and depth >= MAX_ROUNDS:
        rounds_note = (f"a tournament stops after {MAX_ROUNDS} rounds, so the {q * k} picks of the last are trimmed "
                       "to the budget in subset order (raise the budget or --subset-size for fewer rounds)")
    elif q > m:  # more subsets than places: the winners (fewer than the rows, as k < s) play another round
        try:
            nxt = _plan(q * k, m, subset_size=subset_size, picks_per_subset=picks_per_subset,
                        max_queries=max_queries, max_subset_size=max_subset_size, cap_reason=cap_reason,
                        depth=depth + 1)
            later = tuple(replace(r, next_rounds=()) for r in nxt.rounds)
        except ConfigError as exc:  # the winners are too few for subsets this small: this round is the last
            rounds_note = (f"the {q * k} winners of this round cannot be split again ({exc}), so its picks are "
                           "trimmed to the budget in subset order")
    return BudgetPlan(pool_size=n, budget=m, subset_size=s, n_subsets=q, picks_per_subset=k, cap_note=note,
                      subset_cap=max_subset_size, cap_reason=cap_reason, next_rounds=later, rounds_note=rounds_note)


def replan(plan: BudgetPlan, pool_size: int, *, subset_size: int | None = None,
           picks_per_subset: int | None = None) -> BudgetPlan:
    """The plan of a later round over the winners there actually are (a failed subset passes none on).

    Args:
        plan: the run's plan (its cap applies to every round).
        pool_size: the winners of the round before.
        subset_size, picks_per_subset: what the run asked for (None: derived, as for round 1).
    """
    return plan_budget(pool_size, plan.budget, subset_size=subset_size, picks_per_subset=picks_per_subset,
                       max_subset_size=plan.subset_cap, cap_reason=plan.cap_reason)
