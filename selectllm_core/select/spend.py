"""What a run will send before it sends anything: every subset's request, its tokens, and what it will cost.

`selectllm plan` and the app's Prompt page both estimate through `estimate_spend`, so they show the same
numbers. A subset whose exact request is in the response cache is counted as cached: it will cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from selectllm_core.llm import ChatBackend, backend_identity, score_answer_tokens
from selectllm_core.llm.cache import ResponseCache, request_key, score_key
from selectllm_core.llm.prices import Price
from selectllm_core.select.listwise import Candidate, PromptSpec, first_request, presentation_order
from selectllm_core.select.orders import orders_of
from selectllm_core.select.prompts import estimate_tokens, score_prefill
from selectllm_core.split.budget import BudgetPlan

# Answer length per pick, for the estimate: an id, or an id with a one-sentence reason.
ANSWER_TOKENS_PER_PICK = {"ids": 3, "json": 40}
ANSWER_TOKENS_OVERHEAD = {"ids": 2, "json": 8}
REASON_REQUEST_TOKENS = 30  # what the reasoned call of the score aggregation adds to the prompt (the ids it explains)


@dataclass(frozen=True)
class SubsetRequest:
    """The first request the run sends for one subset (a repair retry, when needed, comes on top)."""

    subset: int
    k: int
    messages: list[dict]
    schema: dict
    n: int = 0  # candidates shown

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def subset_candidates(pool: pd.DataFrame, members: Sequence[int], cluster_of: np.ndarray, *, subset: int,
                      seed: int, shuffle: bool) -> list[Candidate]:
    """One subset's rows in the order the run shows them (stored plan order, then the seeded shuffle)."""
    ordered = sorted(members, key=lambda p: (int(cluster_of[p]), int(p)))
    rows = [Candidate(str(pool["id"].iat[p]), str(pool["instruction"].iat[p]), str(pool["input"].iat[p]))
            for p in ordered]
    return presentation_order(rows, subset=subset, seed=seed, shuffle=shuffle)


def subset_requests(pool: pd.DataFrame, subsets: Sequence[Sequence[int]], cluster_of: np.ndarray, *,
                    prompt: PromptSpec, k: int, seed: int = 0, shuffle: bool = True, orders: int = 1,
                    checks: frozenset[int] = frozenset()) -> list[SubsetRequest]:
    """Every subset's first request in each of its orders, exactly as the run will send them.

    Subsets too small to choose from are left out; a subset in `checks` (P = 1) has a second, reversed request.
    """
    out = []
    for index, members in enumerate(subsets):
        shown = subset_candidates(pool, members, cluster_of, subset=index, seed=seed, shuffle=shuffle)
        k_here = min(k, len(shown) - 1)
        if k_here < 1:
            continue
        views = orders_of(len(shown), max(orders, 2 if orders == 1 and index in checks else 1), seed=[seed, index])
        for view in views:
            messages, schema = first_request([shown[i] for i in view], k=k_here, prompt=prompt)
            out.append(SubsetRequest(index, k_here, messages, schema, len(shown)))
    return out


@dataclass(frozen=True)
class SpendEstimate:
    """Calls, tokens and money of a run's first requests (repair retries of unusable answers come on top)."""

    calls: int  # requests the run makes
    cached: int  # of those, answered by the response cache: no call, no cost
    prompt_tokens: int  # of the calls to send
    completion_tokens: int  # estimated answers of the calls to send
    prompt_exact: bool  # counted by the model's tokenizer (else about 4 characters a token)
    price: Price | None  # None: no price is known for the model
    max_answer_tokens: int = 0  # the answer length each call may use at most
    by_round: tuple[tuple[int, int, int], ...] = ()  # a tournament's (calls, prompt, answer tokens) per round

    @property
    def to_send(self) -> int:
        return self.calls - self.cached

    @property
    def cost(self) -> float | None:
        """Estimated money of the calls to send (None when the model has no price)."""
        return None if self.price is None else self.price.cost(self.prompt_tokens, self.completion_tokens)

    @property
    def cost_bound(self) -> float | None:
        """The most the calls to send could cost, every answer at its longest (what a cap must allow)."""
        if self.price is None:
            return None
        return self.price.cost(self.prompt_tokens, self.to_send * self.max_answer_tokens)

    def lines(self) -> list[str]:
        """The estimate in words, as `selectllm plan` prints it."""
        cost = "unknown: no price for this model (set one with `selectllm prices set`)" if self.price is None \
            else f"${self.cost:,.4f} estimated, at most ${self.cost_bound:,.4f} ({self.price.source})"
        tokens = "counted" if self.prompt_exact else "estimated at 4 characters a token"
        return [f"LLM calls: {self.calls:,} ({self.cached:,} answered by the response cache, {self.to_send:,} to "
                "send; a repair retry per unusable answer comes on top)",
                f"tokens to send: {self.prompt_tokens:,} prompt ({tokens}) + about {self.completion_tokens:,} answer",
                f"cost: {cost}",
                *(f"  round {i}: {calls:,} calls, about {pt:,} prompt + {ct:,} answer tokens"
                  + (" (its candidates are the winners of the round before: estimated from round 1)" if i > 1
                     else "") for i, (calls, pt, ct) in enumerate(self.by_round, 1))]


