"""Rating every row with a model, batch by batch, so a stopped run resumes and every call is counted.

A batch is `batch_size` consecutive pool rows, stored as one subset result: `members` are the batch's row ids,
`raw` holds one JSON object per model call (always with the row id; the model's answer text, or its top
log-probabilities), `calls` feed the workspace's usage, `picks` stay empty (rating runs pick at the end), and
`error` names the rows whose answers could not be used. Scores are always recomputed from `raw`, so nothing but
the model's own output is stored as evidence.

Batch status: ok (every row rated), failed (some row's answer unusable after its repair; kept, not called again
unless retry_failed), error (the backend could not be reached; the next run calls the batch again).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from selectllm_core.engines import ThreadExecutor, UnitOutcome, run_units
from selectllm_core.errors import BackendError, CapabilityError, RunStopped, SpendCapReached
from selectllm_core.methods.base import Context
from selectllm_core.store import Store


@dataclass
class RowRating:
    """What rating one row produced: raw answers (JSON-able dicts), calls, and why it is unusable if so."""

    row_id: str
    raw: list[dict] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    error: str | None = None
    unreachable: bool = False


RateRow = Callable[[dict], RowRating]


def call_record(*, prompt_tokens: int, completion_tokens: int, elapsed: float, ok: bool = True) -> dict:
    """One entry of a subset result's `calls`."""
    return {"ok": ok, "prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
            "elapsed": float(elapsed)}


def guarded(rate_row: RateRow) -> RateRow:
    """Wrap a row rater so an unreachable backend marks the row instead of losing the batch's other calls."""

    def wrapper(row: dict) -> RowRating:
        try:
            return rate_row(row)
        except CapabilityError:
            raise  # no later call can succeed: stop the run with the backend's own message
        except (SpendCapReached, RunStopped) as exc:  # refused before sending: no call was made
            return RowRating(row_id=row["id"], error=str(exc), unreachable=True)
        except BackendError as exc:
            return RowRating(row_id=row["id"], error=str(exc), unreachable=True,
                             calls=[call_record(prompt_tokens=0, completion_tokens=0, elapsed=0.0, ok=False)])

    return wrapper


def batches(n: int, batch_size: int) -> list[range]:
    """Consecutive pool positions cut into batches."""
    return [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def batch_of(n: int, batch_size: int) -> np.ndarray:
    """Batch index per pool position (stored as the run plan's subset)."""
    return np.arange(n) // batch_size


def rate_pool(ctx: Context, rate_row: RateRow, *, batch_size: int, workers: int = 1) -> dict[str, list[dict]]:
    """Rate every row not yet rated in a stored batch, through the run driver; return raw answers per row id.

    Args:
        ctx: the method context (store, run, pool).
        rate_row: rates one row dict (id, instruction, input, ...); may raise BackendError or CapabilityError.
        batch_size: rows per stored batch (a unit of the run driver).
        workers: rows rated in parallel inside a batch.

    Returns:
        {row id: raw entries} for every row of a batch stored as ok or failed.
    """
    store, run_id = ctx.store, ctx.run_id
    if ctx.retry_failed:
        store.reset_subsets(run_id, [r["subset"] for r in store.subset_results(run_id) if r["status"] == "failed"])
    rows = ctx.frame[["id", "instruction", "input"]].to_dict("records")
    units = {index: [rows[p] for p in positions] for index, positions in enumerate(batches(len(rows), batch_size))}
    run_units(store, run_id, units, functools.partial(rate_batch, workers=workers),
              executor=ThreadExecutor(guarded(rate_row), workers=1), progress=ctx.progress, stage="rate",
              what="batches", meter=ctx.meter)
    return raw_by_row(store, run_id)


def rate_batch(rate: RateRow, index: int, members: list[dict], *, workers: int = 1) -> UnitOutcome:
    """One batch as a unit of the run driver: every row rated (`workers` at once), as one stored outcome.

    Status: error when a row could not reach the model (the batch is called again on resume), failed when a
    row's answer was unusable, else ok.
    """
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rated = list(pool.map(rate, members))
    else:
        rated = [rate(row) for row in members]
    if any(r.unreachable for r in rated):
        status = "error"
    elif any(r.error for r in rated):
        status = "failed"
    else:
        status = "ok"
    errors = [f"{r.row_id}: {r.error}" for r in rated if r.error]
    return UnitOutcome(
        subset=index, status=status, members=[r.row_id for r in rated],
        raw=[json.dumps({"row_id": r.row_id, **entry}, ensure_ascii=False) for r in rated for entry in r.raw],
        calls=[c for r in rated for c in r.calls], error="; ".join(errors) or None,
    )


def raw_by_row(store: Store, run_id: str) -> dict[str, list[dict]]:
    """Raw answers per row id, from every batch stored as ok or failed (error batches are redone)."""
    out: dict[str, list[dict]] = {}
    for result in store.subset_results(run_id):
        if result["status"] not in ("ok", "failed"):
            continue
        for text in result["raw"]:
            entry = json.loads(text)
            out.setdefault(entry["row_id"], []).append(entry)
    return out


def workers_for(models: list[tuple[object, float]]) -> int:
    """Rows in flight: the smallest concurrency among the models (1 for the local model)."""
    return max(1, min(int(getattr(b, "concurrency", 1)) for b, _ in models))
