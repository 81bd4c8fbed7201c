"""AlpaGasus-style rating (Chen et al., 2023, arXiv 2307.08701): a model rates every row 0-5 with a reason.

Rows rated at or above the threshold (default 4.5, as AlpaGasus) are kept, best first (ties keep pool order),
and the first `budget` of them are the selection. When fewer rows pass, the selection holds only those and the
result says so (`flags["short_by_threshold"]`): rows below the threshold are never added to fill the budget.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.llm import ChatBackend
from selectllm_core.methods.base import Context, Selection, rank_desc
from selectllm_core.methods.rating import RowRating, batch_of, rate_pool, raw_by_row, workers_for
from selectllm_core.store import Store

NOTE = ("AlpaGasus rated (instruction, response) pairs; here each instruction is rated alone, "
        "because the pool has no responses yet.")

TEMPLATE = (
    "We would like your feedback on an instruction that may be given to human annotators, who would write the "
    "response used to fine-tune an AI assistant.\n\n### Instruction:\n{instruction}\n{input_block}\n"
    "Rate how valuable it would be to annotate this instruction, on a scale of 0 to 5 (halves allowed), where a "
    "higher score means clearer, more specific, more instructive and more useful for fine-tuning, and worth an "
    "annotator's time. First give the score, then a one-sentence explanation, avoiding any bias.\n\n"
    'Answer with JSON only, in exactly this form: {"score": <number from 0 to 5>, "reason": "<one sentence>"}'
)
SCHEMA = {
    "type": "object",
    # the reason's length limit lets a constrained model close the JSON well within max_tokens
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 5},
                   "reason": {"type": "string", "maxLength": 300}},
    "required": ["score", "reason"],
}
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class UnusableRating(ValueError):
    """A rating answer that cannot be used; the message says why, for a curator."""


def render(instruction: str, input_text: str = "") -> str:
    """The rating prompt of one row (plain replacement: the JSON braces are literal)."""
    block = f"\n### Input:\n{input_text}\n" if input_text else ""
    return TEMPLATE.replace("{instruction}", instruction).replace("{input_block}", block)


def parse_rating(text: str) -> tuple[float, str]:
    """Read (score, reason) from an answer: a JSON object with a score in [0, 5] and a reason string.

    Raises:
        UnusableRating: not JSON, no score, a score that is not a number in [0, 5], or a reason that is not text.
    """
    match = _OBJECT.search(text or "")
    if not match:
        raise UnusableRating("the answer holds no JSON object")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        raise UnusableRating("the answer is not valid JSON") from None
    if not isinstance(data, dict) or "score" not in data:
        raise UnusableRating('the answer has no "score"')
    score = _number(data["score"])
    if score is None or not 0.0 <= score <= 5.0:
        raise UnusableRating(f'"score" must be a number from 0 to 5 (got {data["score"]!r})')
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise UnusableRating('"reason" must be text')
    return score, reason.strip()


def _number(value: Any) -> float | None:
    """A finite float from a JSON number or numeric string; None otherwise (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def repair_message(error: str) -> str:
    """The follow-up that asks once more for a usable answer."""
    return (f"That answer cannot be used: {error}. Answer again with JSON only, in exactly this form: "
            '{"score": <number from 0 to 5>, "reason": "<one sentence>"}')


def rater(backend: ChatBackend, *, max_tokens: int):  # noqa: ANN201 - returns a RateRow
    """A function rating one row with one backend: one call, and one repair call when the answer is unusable."""

    def rate(row: dict) -> RowRating:
        out = RowRating(row_id=row["id"])
        messages = [{"role": "user", "content": render(row["instruction"], row["input"])}]
        for attempt in (1, 2):
            t0 = time.perf_counter()
            result = backend.chat(messages, json_schema=SCHEMA, max_tokens=max_tokens, temperature=0.0)
            out.raw.append({"attempt": attempt, "answer": result.text})
            out.calls.append({**result.record(), "elapsed": result.elapsed or time.perf_counter() - t0})
            try:
                parse_rating(result.text)
                out.error = None
                return out
            except UnusableRating as exc:
                out.error = str(exc)
                messages = messages + [{"role": "assistant", "content": result.text},
                                       {"role": "user", "content": repair_message(str(exc))}]
        return out

    return rate


def ratings(raw: dict[str, list[dict]]) -> dict[str, tuple[float, str]]:
    """(score, reason) per row id from the last stored answer of each row; unusable rows are left out."""
    out = {}
    for row_id, entries in raw.items():
        try:
            out[row_id] = parse_rating(entries[-1]["answer"])
        except UnusableRating:
            continue
    return out


def stored_scores(store: Store, run_id: str) -> pd.Series:
    """Every rated row's score in a stored AlpaGasus run (row id -> score)."""
    return pd.Series({rid: s for rid, (s, _r) in ratings(raw_by_row(store, run_id)).items()}, dtype=float)


def select_alpagasus(ctx: Context, *, threshold: float, batch_size: int, max_tokens: int) -> Selection:
    """Rate every row, keep those at or above the threshold, best first, at most `budget`."""
    backend = ctx.models[0][0]
    raw = rate_pool(ctx, rater(backend, max_tokens=max_tokens), batch_size=batch_size,
                    workers=workers_for(ctx.models))
    rated = ratings(raw)
    ids = ctx.frame["id"].tolist()
    scores = np.array([rated[i][0] if i in rated else np.nan for i in ids])
    kept = [int(p) for p in rank_desc(np.where(scores >= threshold, scores, np.nan))]
    positions = kept[: ctx.budget]
    flags = {"threshold": threshold, "rated": len(rated), "unrated": len(ids) - len(rated),
             "passed_threshold": len(kept), "short_by_threshold": max(0, ctx.budget - len(kept)), "note": NOTE}
    return Selection(positions=positions, scores=[float(scores[p]) for p in positions],
                     reasons=[f"rated {scores[p]:g}/5: {rated[ids[p]][1]}" for p in positions], flags=flags,
                     subset_of=batch_of(len(ids), batch_size), complete=len(rated) == len(ids))
