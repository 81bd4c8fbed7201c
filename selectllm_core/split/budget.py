"""The budget plan: how many subsets, how large, and how many picks each, for a budget of M rows.

Budget (pool N rows, budget M rows to select):
- neither subset size S nor picks per subset k given: Q = min(1000, M) queries (the paper's 1000, fewer for
  small budgets so every query picks at least one row), k = ceil(M / Q), S = ceil(N / Q);
- S given: Q = ceil(N / S), k = ceil(M / Q);
- k given: Q = ceil(M / k), S = ceil(N / Q);
- both given: Q = ceil(N / S), and Q * k must reach M.
Q * k >= M always; the selection is trimmed to exactly M by taking every subset's first pick, then every
subset's second pick, and so on, in subset order (see `select.listwise.trim_picks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selectllm_core.errors import ConfigError

PAPER_QUERIES = 1000


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

    @property
    def padded(self) -> int:
        """Rows repeated to make subset_size * n_subsets cells."""
        return self.subset_size * self.n_subsets - self.pool_size

    def describe(self) -> str:
        """One line a curator can check."""
        line = (
            f"{self.pool_size} rows -> {self.n_subsets} subsets of {self.subset_size} "
            f"(padding {self.padded}), {self.picks_per_subset} pick(s) each -> "
            f"{self.n_subsets * self.picks_per_subset} picks, trimmed to the budget of {self.budget}"
        )
        return f"{line}; capped: {self.cap_note}" if self.cap_note else line


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
        A BudgetPlan whose n_subsets * picks_per_subset >= budget.
    """
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
    return BudgetPlan(pool_size=n, budget=m, subset_size=s, n_subsets=q, picks_per_subset=k, cap_note=note)
