"""Score aggregation: P score passes per subset, calibrated by the run's position prior, then one reasoned call
for the final picks.

A listwise answer spends most of its call generating ids and reasons, and a small model's generated ids follow
the positions it was shown (`select.orders`). A score pass generates no ids or reasons: the local model reads
the prompt and an answer begun for it (`[` for ids, `{"picks": [{"id": ` for JSON) and generates nothing; a chat
server writes that opening itself, a few tokens. Either way the backend reports the probability of every id at
the first answer slot (`ChatBackend.score_ids`); an id a server listed no probability for carries an upper bound
(`bounded`), which the prior leaves out and the subset's note names. Each subset is shown in P orders, as with
Borda. The position prior is what each shown position gets over every pass of the run's round (the
geometric mean of its probability, normalised); a candidate's score is the mean over its P passes of

    log p(its id) - log prior(its position)

so a position the model likes whatever it shows there no longer wins by being there. The k best-scored
candidates are the picks. One more call, in the first order, asks for the reasons of exactly those picks
(answer format "json"; the ids-only paper prompt has none to give). Its answer never changes the picks: when
it cannot be used, the picks stand without reasons, the subset's note says so, and the raw answer is kept.

Two stages of the run driver carry it: "score" (every subset's passes, stored with status "scored"), then
"select" (the prior over all of them, the picks and the reasoned call). A run stopped between them resumes
at the second; the passes are never asked again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from selectllm_core.engines import Executor, Meter, StageProgress, UnitOutcome, run_units
from selectllm_core.llm import ChatBackend
from selectllm_core.select.listwise import (
    STOP,
    Candidate,
    PromptSpec,
    chat_once,
    first_request,
    presentation_order,
    send,
)
from selectllm_core.select.orders import orders_of
from selectllm_core.select.parsing import parse_answer
from selectllm_core.select.prompts import answer_schema, score_prefill
from selectllm_core.store import Store

SCORE = "score"  # the role of a score pass in a subset's stored `orders`
SCORED = "scored"  # a subset whose passes are stored and whose picks wait for the run's position prior
AGGREGATIONS = ("borda", "scores")


def score_subset(backend: ChatBackend, members: list[Candidate], *, subset: int, k: int, prompt: PromptSpec,
                 seed: int = 0, shuffle: bool = True, orders: int = 1) -> UnitOutcome:
    """P score passes of one subset: its outcome with status "scored" (or skipped, failed, error).

    Each pass is stored as {"role": "score", "shown": row ids, "logprobs": per shown position}.
    """
    shown = presentation_order(members, subset=subset, seed=seed, shuffle=shuffle)
    out = UnitOutcome(subset=subset, status="failed", members=[c.row_id for c in shown])
    if min(k, len(shown) - 1) < 1:
        out.status, out.error = "skipped", f"only {len(shown)} row(s) left in this subset: nothing to choose"
        return out
    k = min(k, len(shown) - 1)
    ids = [str(i) for i in range(1, len(shown) + 1)]
    for view in orders_of(len(shown), orders, seed=[seed, subset]):
        ordered = [shown[i] for i in view]
        messages, _schema = first_request(ordered, k=k, prompt=prompt)
        result = send(out, lambda m=messages: backend.score_ids(m, prefill=score_prefill(prompt.answer_format),
                                                                ids=ids))
        if result is STOP:
            return out
        out.calls.append(result.record())
        if result.unusable is not None:  # a server's short answer held no id to read: kept, and the subset fails
            out.raw.append(result.raw or "")
            out.error = f"A score pass could not be used: {result.unusable}"
            out.status, out.halt = ("error", True) if result.halts else ("failed", False)
            return out
        out.orders.append({"role": SCORE, "shown": [c.row_id for c in ordered],
                           "logprobs": [round(result.logprobs[i], 6) for i in ids], "mass": result.mass,
                           **({"bounded": list(result.bounded)} if result.bounded else {})})
    out.status = SCORED
    return out


def position_prior(results: Sequence[Mapping]) -> dict[int, list[float]]:
    """What each shown position gets whatever is shown there, by the number of candidates shown.

    The geometric mean of each position's probability over every score pass, normalised: a bias that adds to
    the logits of a position is taken out exactly, and one pass's confident pick does not dominate the prior
    the way an arithmetic mean of probabilities lets it.
    """
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    every: dict[int, list[np.ndarray]] = {}
    for r in results:
        for o in r.get("orders") or []:
            if o.get("role") != SCORE:
                continue
            lp = np.asarray(o["logprobs"], dtype=float)
            n = len(lp)
            measured = np.ones(n)  # an upper bound a server gave an unlisted id is not a measurement of its place
            measured[[int(i) - 1 for i in o.get("bounded") or []]] = 0.0
            sums[n] = sums.get(n, 0) + lp * measured
            counts[n] = counts.get(n, 0) + measured
            every.setdefault(n, []).append(lp)
    out = {}
    for n, total in sums.items():
        fallback = np.mean(every[n], axis=0)  # a place never measured: its bounds are all there is
        mean = np.where(counts[n] > 0, total / np.maximum(counts[n], 1), fallback)
        out[n] = np.exp(mean - np.logaddexp.reduce(mean)).tolist()
    return out


def calibrated(passes: Sequence[Mapping], prior: Mapping[int, Sequence[float]]) -> dict[str, float]:
    """Each candidate's mean over the passes of log p(id) - log prior(position)."""
    total: dict[str, float] = {}
    for o in passes:
        base = prior.get(len(o["logprobs"])) or [1.0 / len(o["logprobs"])] * len(o["logprobs"])
        for pos, (rid, lp) in enumerate(zip(o["shown"], o["logprobs"])):
            total[rid] = total.get(rid, 0.0) + lp - math.log(max(base[pos], 1e-12))
    return {rid: v / len(passes) for rid, v in total.items()}


