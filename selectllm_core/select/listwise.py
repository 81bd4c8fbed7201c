"""Running the LLM over subsets: shuffling, validation, one repair retry, concurrency, resume, trimming.

A subset ends in one of four states, stored as soon as it is known:
- ok: the answer names exactly k distinct ids of the subset (after at most one repair message);
- failed: the answer was still unusable after the repair; the raw answers are kept, no pick is made;
- error: the backend could not be reached (after its own retries); resuming the run calls it again;
- skipped: the subset had too few rows left to choose from.
A run stopped at any moment resumes from the store: ok, failed and skipped subsets are never called again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectllm_core.engines import Executor, Meter, StageProgress, ThreadExecutor, UnitOutcome, run_units
from selectllm_core.errors import BackendError, ConfigError, PromptTooLong, RunStopped, SpendCapReached
from selectllm_core.llm import ChatBackend
from selectllm_core.select.orders import CHECK, VOTE, borda, orders_of
from selectllm_core.select.parsing import parse_answer, repair_message
from selectllm_core.select.prompts import answer_schema, render
from selectllm_core.store import Store


@dataclass(frozen=True)
class Candidate:
    """One row as shown to the model."""

    row_id: str
    instruction: str
    input: str


@dataclass(frozen=True)
class PromptSpec:
    """The prompt side of a run."""

    template: str
    answer_format: str = "json"
    domain: str = ""
    max_tokens: int = 512
    max_input_chars: int | None = None

    def shown_input(self, text: str) -> str:
        """An input as shown to the model: cut to max_input_chars (marked) when a limit is set."""
        if self.max_input_chars is None or len(text) <= self.max_input_chars:
            return text
        return text[: self.max_input_chars].rstrip() + " [...]"


def presentation_order(members: list[Candidate], *, subset: int, seed: int, shuffle: bool) -> list[Candidate]:
    """Order in which a subset is shown: a seeded shuffle per subset, against position bias."""
    if not shuffle:
        return list(members)
    rng = np.random.default_rng([seed, subset])
    return [members[i] for i in rng.permutation(len(members))]


def first_request(shown: list[Candidate], *, k: int, prompt: PromptSpec) -> tuple[list[dict], dict]:
    """The messages and answer schema of a subset's first request (the estimate and the cache key use it too)."""
    text = render(prompt.template, [(c.instruction, prompt.shown_input(c.input)) for c in shown], k=k,
                  domain=prompt.domain)
    return [{"role": "user", "content": text}], answer_schema(n=len(shown), k=k, answer_format=prompt.answer_format)


def select_subset(
    backend: ChatBackend, members: list[Candidate], *, subset: int, k: int, prompt: PromptSpec, seed: int = 0,
    shuffle: bool = True, orders: int = 1, check: bool = False,
) -> UnitOutcome:
    """Ask the model for k picks of one subset, with one repair retry per request.

    Args:
        backend: a ChatBackend.
        members: the subset's rows (their stored order).
        subset: subset index (seeds the shuffle and the orders).
        k: picks wanted.
        prompt: template, answer format, domain, answer length.
        seed: run seed.
        shuffle: shuffle candidates before showing them.
        orders: P, the orders the subset is shown in (1: the paper). P >= 2 aggregates the usable answers with
            Borda counts (`select.orders`); a pick's reason is the one its best-ranking answer gave.
        check: with P = 1, ask once more in reversed order, to measure order consistency (never picks).

    Returns:
        The outcome; picks are row ids in the model's (or Borda's) order, `orders` each order's shown ids and
        picks (None: unusable), raw every answer.
    """
    shown = presentation_order(members, subset=subset, seed=seed, shuffle=shuffle)
    out = UnitOutcome(subset=subset, status="failed", members=[c.row_id for c in shown])
    if k > len(shown) - 1 >= 1:
        out.note = (f"{k} picks were planned, but this subset holds only {len(shown)} rows: asked for "
                    f"{len(shown) - 1}, so the model still passes one over")
    k = min(k, len(shown) - 1)
    if k < 1:
        out.status, out.error = "skipped", f"only {len(shown)} row(s) left in this subset: nothing to choose"
        return out
    views = orders_of(len(shown), max(orders, 2 if check else 1), seed=[seed, subset])
    answers: list[tuple[list[str], dict[str, str]]] = []
    for j, view in enumerate(views):
        role = VOTE if j < orders else CHECK
        if role == CHECK and not answers:
            break  # nothing to check against: the subset failed
        ordered = [shown[i] for i in view]
        got = ask_one(backend, ordered, k=k, prompt=prompt, out=out)
        if got is STOP:
            if role == CHECK:  # the check could not be sent (stopped, capped): the picks stand without it
                out.status, out.error = "ok", None
                break
            return out
        if orders > 1 or check:
            out.orders.append({"role": role, "shown": [c.row_id for c in ordered], "picks": got[0] if got else None})
        if got and role == VOTE:
            answers.append(got)
    if not answers:
        out.status = "failed"
        return out
    out.status, out.error = "ok", None
    if orders == 1:
        out.picks, out.reasons = answers[0]
        return out
    out.picks = borda([picks for picks, _ in answers], k)
    for rid in out.picks:  # the reason of the answer that ranked the pick highest (the earlier order on a tie)
        given = sorted((picks.index(rid), a) for a, (picks, reasons) in enumerate(answers) if rid in reasons)
        if given:
            out.reasons[rid] = answers[given[0][1]][1][rid]
    if len(answers) < orders:
        out.note = "; ".join(filter(None, [out.note, f"{len(answers)} of {orders} orders gave usable answers: "
                                           "the picks aggregate those"]))
    return out


