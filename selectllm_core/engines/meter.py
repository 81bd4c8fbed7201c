"""The meter between a run and its model: the response cache, each call's cost, and the spending cap.

`Meter.wrap(backend)` gives a ChatBackend that answers a request already answered from the response cache (no
call, no cost), prices every other call, and refuses the call that could take the run past `max_cost`
(SpendCapReached, before anything is sent). The run driver (`run_units`) stops starting units once the cap
is reached, keeps the calls in flight, records each call's cost in the ledger and marks the run interrupted,
so the same command with a higher cap resumes it.

The check is conservative: a call is reserved at its prompt (counted by the tokenizer when the backend has one,
else 3 characters a token, more than English text needs) plus the full answer length it may use.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from selectllm_core.embed.cache import default_cache_dir
from selectllm_core.errors import ConfigError, RunStopped, SpendCapReached
from selectllm_core.llm import ChatBackend, ChatResult, ScoreResult, backend_identity, score_answer_tokens
from selectllm_core.llm.cache import CachedAnswer, ResponseCache, request_key, score_key
from selectllm_core.llm.prices import Price, money, price_for
from selectllm_core.store import Store

CHARS_PER_TOKEN_BOUND = 3  # fewer characters a token than real text has, so the reserve errs high
CacheChoice = ResponseCache | bool | None  # a cache; True: the cache folder's; False or None: off


def response_cache(choice: CacheChoice = True) -> ResponseCache | None:
    """The response cache a run uses: the one given, the cache folder's (True), or none (False, None).

    $SELECTLLM_RESPONSE_CACHE=off turns the default off for every run of a process (the app, the CLI).
    """
    if isinstance(choice, ResponseCache):
        return choice
    if not choice or os.environ.get("SELECTLLM_RESPONSE_CACHE", "on").lower() in ("off", "0", "false", "no"):
        return None
    return ResponseCache(default_cache_dir())


@dataclass
class Meter:
    """Cache, prices and cap of one run (or of the Select page's preview).

    Args:
        price: the model's price (None: unknown; then no cap can be kept).
        cache: the response cache (None: off).
        max_cost: the most this run may spend, in the price's money, counting earlier sessions of the run.
        read_cache: False asks the model again and stores the new answer (retrying failed subsets).
        cancel: set by the curator's Stop: no call starts after it (RunStopped), calls in flight finish.
    """

    price: Price | None
    cache: ResponseCache | None = None
    max_cost: float | None = None
    read_cache: bool = True
    cancel: threading.Event | None = None
    spent_before: float = 0.0
    sent: int = 0
    cached: int = 0
    spent: float = 0.0
    remote: bool = False  # the calls are made by Ray workers: the run driver counts them as they are recorded
    tripped: str | None = None
    _reserved: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_backend(cls, store: Store, backend: ChatBackend, *, cache: ResponseCache | None = None,
                    max_cost: float | None = None, read_cache: bool = True,
                    cancel: threading.Event | None = None) -> Meter:
        """The meter of a backend's calls, priced by the workspace's table (else list prices, else unknown).

        Raises:
            ConfigError: a cap was asked for a model with no known price (nothing could keep it).
        """
        desc = backend.describe()
        price = price_for(desc, store.prices())
        if max_cost is not None and price is None:
            raise ConfigError(
                f"No price is known for the model {desc.get('model')!r}, so --max-cost cannot be kept. Set its "
                f"price first: `selectllm prices set {desc.get('model')} INPUT OUTPUT` (money per million prompt "
                "and answer tokens), or on the Prompt page.")
        if max_cost is not None and max_cost < 0:
            raise ConfigError(f"--max-cost must be 0 or more (got {max_cost}).")
        return cls(price=price, cache=cache, max_cost=max_cost, read_cache=read_cache, cancel=cancel)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def check_cancel(self) -> None:
        if self.cancelled:
            raise RunStopped("Stopped on request before this call; resuming the run sends it.")

    def wrap(self, backend: ChatBackend) -> ChatBackend:
        """The backend behind this meter (an already metered backend is re-pointed, not wrapped twice)."""
        inner = backend.inner if isinstance(backend, MeteredBackend) else backend
        return MeteredBackend(inner, self)

    def cost_of(self, call: dict) -> float | None:
        """A call's cost: 0 when its answer came from the cache, None when the model has no price."""
        if call.get("cached"):
            return 0.0
        if self.price is None:
            return None
        return self.price.cost(int(call.get("prompt_tokens") or 0), int(call.get("completion_tokens") or 0))

    def reserve(self, prompt_tokens: int, max_tokens: int) -> float:
        """Hold the most a call may cost, or refuse it (SpendCapReached) when it could pass the cap."""
        self.check_cancel()
        if self.price is None:
            return 0.0
        bound = self.price.cost(prompt_tokens, max_tokens)
        with self._lock:
            total = self.spent_before + self.spent + self._reserved
            if self.max_cost is not None and (self.tripped or total + bound > self.max_cost):
                if not self.tripped:
                    self.tripped = (
                        f"Stopped before a call that could pass the cost cap of {money(self.max_cost)}: this run "
                        f"has spent {money(self.spent_before + self.spent)}, and the next call could cost up to "
                        f"{money(bound)} ({prompt_tokens:,} prompt tokens, up to {max_tokens:,} answer tokens).")
                raise SpendCapReached(self.tripped)
            self._reserved += bound
        return bound

    def settle(self, reserved: float, result: ChatResult | None) -> None:
        """Replace a call's reserve by what it cost (nothing when it failed before an answer)."""
        with self._lock:
            self._reserved -= reserved
            if result is not None:
                self.sent += 1
                cost = self.cost_of({"prompt_tokens": result.prompt_tokens,
                                     "completion_tokens": result.completion_tokens})
                result.cost = cost
                self.spent += cost or 0.0

    def hit(self) -> None:
        with self._lock:
            self.cached += 1

    def count_remote(self, call: dict) -> None:
        """Count a call made where this meter could not see it (a Ray worker), from its recorded tokens."""
        if call.get("cached") or not call.get("ok", True):
            return
        with self._lock:
            self.sent += 1
            self.spent += call.get("cost") or 0.0

    def summary(self) -> dict:
        """What this meter saw in this call: calls sent, answers from the cache, money spent."""
        return {"llm_calls_sent": self.sent, "llm_answers_cached": self.cached,
                "cost": None if self.price is None else round(self.spent, 6),
                "price_source": self.price.source if self.price else "no price known",
                "response_cache": "on" if self.cache and self.read_cache else
                ("refresh" if self.cache else "off")}


class MeteredBackend:
    """A ChatBackend that goes through a Meter; it describes itself as its inner backend does (same run ids)."""

    def __init__(self, inner: ChatBackend, meter: Meter) -> None:
        self.inner, self.meter = inner, meter
        self.name, self.concurrency = inner.name, inner.concurrency
        self._identity = backend_identity(inner.describe())

    def __getattr__(self, name: str) -> Any:
        if name == "top_logprobs" and hasattr(self.inner, "top_logprobs"):
            return self._top_logprobs
        if name == "score_ids" and hasattr(self.inner, "score_ids"):
            return self._score_ids
        return getattr(self.inner, name)  # context_window, n_ctx, supports_logprobs, count_tokens_many, ...

    def describe(self) -> dict:
        return self.inner.describe()

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def _prompt_bound(self, messages: list[dict]) -> int:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        counted = self.inner.count_tokens(text)
        return counted + 8 * len(messages) if counted is not None else math.ceil(len(text) / CHARS_PER_TOKEN_BOUND)

    def chat(self, messages: list[dict], *, json_schema: dict | None = None, max_tokens: int = 512,
             temperature: float = 0.0) -> ChatResult:
        """Answer from the cache when this exact request was answered before, else call (within the cap)."""
        self.meter.check_cancel()
        cache, key = self.meter.cache, None
        if cache is not None and temperature == 0:
            key = request_key(self._identity, messages, json_schema=json_schema, temperature=temperature,
                              max_tokens=max_tokens)
            hit = cache.get(key) if self.meter.read_cache else None
            if hit is not None:
                self.meter.hit()
                return ChatResult(hit.text, hit.prompt_tokens, hit.completion_tokens, hit.model, 0.0,
                                  hit.answer_format, cost=0.0, cached=True)
        reserved = self.meter.reserve(self._prompt_bound(messages), max_tokens)
        result = None
        try:
            result = self.inner.chat(messages, json_schema=json_schema, max_tokens=max_tokens,
                                     temperature=temperature)
        finally:
            self.meter.settle(reserved, result)
        if key is not None:
            cache.put(key, CachedAnswer(result.text, result.prompt_tokens, result.completion_tokens, result.model,
                                        result.answer_format))
        return result

    def _top_logprobs(self, messages: list[dict], *, n: int = 20) -> dict[str, float]:
        """Token probabilities of the first answer token (one answer token), within the cap."""
        reserved = self.meter.reserve(self._prompt_bound(messages), 1)
        try:
            out = self.inner.top_logprobs(messages, n=n)
        except BaseException:
            self.meter.settle(reserved, None)
            raise
        with self.meter._lock:  # the method records its own tokens; the cap counts the reserve, an upper bound
            self.meter._reserved -= reserved
            self.meter.sent += 1
            self.meter.spent += reserved
        return out

    def _score_ids(self, messages: list[dict], *, prefill: str, ids: list[str]) -> ScoreResult:
        """One score pass (`score_ids`), from the cache when asked before, else within the cap."""
        self.meter.check_cancel()
        cache, key = self.meter.cache, None
        if cache is not None:
            key = score_key(self._identity, messages, prefill=prefill, ids=ids)
            hit = cache.get(key) if self.meter.read_cache else None
            if hit is not None:
                self.meter.hit()
                got = json.loads(hit.text)
                return ScoreResult(got["logprobs"], hit.prompt_tokens, hit.model, 0.0, mass=got.get("mass"),
                                   cost=0.0, cached=True, completion_tokens=hit.completion_tokens,
                                   bounded=list(got.get("bounded") or []))
        reserved = self.meter.reserve(self._prompt_bound(messages), max(1, score_answer_tokens(self.inner, prefill)))
        result = None
        try:
            result = self.inner.score_ids(messages, prefill=prefill, ids=ids)
        finally:
            self.meter.settle(reserved, result)
        if key is not None and result.unusable is None:  # an unreadable answer is asked again on a retry
            cache.put(key, CachedAnswer(json.dumps({"logprobs": result.logprobs, "mass": result.mass,
                                                    "bounded": result.bounded}),
                                        result.prompt_tokens, result.completion_tokens, result.model, "scores"))
        return result