def estimate_spend(requests: Sequence[SubsetRequest], *, backend: ChatBackend, price: Price | None,
                   answer_format: str, max_tokens: int, cache: ResponseCache | None = None,
                   exact: bool = True, rounds: Sequence[BudgetPlan] = (), orders: int = 1,
                   aggregation: str = "borda") -> SpendEstimate:
    """Tokens and money of sending these requests once each, less those the response cache answers.

    Args:
        requests: every subset's first request (`subset_requests`).
        backend: the backend the run will use (its identity keys the cache; its tokenizer counts tokens).
        price: the model's price (`llm.prices.price_for`), None when unknown.
        answer_format: "json" (picks with reasons) or "ids" (sizes the estimated answers).
        max_tokens: the answer length each call may use.
        cache: the response cache the run will read (None: off).
        exact: count prompt tokens with the backend's tokenizer when it has one (slower on large pools).
        rounds: every round of a tournament (`BudgetPlan.rounds`; the requests are round 1's). Later rounds'
            requests exist only once the round before has answered: each is estimated as round 1's mean
            request scaled by its subset size, and counted as to send.
        orders: P, the orders each subset is shown in (the requests hold round 1's; later rounds' count P each).
        aggregation: "borda" (each request is a generated answer) or "scores" (each is a score pass: no answer
            tokens locally, a server's few up to the first id; and a subset has one reasoned call on top when the
            answers carry reasons).
    """
    identity = backend_identity(backend.describe())
    scores = aggregation == "scores"

    def key(r: SubsetRequest) -> str:
        if scores:  # a score pass: the begun answer and the ids, no schema
            return score_key(identity, r.messages, prefill=score_prefill(answer_format),
                             ids=[str(i) for i in range(1, r.n + 1)])
        return request_key(identity, r.messages, json_schema=r.schema, temperature=0.0, max_tokens=max_tokens)

    to_send = [r for r in requests if cache is None or cache.peek(key(r)) is None]
    counts = [backend.count_tokens(r.text) if exact else None for r in to_send]
    counted = bool(to_send) and all(c is not None for c in counts)
    sizes = [c if c is not None else estimate_tokens(r.text) for c, r in zip(counts, to_send)]
    prompt_tokens = sum(sizes)
    pass_tokens = score_answer_tokens(backend, score_prefill(answer_format))  # a server's pass writes a few
    completion = pass_tokens * len(to_send) if scores else sum(_answer_tokens(answer_format, r.k, max_tokens)
                                                               for r in to_send)
    calls, cached = len(requests), len(requests) - len(to_send)
    if scores and answer_format == "json":  # one reasoned call per subset, for picks known only once scored
        firsts = {r.subset: r for r in reversed(requests)}
        reasoned = [backend.count_tokens(r.text) if exact else None for r in firsts.values()]
        prompt_tokens += sum((c if c is not None else estimate_tokens(r.text)) + REASON_REQUEST_TOKENS
                             for c, r in zip(reasoned, firsts.values()))
        completion += sum(_answer_tokens(answer_format, r.k, max_tokens) for r in firsts.values())
        calls += len(firsts)
    by_round: list[tuple[int, int, int]] = []
    if len(rounds) > 1 and requests:
        by_round.append((len(requests), prompt_tokens, completion))
        mean_request = prompt_tokens / len(to_send) if to_send else \
            sum(estimate_tokens(r.text) for r in requests) / len(requests)
        per_row = mean_request / rounds[0].subset_size
        for later in rounds[1:]:
            asks = later.n_subsets * orders
            p_tok = round(asks * per_row * later.subset_size)
            c_tok = asks * (pass_tokens if scores else _answer_tokens(answer_format, later.picks_per_subset,
                                                                      max_tokens))
            if scores and answer_format == "json":
                p_tok += round(later.n_subsets * per_row * later.subset_size)
                c_tok += later.n_subsets * _answer_tokens(answer_format, later.picks_per_subset, max_tokens)
                asks += later.n_subsets
            by_round.append((asks, p_tok, c_tok))
            calls, prompt_tokens, completion = calls + asks, prompt_tokens + p_tok, completion + c_tok
    return SpendEstimate(calls, cached, prompt_tokens, completion, counted, price, max_tokens, tuple(by_round))


def _answer_tokens(answer_format: str, k: int, max_tokens: int) -> int:
    """The estimated length of an answer with k picks."""
    return min(max_tokens, ANSWER_TOKENS_PER_PICK.get(answer_format, 40) * k + ANSWER_TOKENS_OVERHEAD.get(answer_format, 8))
