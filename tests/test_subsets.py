"""Budget arithmetic and the diverse / similar / random splits."""

from __future__ import annotations

import numpy as np
import pytest

from selectllm_core.errors import ConfigError
from selectllm_core.split import make_subsets, plan_budget


@pytest.mark.parametrize(
    ("n", "m", "s", "k", "expect"),
    [
        (15011, 1000, None, None, (16, 1000, 1)),  # Dolly 15k, the paper's S = 16 with ceil
        (52002, 3000, None, None, (53, 1000, 3)),  # Alpaca, 3k budget: k = 3
        (2996, 30, 100, None, (100, 30, 1)),
        (2996, 30, None, 3, (300, 10, 3)),
        (2996, 50, 60, 2, (60, 50, 2)),
        (1000, 10, None, None, (100, 10, 1)),
    ],
)
def test_budget_arithmetic(n, m, s, k, expect) -> None:  # noqa: ANN001
    b = plan_budget(n, m, subset_size=s, picks_per_subset=k)
    assert (b.subset_size, b.n_subsets, b.picks_per_subset) == expect
    assert b.n_subsets * b.picks_per_subset >= m
    assert b.subset_size * b.n_subsets >= n


@pytest.mark.parametrize(
    ("n", "m", "s", "k", "message"),
    [
        (100, 100, None, None, "covers the whole pool"),
        (100, 0, None, None, "at least 1"),
        (100, 60, None, None, "nothing to choose"),
        (1000, 50, 100, 2, "give only 20 picks"),
        (100, 10, None, 0, "at least 1"),
    ],
)
def test_budget_errors_say_how_to_fix(n, m, s, k, message) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        plan_budget(n, m, subset_size=s, picks_per_subset=k)


def blobs(n: int, d: int = 8, centers: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 4
    x = c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("strategy", ["diverse", "similar", "random"])
def test_every_row_lands_in_exactly_one_subset(strategy: str) -> None:
    x = blobs(203)
    b = plan_budget(203, 20, subset_size=11)
    plan = make_subsets(x, b, strategy=strategy, random_state=0)
    flat = [i for s in plan.subsets for i in s]
    assert sorted(flat) == list(range(203))
    assert len(plan.subsets) == b.n_subsets
    assert min(len(s) for s in plan.subsets) > b.picks_per_subset


def check_diverse_invariants(plan) -> None:  # noqa: ANN001
    """Padded layout: equal cluster sizes, and each subset holds exactly one member of every cluster."""
    labels = plan.padded_clusters
    sizes = np.bincount(labels, minlength=plan.n_clusters)
    assert (sizes == plan.budget_plan.n_subsets).all(), sizes
    for members in plan.padded_subsets:
        assert sorted(labels[members]) == list(range(plan.n_clusters))


def test_diverse_split_invariants_with_padding() -> None:
    x = blobs(203)
    plan = make_subsets(x, plan_budget(203, 20, subset_size=11), strategy="diverse", random_state=1)
    assert plan.budget_plan.padded == 6  # 19 subsets x 11 = 209 cells for 203 rows
    check_diverse_invariants(plan)
    # padding copies are dropped from what the model sees, spread so no subset loses more than one
    assert max(11 - len(s) for s in plan.subsets) <= 1


def test_similar_subsets_are_tighter_than_diverse_ones() -> None:
    x = blobs(300, centers=10)
    b = plan_budget(300, 30, subset_size=10)

    def spread(strategy: str) -> float:
        plan = make_subsets(x, b, strategy=strategy, random_state=0)
        return float(np.mean([np.linalg.norm(x[s] - x[s].mean(0), axis=1).mean() for s in plan.subsets]))

    assert spread("similar") < spread("random") and spread("similar") < spread("diverse")


def test_seed_changes_and_fixes_the_split() -> None:
    x = blobs(120)
    b = plan_budget(120, 12, subset_size=10)
    a = make_subsets(x, b, random_state=3).subsets
    assert a == make_subsets(x, b, random_state=3).subsets
    assert a != make_subsets(x, b, random_state=4).subsets
