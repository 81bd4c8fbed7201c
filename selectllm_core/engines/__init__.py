"""The one run driver: every run of every method goes through `run_units`.

A run is cut into units: SelectLLM's subsets, a rating method's batches. `run_units` owns what all of them
share, and nothing else:
- skip the units already finished in the workspace (ok, failed, skipped), so a stopped run resumes;
- record each outcome as soon as it arrives (`Store.save_subset_result`: status, raw answers, calls);
- report progress as (stage, done, total);
- stop after `stop_after` consecutive units that could not reach the model, keeping the calls already in
  flight (they are paid for), and mark the run interrupted.

How the units are computed is passed in: an executor (threads in this process, or Ray actors, see
`engines.ray`) that holds the resource the work needs (a chat backend, a list of models) and maps a work
function over (index, payload) pairs, yielding outcomes as they complete.

    counts = run_units(store, run_id, {0: rows0, 1: rows1}, work, executor=ThreadExecutor(backend, workers=4))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from selectllm_core.engines.meter import Meter, MeteredBackend
from selectllm_core.engines.ray import RayExecutor
from selectllm_core.engines.threads import ThreadExecutor
from selectllm_core.errors import BackendError, CapabilityError, ConfigError, RunStopped, SpendCapReached

if TYPE_CHECKING:
    from selectllm_core.store import Store

ENGINES = ("local", "ray")
MAX_CONSECUTIVE_ERRORS = 3
STATUSES = ("ok", "failed", "error", "skipped")
StageProgress = Callable[[str, int, int], None]
Work = Callable[[Any, int, Any], "UnitOutcome"]


@dataclass
class UnitOutcome:
    """What one unit's calls produced, as the workspace stores it; picks and reasons are row ids, never invented.

    status: ok (usable answers), failed (unusable after repair: kept, not called again), error (the model
    could not be reached: resuming calls it again), skipped (nothing to ask).
    """

    subset: int
    status: str
    members: list[str]
    picks: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    error: str | None = None
    note: str | None = None  # what differs from the plan, said plainly (fewer picks than planned)
    orders: list[dict] = field(default_factory=list)  # SelectLLM with P orders or an order check: each order's
    # {"role": "vote" | "check", "shown": [row ids], "picks": [row ids] or None (unusable)}
    halt: bool = False  # its error is one no other unit would mend (the backend lacks what the run needs): stored,
    # then the run stops at once with that error


class Executor(Protocol):
    """Computes units: `map(work, items, stop=...)` yields `work(resource, index, payload)` as each completes.

    Once `stop()` returns True no new unit may start; units already started still finish and are yielded.
    """

    def map(self, work: Work, items: Iterable[tuple[int, Any]], *,
            stop: Callable[[], bool]) -> Iterator[UnitOutcome]: ...


def executor_for(engine: str, backend: Any, *, meter: Meter | None = None) -> Executor:
    """Threads of this process over the backend behind the meter (engine "local"), or Ray actors ("ray").

    Ray actors rebuild the backend from its description, so their calls skip the response cache and cannot keep
    a spending cap; their cost is still recorded from their tokens. A cap with Ray is refused here.
    """
    if engine == "ray":
        if meter is not None and meter.max_cost is not None:
            raise ConfigError("--max-cost needs --engine local: Ray workers call the model on their own, so no "
                              "cap could stop them in time. Leave out --engine ray, or the cap.")
        if meter is not None:
            meter.remote = True
        return RayExecutor.for_backend(backend.inner if isinstance(backend, MeteredBackend) else backend)
    if engine != "local":
        raise ConfigError(f"Unknown engine {engine!r}: choose {' or '.join(ENGINES)}.")
    return ThreadExecutor(meter.wrap(backend) if meter is not None else backend)


def record(store: Store, run_id: str, o: UnitOutcome, counts: dict, meter: Meter | None = None) -> None:
    """Store one unit's outcome, each call with its cost, and add it to the call's counts."""
    if meter is not None:
        for call in o.calls:
            if call.get("cost") is None and call.get("ok", True):
                call["cost"] = meter.cost_of(call)
            if meter.remote:
                meter.count_remote(call)
    store.save_subset_result(run_id, o.subset, status=o.status, members=o.members, picks=o.picks,
                             reasons=o.reasons, raw=o.raw, calls=o.calls, error=o.error, note=o.note,
                             orders=o.orders)
    counts[o.status] = counts.get(o.status, 0) + 1
    counts["called"] += len(o.calls)


def run_units(store: Store, run_id: str, units: Mapping[int, Any], work: Work, *, executor: Executor,
              progress: StageProgress | None = None, stage: str = "select", what: str = "subsets",
              stop_after: int = MAX_CONSECUTIVE_ERRORS, meter: Meter | None = None,
              done: set[int] | None = None) -> dict:
    """Run every unit that has no final outcome yet, storing each outcome as it arrives.

    Args:
        store: the workspace.
        run_id: the run (already created).
        units: unit index -> its payload (a subset's rows, a batch's rows).
        work: `work(resource, index, payload) -> UnitOutcome`; it must turn an unreachable model into an
            outcome with status "error" (raising stops the run at once, for errors no retry can mend).
        executor: how units are computed (ThreadExecutor, engines.ray.RayExecutor).
        progress: called with (stage, done, total) before the first unit and after each one.
        stage: the progress stage name ("select", "rate").
        what: the units' name in messages ("subsets", "batches").
        stop_after: consecutive "error" outcomes that stop the run (one outcome with `halt` stops it at once).
        meter: the run's cache, prices and cap (the executor's backend goes through it); each call is recorded
            with its cost, and a reached cap stops new units.
        done: the units not to run (None: those with a final outcome in the workspace). A second stage over
            the same units passes its own (SelectLLM's score aggregation: the scored subsets).

    Returns:
        Counts of outcomes in this call: {"ok", "failed", "error", "skipped", "called"}.

    Raises:
        BackendError: after `stop_after` units in a row could not reach the model (the run is interrupted;
            running the same command again resumes it).
        CapabilityError: a unit's outcome said the backend lacks what the run needs (`halt`); it is stored.
        SpendCapReached: the next call could have passed the meter's cap (the run is interrupted; the same
            command with a higher cap resumes it).
        RunStopped: the meter's cancel event was set (the curator's Stop); the run is interrupted and resumes.
    """
    done = store.done_subsets(run_id) if done is None else done
    todo = [(i, units[i]) for i in sorted(units) if i not in done]
    counts = dict.fromkeys((*STATUSES, "called"), 0)
    total, finished, streak = len(units), len(done & set(units)), 0
    settled = finished  # units with a final outcome (an "error" one is asked again on resume)
    stopping, last_error, halted = False, None, False
    if meter is not None:
        meter.spent_before = store.usage(run_id)["cost"]
    capped = (lambda: meter.tripped is not None or meter.cancelled) if meter is not None else (lambda: False)
    store.set_run_status(run_id, "running")
    if progress:
        progress(stage, finished, total)
    outcomes = executor.map(work, todo, stop=lambda: stopping or capped()) if todo else iter(())
    try:
        # closed on any error too, so no thread or Ray actor outlives the run
        with closing(outcomes) if hasattr(outcomes, "close") else nullcontext():
            for o in outcomes:  # after a stop, the units still in flight arrive here too and are kept
                record(store, run_id, o, counts, meter)
                finished += 1
                settled += o.status != "error"
                streak = streak + 1 if o.status == "error" else 0
                if progress:
                    progress(stage, finished, total)
                if (streak >= stop_after or o.halt) and not stopping:
                    stopping, last_error, halted = True, o.error, o.halt
    except BaseException:
        store.set_run_status(run_id, "interrupted")
        raise
    if capped():
        store.set_run_status(run_id, "interrupted")
        left = total - settled
        if meter.tripped is None:
            raise RunStopped(f"Stopped on request: {total - left} of {total} {what} are done, {left} left. Resume "
                             f"the run (or run the same command again) to continue: finished {what} are kept.")
        raise SpendCapReached(f"{meter.tripped} {total - left} of {total} {what} are done, {left} left; run the "
                              "same command with a higher --max-cost to resume.")
    if stopping:
        store.set_run_status(run_id, "interrupted")
        if halted:
            raise CapabilityError(f"Stopped: {last_error} Finished {what} are kept.")
        raise BackendError(
            f"Stopped: {stop_after} {what} in a row could not reach the model. Last error: {last_error} "
            f"Fix the backend and run the same command again: finished {what} are kept."
        )
    return counts


__all__ = ["ENGINES", "MAX_CONSECUTIVE_ERRORS", "Meter", "MeteredBackend", "RayExecutor", "STATUSES", "Executor", "StageProgress", "ThreadExecutor", "UnitOutcome",
           "Work", "executor_for", "record", "run_units"]