def top_k(scores: Mapping[str, float], k: int, order: Sequence[str]) -> list[str]:
    """The k best scores (a tie goes to the candidate shown earlier in the first order)."""
    first = {rid: i for i, rid in enumerate(order)}
    return sorted(scores, key=lambda rid: (-round(scores[rid], 9), first.get(rid, len(first))))[:k]


def reason_request(shown: list[Candidate], picks: list[str], *, k: int, prompt: PromptSpec) -> tuple[list[dict], dict]:
    """The reasoned call for picks already made: the run's prompt in the first order, told which ids to explain."""
    messages, _schema = first_request(shown, k=k, prompt=prompt)
    numbers = [next(i for i, c in enumerate(shown, 1) if c.row_id == rid) for rid in picks]
    named = ", ".join(f"[{i}]" for i in numbers)
    text = (messages[0]["content"] + f"\n\nThese {len(picks)} have been selected: {named}. Give the reason for "
            "each of exactly these, in that form.")
    schema = answer_schema(n=len(shown), k=len(picks), answer_format="json")
    schema["properties"]["picks"]["items"]["properties"]["id"]["enum"] = numbers
    return [{"role": "user", "content": text}], schema


def reason_subset(backend: ChatBackend, stored: Mapping, *, subset: int, k: int, prompt: PromptSpec,
                  prior: Mapping[int, Sequence[float]], candidates: Sequence[Candidate]) -> UnitOutcome:
    """The picks of a scored subset by calibrated score, and one reasoned call for them (`json` answers)."""
    passes = [dict(o) for o in stored["orders"] if o.get("role") == SCORE]
    members = list(stored["members"])
    out = UnitOutcome(subset=subset, status="ok", members=members, raw=list(stored.get("raw") or []),
                      orders=passes)
    k = min(k, len(members) - 1)
    scores = calibrated(passes, prior)
    out.picks = top_k(scores, k, members)
    resting = [rid for rid in out.picks if any(str(o["shown"].index(rid) + 1) in (o.get("bounded") or [])
                                                for o in passes)]
    if resting:
        out.note = (f"{len(resting)} of the {len(out.picks)} picks rest partly on upper bounds: in some score passes "
                    "the server listed no probability for their ids, so those passes scored them at most the least "
                    "listed probability.")
    for o in passes:  # each pass's own calibrated picks: the run's order consistency compares them
        single = calibrated([o], prior)
        o["picks"] = top_k(single, k, o["shown"])
        o["scores"] = [round(single[rid], 4) for rid in o["shown"]]
    if prompt.answer_format != "json":
        return out  # the ids-only prompt gives no reasons, as with one order
    by_id = {c.row_id: c for c in candidates}
    shown = [by_id[rid] for rid in members]
    messages, schema = reason_request(shown, out.picks, k=k, prompt=prompt)
    named_ids = ", ".join(f"[{i}]" for i in schema["properties"]["picks"]["items"]["properties"]["id"]["enum"])
    for _attempt in range(2):
        text = chat_once(backend, out, messages, schema=schema, max_tokens=prompt.max_tokens)
        if text is STOP:
            return out
        parsed = parse_answer(text, n=len(shown), k=len(out.picks))
        named = {shown[i - 1].row_id: r for i, r in parsed.reasons.items() if r} if parsed.ok else {}
        if parsed.ok and set(named) <= set(out.picks):
            out.reasons = named
            if len(named) < len(out.picks):
                add_note(out, f"the reasoned call explained {len(named)} of the {len(out.picks)} picks")
            return out
        error = parsed.error if not parsed.ok else "its reasons were for instructions that were not picked"
        again = (f"Your answer could not be used: {error}. Answer with JSON only, a one-sentence reason for each of "
                 f"{named_ids}, in exactly this form: " '{"picks": [{"id": <number>, "reason": "<why>"}]}')
        messages = messages + [{"role": "assistant", "content": text}, {"role": "user", "content": again}]
    add_note(out, f"The reasoned call's answer could not be used ({error}): the picks stand from the scores, "
             "without reasons; its raw answer is kept.")
    return out


