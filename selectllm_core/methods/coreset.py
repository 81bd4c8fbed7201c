"""k-center greedy coreset (Sener & Savarese, 2018) on the pool's unit embeddings, cosine distance.

Start from one seeded random row; then, `budget - 1` times, add the row farthest from its nearest chosen row.
Each pick's score is that distance at the time it was picked (the covering radius so far), so scores fall
along the ranking.
"""

from __future__ import annotations

import numpy as np

from selectllm_core.methods.base import Context, Selection


def k_center_greedy(vectors: np.ndarray, budget: int, *, seed: int = 0, first: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center picks on unit vectors.

    Args:
        vectors: (n, d) L2-normalised rows.
        budget: centres to pick (<= n).
        seed: picks the first centre uniformly at random.
        first: start from this position instead.

    Returns:
        (positions in pick order, distance of each pick to the nearest earlier pick; NaN for the first).
    """
    n = len(vectors)
    first = int(np.random.default_rng(seed).integers(n)) if first is None else int(first)
    order = [first]
    radius = [np.nan]
    nearest = np.clip(1.0 - vectors @ vectors[first], 0.0, 2.0)
    nearest[first] = -np.inf  # chosen rows are never chosen again, even when duplicates tie at 0
    for _ in range(budget - 1):
        pick = int(np.argmax(nearest))
        order.append(pick)
        radius.append(float(nearest[pick]))
        nearest = np.minimum(nearest, np.clip(1.0 - vectors @ vectors[pick], 0.0, 2.0))
        nearest[order] = -np.inf
    return np.asarray(order, dtype=np.int64), np.asarray(radius, dtype=np.float64)


def select_coreset(ctx: Context, *, seed: int) -> Selection:
    """Coreset: spread the budget over embedding space, farthest-first."""
    positions, radius = k_center_greedy(ctx.vectors(), ctx.budget, seed=seed)
    reasons = [f"first centre: a random row (seed {seed})"]
    reasons += [f"farthest from the rows chosen before it (cosine distance {r:.3f})" for r in radius[1:]]
    return Selection(positions=[int(p) for p in positions],
                     scores=[None] + [float(r) for r in radius[1:]], reasons=reasons)
