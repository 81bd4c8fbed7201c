"""Showing a subset in several orders: the orders, Borda aggregation, and order consistency.

A model that reads the candidates picks the same instructions whatever order they are shown in; a model that
picks positions does not. SelectLLM shows each subset once (P = 1, the paper). With P orders, each subset is
asked P times, order 1 as the run shows it, order 2 reversed, the others seeded shuffles of it, and the picks
are aggregated with Borda counts. Order consistency is measured from any two orders of a subset:

    consistency = mean over pairs of usable answers of |A n B| / k        chance = k / n

(two random k-subsets of n rows share k^2 / n rows on average). A P = 1 run measures it by asking a sample
of its subsets again in reversed order (`check_orders`); those answers are evidence only, never picks.

    from selectllm_core.select.orders import borda, consistency, orders_of
    orders_of(10, 4, seed=[0, 3])          # [identity, reversed, shuffle, shuffle] as index lists
    borda([["a", "b"], ["b", "c"]], k=2)   # ["b", "a"]: 2 + 1 = 3 points for b, 2 for a, 1 for c
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_ORDERS = 8
VOTE, CHECK = "vote", "check"  # an order whose picks are aggregated; one asked only to measure consistency


def orders_of(n: int, p: int, *, seed: Sequence[int] | int = 0) -> list[list[int]]:
    """P orders of n shown rows as index lists: as shown, reversed, then seeded shuffles (none repeated)."""
    out = [list(range(n)), list(range(n))[::-1]][:p]
    rng = np.random.default_rng(seed)
    tries = 0
    while len(out) < p and tries < 1000:
        tries += 1
        order = [int(i) for i in rng.permutation(n)]
        if order not in out or tries > 100:  # a tiny subset has few orders: repeats are allowed then
            out.append(order)
    return out


def borda(answers: Sequence[Sequence[str]], k: int) -> list[str]:
    """The k ids with the most Borda points over the answers (k points for a first pick, 1 for a k-th).

    Ties go to the id more answers picked, then to its best rank, then to the earlier answer.
    """
    points: dict[str, list] = {}
    for a, picks in enumerate(answers):
        for rank, rid in enumerate(picks[:k]):
            entry = points.setdefault(rid, [0, 0, rank, a])
            entry[0] += k - rank
            entry[1] += 1
            entry[2] = min(entry[2], rank)
    ranked = sorted(points, key=lambda rid: (-points[rid][0], -points[rid][1], points[rid][2], points[rid][3]))
    return ranked[:k]


def pair_agreement(answers: Sequence[Sequence[str]]) -> tuple[float, int] | None:
    """Mean |A n B| / k over the pairs of answers (k: the shorter answer), and the number of pairs."""
    pairs = [(a, b) for i, a in enumerate(answers) for b in answers[i + 1:] if a and b]
    if not pairs:
        return None
    return sum(len(set(a) & set(b)) / min(len(a), len(b)) for a, b in pairs) / len(pairs), len(pairs)


@dataclass(frozen=True)
class Consistency:
    """A run's order consistency: agreement between orders of the same subsets, against chance."""

    value: float | None  # mean over subsets of their pair agreement (None: nothing measured)
    chance: float  # what random picks would agree (mean k / n over the same subsets)
    subsets: int  # subsets with two or more usable orders
    z: float  # how many standard errors above chance (hypergeometric overlap, pairs taken as independent)
    source: str  # "orders" (P >= 2), "check" (reversed sample), or "" (not measured)

    @property
    def at_chance(self) -> bool:
        """No better than random picks: at or below chance, or within one standard error above it."""
        return self.value is not None and (self.value <= self.chance + 1e-9 or self.z < 1.0)

    @property
    def clearly_above(self) -> bool:
        """Above chance by more than sampling would explain (one-sided, about 5 %)."""
        return self.value is not None and self.z >= 1.645

    def verdict(self) -> str:
        """One sentence for the page and `selectllm status`."""
        if self.value is None:
            return ("Order consistency was not measured: show each subset in 2 or more orders, or re-ask a sample "
                    "of subsets in reversed order (--check-orders N: N more calls).")
        head = (f"Order consistency {self.value:.2f} over {self.subsets} subset(s) "
                f"(chance {self.chance:.2f}; 1.00: the same picks in every order)")
        if self.at_chance:
            return f"{head}. This model's picks are no better than random here: they follow positions, not content."
        if not self.clearly_above:
            return f"{head}: not clearly better than random on so few subsets; measure more subsets to tell."
        return f"{head}: the picks follow the content more than the order."


def run_consistency(results: Sequence[dict]) -> Consistency:
    """Order consistency of a run's stored subset outcomes (their `orders`)."""
    values, chances, mean_sum, var_sum, sources = [], [], 0.0, 0.0, set()
    for r in results:
        answers = [o["picks"] for o in r.get("orders") or [] if o.get("picks")]
        agreement = pair_agreement(answers)
        if agreement is None:
            continue
        value, pairs = agreement
        n, k = len(r["members"]), min(len(a) for a in answers)
        values.append(value)
        chances.append(k / n)
        # overlap of two random k-subsets of n: hypergeometric, mean k^2/n; per pair, divided by k
        var = (k * (k / n) * ((n - k) / n) * ((n - k) / max(n - 1, 1))) / k**2
        mean_sum += value - k / n
        var_sum += var / pairs
        sources.add(CHECK if any(o.get("role") == CHECK for o in r["orders"]) else "orders")
    if not values:
        return Consistency(None, math.nan, 0, math.nan, "")
    m = len(values)
    z = (mean_sum / m) / (math.sqrt(var_sum) / m) if var_sum > 0 else math.inf
    return Consistency(sum(values) / m, sum(chances) / m, m, z, "+".join(sorted(sources)))


def check_sample(n_subsets: int, size: int, *, seed: int) -> set[int]:
    """The subsets a P = 1 run asks again in reversed order: a seeded sample of `size` of them."""
    if size <= 0 or n_subsets <= 0:
        return set()
    rng = np.random.default_rng([seed, 7919])
    return {int(i) for i in rng.choice(n_subsets, size=min(size, n_subsets), replace=False)}
