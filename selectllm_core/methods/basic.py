"""Baselines that need no model: a seeded random draw, and length (longest or shortest first)."""

from __future__ import annotations

import numpy as np

from selectllm_core.errors import ConfigError
from selectllm_core.methods.base import Context, Selection, row_lengths

LENGTH_ORDERS = ("longest", "shortest")


def random_order(n: int, budget: int, *, seed: int = 0) -> np.ndarray:
    """The first `budget` positions of a seeded permutation of 0..n-1."""
    return np.random.default_rng(seed).permutation(n)[:budget]


def length_order(lengths: np.ndarray, budget: int, *, order: str = "longest") -> np.ndarray:
    """Positions of the `budget` longest (or shortest) rows; ties keep pool order."""
    if order not in LENGTH_ORDERS:
        raise ConfigError(f"Unknown length order {order!r}; choose {' or '.join(LENGTH_ORDERS)}.")
    key = -lengths if order == "longest" else lengths
    return np.argsort(key, kind="stable")[:budget]


def select_random(ctx: Context, *, seed: int) -> Selection:
    """Random baseline: a seeded uniform draw without replacement, in draw order."""
    positions = random_order(len(ctx.frame), ctx.budget, seed=seed)
    return Selection(positions=[int(p) for p in positions], scores=[None] * len(positions),
                     reasons=[f"random draw {i} (seed {seed})" for i in range(1, len(positions) + 1)])


def select_length(ctx: Context, *, order: str) -> Selection:
    """Length baseline: characters of instruction + input, longest (or shortest) first."""
    lengths = row_lengths(ctx.frame)
    positions = length_order(lengths, ctx.budget, order=order)
    return Selection(positions=[int(p) for p in positions], scores=[float(lengths[p]) for p in positions],
                     reasons=[f"{lengths[p]} characters (instruction + input), {order} first" for p in positions])
