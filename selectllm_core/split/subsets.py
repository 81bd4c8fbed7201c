"""The three ways to split a pool into subsets: diverse, similar, random.

Diverse split (the paper's final method): equal-size K-means with S clusters of exactly Q members over the pool
padded to S * Q rows by repeating its first rows; subset p takes the p-th member of every cluster (members in a
seeded random order), so each subset holds one instruction from each cluster. Padding copies are then dropped
from the subsets, so every pool row is shown to the model exactly once (a subset may hold S - 1 rows).
Similar split: equal-size K-means with Q clusters of S members; each cluster is one subset.
Random split: a seeded permutation cut into Q subsets of S.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from selectllm_core.errors import ConfigError
from selectllm_core.split.budget import BudgetPlan
from selectllm_core.split.kmeans import equal_size_kmeans

STRATEGIES = ("diverse", "similar", "random")

@dataclass
class SubsetPlan:
    """Subsets as row positions into the pool frame; every pool row appears in exactly one subset."""

    strategy: str
    budget_plan: BudgetPlan
    subsets: list[list[int]]
    cluster_of: np.ndarray
    n_clusters: int
    random_state: int
    centers: np.ndarray | None = None
    padded_clusters: np.ndarray | None = field(default=None, repr=False)
    padded_subsets: list[list[int]] | None = field(default=None, repr=False)

    def subset_of(self) -> np.ndarray:
        """Subset index per pool row position."""
        out = np.full(self.budget_plan.pool_size, -1, dtype=np.int64)
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
    """Labels and centres of equal-size K-means."""
    result = equal_size_kmeans(vectors, n_clusters=n_clusters, random_state=random_state)
    return np.asarray(result.labels, dtype=np.int64), np.asarray(result.centers)


def make_subsets(
    vectors: np.ndarray, plan: BudgetPlan, *, strategy: str = "diverse", random_state: int = 0
) -> SubsetPlan:
    """Split the pool into plan.n_subsets subsets.

    Args:
        vectors: one embedding per pool row, in pool order.
        plan: from `plan_budget`.
        strategy: "diverse" (the paper's), "similar" or "random".
        random_state: seeds clustering and member order.

    Returns:
        A SubsetPlan; `padded_subsets` keeps the padded layout (positions >= N are copies) for inspection.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown split {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    n = len(vectors)
    if n != plan.pool_size:
        raise ConfigError(f"{n} embeddings for a pool of {plan.pool_size} rows: embed the pool again.")
    s, q = plan.subset_size, plan.n_subsets
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
        strategy=strategy, budget_plan=plan, subsets=subsets, cluster_of=labels[:n].copy(),
        n_clusters=n_clusters, random_state=random_state, centers=centers,
        padded_clusters=labels, padded_subsets=padded_subsets,
    )