STOP = object()  # `send` and `ask_one`: the request was not answered (refused, stopped, unreachable); out says why


def send(out: UnitOutcome, call: Callable[[], Any]) -> Any:
    """One backend call of a unit: its result, or STOP with out.status and out.error saying why there is none.

    Refused before sending (a spending cap, a Stop): no call was made and the unit stays to do. A prompt too
    long for the model: not worth resuming as is, the unit fails with what to change. Anything else that could
    not reach the model: an error, asked again on resume.
    """
    try:
        return call()
    except (SpendCapReached, RunStopped) as exc:
        out.status, out.error = "error", str(exc)
    except PromptTooLong as exc:
        out.calls.append(dict(FAILED_CALL))
        out.status, out.error = "failed", f"The prompt is too long for the model: {exc}"
    except BackendError as exc:
        out.calls.append(dict(FAILED_CALL))
        out.status, out.error = "error", str(exc)
    return STOP


def chat_once(backend: ChatBackend, out: UnitOutcome, messages: list[dict], *, schema: dict | None,
              max_tokens: int) -> str | object:
    """One greedy chat call of a unit: its answer (kept in out.raw, the call in out.calls), or STOP (`send`)."""
    result = send(out, lambda: backend.chat(messages, json_schema=schema, max_tokens=max_tokens, temperature=0.0))
    if result is STOP:
        return STOP
    out.raw.append(result.text)
    out.calls.append(result.record())
    return result.text


FAILED_CALL = {"ok": False, "prompt_tokens": 0, "completion_tokens": 0, "elapsed": 0.0}  # a call with no answer


def ask_one(backend: ChatBackend, shown: list[Candidate], *, k: int, prompt: PromptSpec,
         out: UnitOutcome) -> tuple[list[str], dict[str, str]] | None | object:
    """One request in one order, with one repair retry: (picks, reasons), None (unusable), or STOP.

    Every answer goes to out.raw and every call to out.calls; out.status and out.error say why it stopped.
    """
    messages, schema = first_request(shown, k=k, prompt=prompt)
    for _attempt in range(2):
        text = chat_once(backend, out, messages, schema=schema, max_tokens=prompt.max_tokens)
        if text is STOP:
            return STOP
        parsed = parse_answer(text, n=len(shown), k=k)
        if parsed.ok:
            return ([shown[i - 1].row_id for i in parsed.picks],
                    {shown[i - 1].row_id: r for i, r in parsed.reasons.items() if r})
        out.error = parsed.error
        messages = messages + [
            {"role": "assistant", "content": text},
            {"role": "user", "content": repair_message(parsed, n=len(shown), k=k)},
        ]
    return None


def subset_work(backend: ChatBackend, subset: int, members: list[Candidate], *, k: int, prompt: PromptSpec,
                seed: int, shuffle: bool, orders: int = 1, checks: frozenset[int] = frozenset()) -> UnitOutcome:
    """One subset as a unit of the run driver (`engines.run_units`): its outcome, never an exception."""
    return select_subset(backend, members, subset=subset, k=k, prompt=prompt, seed=seed, shuffle=shuffle,
                         orders=orders, check=subset in checks)


