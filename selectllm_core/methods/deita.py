"""DEITA-like score-first diversity filter (after Liu et al., 2023, "What makes good data for alignment?").

Rows are taken in order of a score, highest first; a row is skipped when its cosine similarity to any row
already chosen is above tau. The score is, in order of preference: the scores of another run on the same pool
(`score_run`), a numeric column of the pool (`score_column`), or the row length (default). DEITA itself scores
complexity x quality with trained scorers and measures distance with the tuned model's own embeddings; here the
score is pluggable and the embedding is the pool's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from selectllm_core.errors import ConfigError
from selectllm_core.methods.base import Context, Selection, rank_desc, row_lengths


def deita_filter(vectors: np.ndarray, scores: np.ndarray, budget: int, *, tau: float = 0.9
                 ) -> tuple[list[int], list[float], int]:
    """Score-first selection that skips near-duplicates of earlier picks.

    Args:
        vectors: (n, d) unit rows.
        scores: (n,) scores; NaN rows are never taken.
        budget: rows wanted.
        tau: a row whose cosine similarity to a chosen row is above tau is skipped.

    Returns:
        (positions in pick order, each pick's highest similarity to earlier picks (NaN for the first),
        number of rows skipped).
    """
    chosen = np.empty((budget, vectors.shape[1]), dtype=vectors.dtype)
    picks: list[int] = []
    nearest: list[float] = []
    skipped = 0
    for p in rank_desc(scores):
        sim = float((chosen[: len(picks)] @ vectors[p]).max()) if picks else float("nan")
        if picks and sim > tau:
            skipped += 1
            continue
        chosen[len(picks)] = vectors[p]
        picks.append(int(p))
        nearest.append(sim)
        if len(picks) == budget:
            break
    return picks, nearest, skipped


def pool_scores(ctx: Context, *, score_run: str | None, score_column: str | None) -> tuple[np.ndarray, str]:
    """Score per pool position, and a label of where it came from."""
    if score_run and score_column:
        raise ConfigError("Give either --score-run or --score-column, not both.")
    frame = ctx.frame
    if score_column:
        if score_column not in frame.columns:
            extra = [c for c in frame.columns if c not in ("id", "instruction", "input", "text")]
            raise ConfigError(f"The pool has no column {score_column!r}; its extra columns: {extra or 'none'}.")
        values = pd.to_numeric(frame[score_column], errors="coerce")
        if values.notna().sum() == 0:
            raise ConfigError(f"Column {score_column!r} holds no numbers: give a numeric score column.")
        return values.to_numpy(dtype=np.float64), f"column {score_column}"
    if score_run:
        run = ctx.store.get_run(score_run)
        if run["pool_id"] != ctx.pool.pool_id:
            raise ConfigError(f"Run {score_run} was made on another pool ({run['pool_id']}): score with a run "
                              "of this pool.")
        if ctx.scores_of is None:
            raise ConfigError("Scoring by a run needs the registry's run_scores: run DEITA through methods.run_method.")
        scores = ctx.scores_of(score_run)
        return frame["id"].map(scores).to_numpy(dtype=np.float64), f"run {score_run}"
    return row_lengths(frame).astype(np.float64), "length"


def select_deita(ctx: Context, *, tau: float, score_run: str | None, score_column: str | None) -> Selection:
    """DEITA-like: best score first, skipping rows too similar (> tau) to one already chosen."""
    scores, source = pool_scores(ctx, score_run=score_run, score_column=score_column)
    picks, nearest, skipped = deita_filter(ctx.vectors(), scores, ctx.budget, tau=tau)
    if len(picks) < ctx.budget:
        scored = int(np.isfinite(scores).sum())
        raise ConfigError(
            f"Only {len(picks)} rows can be chosen: {scored} rows have a score ({source}) and {skipped} of them "
            f"are within similarity {tau} of a better one. Raise --tau (for example 0.95) or lower the budget."
        )
    reasons = [f"score {scores[p]:g} ({source}); "
               + ("first pick" if np.isnan(s) else f"closest earlier pick at similarity {s:.2f} <= {tau}")
               for p, s in zip(picks, nearest, strict=True)]
    return Selection(positions=picks, scores=[float(scores[p]) for p in picks], reasons=reasons,
                     flags={"score_source": source, "skipped_as_similar": skipped})