def add_note(out: UnitOutcome, text: str) -> None:
    """Add one plain sentence to what a subset's note says."""
    out.note = f"{out.note} {text}" if out.note else text


def score_work(backend: ChatBackend, subset: int, members: list[Candidate], *, k: int, prompt: PromptSpec,
               seed: int, shuffle: bool, orders: int) -> UnitOutcome:
    """Stage "score" as a unit of the run driver."""
    return score_subset(backend, members, subset=subset, k=k, prompt=prompt, seed=seed, shuffle=shuffle,
                        orders=orders)


def reason_work(backend: ChatBackend, subset: int, payload: tuple[Mapping, list[Candidate]], *, k: int,
                prompt: PromptSpec, prior: Mapping[int, Sequence[float]]) -> UnitOutcome:
    """Stage "select" of the score aggregation as a unit of the run driver."""
    stored, candidates = payload
    return reason_subset(backend, stored, subset=subset, k=k, prompt=prompt, prior=prior, candidates=candidates)


def execute_scores(store: Store, run_id: str, subsets: dict[int, list[Candidate]], *, executor: Executor, k: int,
                   prompt: PromptSpec, seed: int = 0, shuffle: bool = True, progress: StageProgress | None = None,
                   meter: Meter | None = None, orders: int = 1, prior_over: Sequence[int] | None = None) -> dict:
    """Both stages over one round's subsets; returns the counts of outcomes of the second.

    The prior is taken over every scored pass of `prior_over` (None: these subsets), so it is the round's,
    whichever subsets a resumed run or a retry still had to score.
    """
    def scored(r: Mapping) -> bool:  # every pass stored (a reasoned call that could not be sent leaves them)
        return r["status"] == SCORED or (r["status"] == "error" and sum(
            o.get("role") == SCORE for o in r.get("orders") or []) == orders)

    ready = {r["subset"] for r in store.subset_results(run_id, list(subsets)) if scored(r)}
    run_units(store, run_id, subsets, functools.partial(score_work, k=k, prompt=prompt, seed=seed, shuffle=shuffle,
                                                          orders=orders),
              executor=executor, progress=progress, stage="score", what="subsets", meter=meter,
              done=store.done_subsets(run_id) | ready)
    results = store.subset_results(run_id, list(subsets))
    waiting = {r["subset"]: (r, subsets[r["subset"]]) for r in results if scored(r)}
    over = results if prior_over is None else store.subset_results(run_id, list(prior_over))
    prior = position_prior([r for r in over if r["status"] in (SCORED, "ok")])
    return run_units(store, run_id, waiting, functools.partial(reason_work, k=k, prompt=prompt, prior=prior),
                     executor=executor, progress=progress, stage="select", what="subsets", meter=meter,
                     done=set())


__all__ = ["AGGREGATIONS", "SCORE", "SCORED", "calibrated", "execute_scores", "position_prior", "reason_request", "reason_subset", "score_subset", "top_k"]
