"""Budget arithmetic and the three ways to split a pool into subsets: diverse, similar, random.

Budget (pool N rows, budget M rows to select):
- neither subset size S nor picks per subset k given: Q = min(1000, M) queries (the paper's 1000, fewer for
  small budgets so every query picks at least one row), k = ceil(M / Q), S = ceil(N / Q);
- S given: Q = ceil(N / S), k = ceil(M / Q);
- k given: Q = ceil(M / k), S = ceil(N / Q);
- both given: Q = ceil(N / S), and Q * k must reach M.
Q * k >= M always; the selection is trimmed to exactly M by taking every subset's first pick, then every
subset's second pick, and so on, in subset order (see `selection.trim_picks`).

Diverse split (the paper's final method): equal-size K-means with S clusters of exactly Q members over the pool
padded to S * Q rows by repeating its first rows; subset p takes the p-th member of every cluster (members in a
seeded random order), so each subset holds one instruction from each cluster. Padding copies are then dropped
from the subsets, so every pool row is shown to the model exactly once (a subset may hold S - 1 rows).
Similar split: equal-size K-means with Q clusters of S members; each cluster is one subset.
Random split: a seeded permutation cut into Q subsets of S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from selectllm_core.errors import ConfigError

STRATEGIES = ("diverse", "similar", "random")
PAPER_QUERIES = 1000


@dataclass(frozen=True)
class Budget:
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
) -> Budget:
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
        A Budget whose n_subsets * picks_per_subset >= budget.
    """
    n, m = pool_size, budget
    if m < 1:
        raise ConfigError(f"The budget must be at least 1 row (got {m}).")
    if m >= n:
        raise ConfigError(
            f"The budget ({m}) covers the whole pool ({n} rows): there is nothing to choose. "
            "Lower --budget or load a larger pool."
        )
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
    return Budget(pool_size=n, budget=m, subset_size=s, n_subsets=q, picks_per_subset=k, cap_note=note)


@dataclass
class SubsetPlan:
    """Subsets as row positions into the pool frame; every pool row appears in exactly one subset."""

    strategy: str
    budget: Budget
    subsets: list[list[int]]
    cluster_of: np.ndarray
    n_clusters: int
    random_state: int
    centers: np.ndarray | None = None
    padded_clusters: np.ndarray | None = field(default=None, repr=False)
    padded_subsets: list[list[int]] | None = field(default=None, repr=False)

    def subset_of(self) -> np.ndarray:
        """Subset index per pool row position."""
        out = np.full(self.budget.pool_size, -1, dtype=np.int64)
        for index, members in enumerate(self.subsets):
            out[members] = index
        return out


def _padded_positions(n: int, cells: int) -> np.ndarray:
    """Positions 0..n-1 followed by the first rows again until `cells` positions (the paper's padding)."""
    return np.concatenate([np.arange(n), np.arange(cells - n) % n]).astype(np.int64)


def _diverse_layout(labels: np.ndarray, s: int, q: int, n: int, rng: np.random.Generator) -> list[list[int]]:
    """Subset p takes the p-th member of every cluster; padding copies go to the subsets that lost fewest."""
    grid = np.empty((q, s), dtype=np.int64)
    losses = np.zeros(q, dtype=np.int64)
    for c in range(s):
        members = rng.permutation(np.flatnonzero(labels == c))
        copies, real = members[members >= n], members[members < n]
        slots = np.argsort(losses, kind="stable")[: len(copies)]
        losses[slots] += 1
        rest = np.setdiff1d(np.arange(q), slots, assume_unique=True)
        grid[slots, c] = copies
        grid[rest, c] = real
    return [[int(i) for i in row] for row in grid]


def _equal_size_labels(vectors: np.ndarray, n_clusters: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centres of equal-size K-means (imported lazily: it pulls in the solver)."""
    from selectllm_core.cluster import equal_size_kmeans

    result = equal_size_kmeans(vectors, n_clusters=n_clusters, random_state=random_state)
    return np.asarray(result.labels, dtype=np.int64), np.asarray(result.centers)


def make_subsets(
    vectors: np.ndarray, budget: Budget, *, strategy: str = "diverse", random_state: int = 0
) -> SubsetPlan:
    """Split the pool into budget.n_subsets subsets.

    Args:
        vectors: one embedding per pool row, in pool order.
        budget: from `plan_budget`.
        strategy: "diverse" (the paper's), "similar" or "random".
        random_state: seeds clustering and member order.

    Returns:
        A SubsetPlan; `padded_subsets` keeps the padded layout (positions >= N are copies) for inspection.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown split {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    n = len(vectors)
    if n != budget.pool_size:
        raise ConfigError(f"{n} embeddings for a pool of {budget.pool_size} rows: embed the pool again.")
    s, q = budget.subset_size, budget.n_subsets
    source = _padded_positions(n, s * q)
    rng = np.random.default_rng(random_state)
    centers = None
    if strategy == "diverse":
        labels, centers = _equal_size_labels(vectors[source], s, random_state)
        padded_subsets = _diverse_layout(labels, s, q, n, rng)
        n_clusters = s
    elif strategy == "similar":
        labels, centers = _equal_size_labels(vectors[source], q, random_state)
        padded_subsets = [[int(i) for i in rng.permutation(np.flatnonzero(labels == c))] for c in range(q)]
        n_clusters = q
    else:
        order = rng.permutation(s * q)
        padded_subsets = [[int(i) for i in order[p * s : (p + 1) * s]] for p in range(q)]
        labels = np.full(s * q, -1, dtype=np.int64)
        n_clusters = 0
    subsets = [[int(source[i]) for i in members if i < n] for members in padded_subsets]
    return SubsetPlan(
        strategy=strategy, budget=budget, subsets=subsets, cluster_of=labels[:n].copy(),
        n_clusters=n_clusters, random_state=random_state, centers=centers,
        padded_clusters=labels, padded_subsets=padded_subsets,
    )