def execute(
    store: Store, run_id: str, subsets: dict[int, list[Candidate]], *, backend: ChatBackend | None = None, k: int,
    prompt: PromptSpec, seed: int = 0, shuffle: bool = True, progress: StageProgress | None = None,
    executor: Executor | None = None, meter: Meter | None = None, orders: int = 1,
    checks: frozenset[int] = frozenset(),
) -> dict:
    """Run every subset that has no final outcome yet through the run driver, storing each as it arrives.

    Args:
        store: the workspace.
        run_id: the run (already created).
        subsets: subset index -> its rows.
        backend: a ChatBackend; its `concurrency` bounds calls in flight (threads of this process).
        k: picks per subset.
        prompt: the prompt side of the run.
        seed: shuffle seed.
        shuffle: shuffle candidates.
        progress: called with ("select", done, total) after each subset.
        executor: how subsets are computed instead of threads over `backend` (engines.ray.RayExecutor).
        meter: the run's response cache, prices and spending cap (the backend or executor goes through it).
        orders: P, the orders each subset is shown in (`select_subset`).
        checks: subsets asked once more in reversed order to measure order consistency (P = 1 only).

    Returns:
        Counts of outcomes in this call: {"ok", "failed", "error", "skipped", "called"}.
    """
    if executor is None and backend is None:
        raise ConfigError("execute needs a backend (threads of this process call it) or an executor.")
    work = functools.partial(subset_work, k=k, prompt=prompt, seed=seed, shuffle=shuffle, orders=orders,
                             checks=frozenset(checks) if orders == 1 else frozenset())
    return run_units(store, run_id, subsets, work, executor=executor or ThreadExecutor(backend), progress=progress,
                     stage="select", what="subsets", meter=meter)


def trim_picks(results: list[dict], budget: int,
               keep: list[tuple[str, int, str]] | None = None) -> list[tuple[str, int, str]]:
    """Exactly `budget` picks (or all there are): every subset's first pick, then every second pick, ...

    Args:
        results: stored subset outcomes in subset order.
        budget: rows wanted.
        keep: picks that must stay selected whatever the order says (decided or exported ones); the
            round robin fills only the places they leave open.

    Returns:
        (row_id, subset, reason) in selection order; kept picks no subset names any more come last.
    """
    keep = keep or []
    kept = {rid for rid, _s, _r in keep}
    room = budget - len(kept)
    ok = [r for r in results if r["status"] == "ok"]
    depth = max((len(r["picks"]) for r in ok), default=0)
    out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for rank in range(depth):
        for r in ok:
            rid = r["picks"][rank] if rank < len(r["picks"]) else None
            if rid is None or rid in seen or (rid not in kept and room <= 0):
                continue
            out.append((rid, r["subset"], r["reasons"].get(rid, "")))
            seen.add(rid)
            room -= rid not in kept
    return out + [k for k in keep if k[0] not in seen]


def finalize(store: Store, run_id: str, budget: int, *, subsets: set[int] | None = None) -> dict:
    """Store the trimmed selection and return a summary (selected, short by, failed subsets).

    `subsets` are the ones whose picks are trimmed (a tournament's last round; None: every subset). The
    summary's subset counts cover every round.

    Picks the curator decided, or that were exported, stay selected: a retried subset's first pick fills
    an open place instead of pushing a decided second pick out (which would orphan its decision). A pick the
    curator swapped out for a passed-over candidate is never selected again.
    """
    results = store.subset_results(run_id)
    removed = store.removed_picks(run_id)  # swapped out by a curator: never selected again by a re-trim
    offered = [{**r, "picks": [p for p in r["picks"] if p not in removed]} for r in results
               if subsets is None or r["subset"] in subsets]
    picks = trim_picks(offered, budget, keep=store.kept_picks(run_id))
    store.save_selection(run_id, [(rid, rank + 1, None, reason, subset)
                                  for rank, (rid, subset, reason) in enumerate(picks)])
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    short = budget - len(picks)
    store.set_run_status(run_id, "complete" if short <= 0 else "incomplete")
    return {"selected": len(picks), "budget": budget, "short_by": max(0, short), "subsets": by_status}
