"""A chat backend for any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp servers).

Retries on 408/409/429/5xx, timeouts and connection errors come from the ``openai`` client itself
(exponential backoff, honouring Retry-After), capped by ``max_retries``. After the cap, every
failure becomes a BackendError whose message names what to check and never holds the API key.

JSON output (``json_mode``):
- "schema": always send ``{"type": "json_schema", ...}`` (OpenAI, vLLM, llama.cpp's llama-server).
- "auto": start with that; when the server rejects it (400/422 naming response_format), step down
  once to llama-cpp-python's dialect ``{"type": "json_object", "schema": ...}`` and then to no
  response_format at all, and remember the step for later calls.
- "off": never send response_format; the prompt alone asks for the format.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from selectllm_core.errors import AnswerError, BackendError, BackendUnavailable, CapabilityError, ConfigError
from selectllm_core.llm.base import ChatResult, ScoreResult

OPENAI_URL = "https://api.openai.com/v1"
DUMMY_KEY = "not-needed"
JSON_MODES = ("auto", "schema", "off")
# The response_format dialects "auto" tries, most standard first.
_FORMATS = ("json_schema", "json_object", "none")
SCORE_TOP = 20  # alternatives asked per answer token in a score pass: the most OpenAI's API gives
SCORE_LEAD_TOKENS = 16  # answer tokens a score pass allows before the begun answer (a code fence, a word or two)


def safe_url(url: str) -> str:
    """The URL without user:password, query or fragment, safe to log and store."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OpenAICompatibleBackend:
    """Chat through the official ``openai`` client with a configurable ``base_url``.

    Args:
        base_url: Server URL ending in /v1 (None: OpenAI's own API).
        model: Model name the server knows.
        api_key: The key itself (None: read ``api_key_env``; servers that need no key get a dummy).
        api_key_env: Name of the environment variable with the key.
        timeout: Seconds to wait for one answer before retrying.
        max_retries: Retries after the first attempt, for rate limits, 5xx, timeouts, lost connections.
        concurrency: Calls the runner may keep in flight.
        json_mode: "auto", "schema" or "off" (see the module docstring).
        client: A ready ``openai.OpenAI`` client (tests, proxies); built lazily otherwise.
    """

    name = "openai"
    context_window: int | None = None  # tokens; None: the published window of the model, see context.py

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 8,
        json_mode: str = "auto",
        client: Any = None,
    ) -> None:
        if json_mode not in JSON_MODES:
            raise ConfigError(f"unknown json_mode {json_mode!r}; choose one of: {', '.join(JSON_MODES)}")
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        self.model = model
        self.base_url = (base_url or OPENAI_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.json_mode = json_mode
        self._api_key = api_key
        self._client = client
        self._format_step = 0 if json_mode != "off" else len(_FORMATS) - 1
        self._format_confirmed = False
        # None until a top_logprobs call has shown whether the server returns token probabilities.
        self.supports_logprobs: bool | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleBackend(base_url={safe_url(self.base_url)!r}, model={self.model!r})"

    def describe(self) -> dict:
        """Backend settings for run manifests: never the key, never URL credentials."""
        return {
            "kind": "openai",
            "base_url": safe_url(self.base_url),
            "model": self.model,
            "auth_env_var": self.api_key_env,  # the variable's name only; "key" would be redacted from manifests
            "json_mode": self.json_mode,  # what was asked; each call records the format it actually used
            "concurrency": self.concurrency,
        }

    def count_tokens(self, text: str) -> int | None:
        """Unknown: the server's tokenizer is not at hand."""
        return None

    def chat(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        """Answer one conversation.

        Args:
            messages: OpenAI-style chat messages.
            json_schema: Schema the answer should match (sent as response_format per ``json_mode``).
            max_tokens: Most tokens to generate.
            temperature: 0 for the most repeatable answers.

        Returns:
            The answer text ("" when the server sent none) and the usage the server reported.
        """
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        start = time.perf_counter()
        response, used = self._create_with_format(messages, kwargs, json_schema)
        if not response.choices:
            raise BackendError(f"the server at {safe_url(self.base_url)} returned no answer choices")
        usage = response.usage
        return ChatResult(
            text=self._redact(response.choices[0].message.content or ""),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            model=response.model or self.model,
            elapsed=time.perf_counter() - start,
            answer_format=used,
        )

    def top_logprobs(self, messages: list[dict], *, n: int = 20) -> dict[str, float]:
        """Log probabilities of the most likely first answer tokens.

        Args:
            messages: The conversation to score.
            n: How many tokens to return (OpenAI allows at most 20).

        Returns:
            Token text -> natural-log probability.

        Raises:
            CapabilityError: The server returns no token probabilities.
        """
        kwargs = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": n}
        try:
            send = self._create if self.supports_logprobs else self._probe
            response = send(messages, kwargs)
        except _Refused as exc:
            self.supports_logprobs = False
            raise CapabilityError(f"this backend does not expose token probabilities ({exc})") from None
        content = getattr(response.choices[0].logprobs, "content", None) if response.choices else None
        if not content or not content[0].top_logprobs:
            self.supports_logprobs = False
            raise CapabilityError(
                f"this backend does not expose token probabilities: {safe_url(self.base_url)} "
                "returned none; use a server with logprobs support or the local model"
            )
        self.supports_logprobs = True
        return {entry.token: float(entry.logprob) for entry in content[0].top_logprobs}

    def score_answer_tokens(self, prefill: str) -> int:
        """Most answer tokens one score pass generates (a token is at least one character; the meter reserves this)."""
        return len(prefill) + SCORE_LEAD_TOKENS + 2

    def score_ids(self, messages: list[dict], *, prefill: str, ids: list[str]) -> ScoreResult:
        """Log probabilities of each id at the first answer slot, read from a short greedy answer's token probabilities.

        A chat server cannot be handed a begun answer, so the model writes the opening itself: a short greedy
        answer with no response_format (no grammar), and the slot is the first token that writes a digit after an
        opening that reads `prefill` (whitespace aside). The slot's top 20 alternatives give each id's
        probability. An id that is not among them gets an upper bound and is named in `bounded`. Ids written digit
        by digit ("1", then "0" for 10) are told apart by the token after a "1" the model wrote; otherwise "1" and
        the ids it begins each get the probability of that first digit, an upper bound.

        An answer the server gave but that cannot be read is returned with `unusable` saying why (and `halts` when
        no other pass can do better: no logprobs at all, too few alternatives), so its tokens are still counted.

        Args:
            messages: The conversation.
            prefill: How the answer begins before its first id, e.g. "[" for an ids-only answer.
            ids: The answer ids to score, e.g. ["1", .., "10"].

        Returns:
            A ScoreResult, normalised over the ids; completion_tokens counts the short answer.

        Raises:
            CapabilityError: The server refused the logprobs request itself.
            BackendError: The server could not be reached or sent no answer.
        """
        kwargs = {"max_tokens": self.score_answer_tokens(prefill), "temperature": 0.0, "logprobs": True,
                  "top_logprobs": SCORE_TOP}
        start = time.perf_counter()
        try:
            send = self._create if self.supports_logprobs else self._probe
            response = send(messages, kwargs)
        except _Refused as exc:
            self.supports_logprobs = False
            raise CapabilityError(f"this backend does not expose token probabilities ({exc}); use --aggregation "
                                  "borda with it.") from None
        if not response.choices:
            raise BackendError(f"the server at {safe_url(self.base_url)} returned no answer choices")
        usage, choice = response.usage, response.choices[0]
        result = ScoreResult(logprobs={}, prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                             model=response.model or self.model, elapsed=0.0,
                             completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
        content = getattr(choice.logprobs, "content", None)
        answer = self._redact(choice.message.content or "")
        if content is None or (content and not content[0].top_logprobs):
            self.supports_logprobs = False
            result.unusable, result.raw, result.halts = (
                f"{safe_url(self.base_url)} answered without token probabilities, so answer ids cannot be scored; "
                "use --aggregation borda with it, or the local model.", answer, True)
        else:
            self.supports_logprobs = True
            tokens = [(e.token, {alt.token: float(alt.logprob) for alt in e.top_logprobs}) for e in content]
            result.completion_tokens = result.completion_tokens or len(tokens)
            result.raw = self._redact("".join(text for text, _alts in tokens)) or answer
            try:
                result.logprobs, result.mass, result.bounded = slot_logprobs(tokens, prefill=prefill,
                                                                             ids=[str(i) for i in ids])
                result.raw = None
            except AnswerError as exc:  # kept for the curator, never with the key in it
                result.unusable = self._redact(f"{exc} (its answer began {result.raw[:120]!r})")
                result.halts = exc.halts
        result.elapsed = time.perf_counter() - start
        return result

    # --- requests ------------------------------------------------------------------------

    def _create_with_format(self, messages: list[dict], kwargs: dict[str, Any],
                            schema: dict | None) -> tuple[Any, str]:
        """Send with the current response_format; in auto mode step down when the server refuses it.

        Returns:
            The response and the response_format dialect this call actually used ("none" without one).
        """
        while True:
            step = self._format_step
            fmt = _response_format(_FORMATS[step], schema)
            payload = {**kwargs, **({"response_format": fmt} if fmt else {})}
            used = _FORMATS[step] if fmt else "none"
            try:
                if fmt is None or self.json_mode != "auto" or self._format_confirmed:
                    return self._create(messages, payload), used
                response = self._probe(messages, payload)
                self._format_confirmed = True
                return response, used
            except _Refused as exc:
                if self.json_mode != "auto" or step >= len(_FORMATS) - 1:
                    raise BackendError(str(exc)) from None
                with self._lock:
                    self._format_step = max(self._format_step, step + 1)

    def _probe(self, messages: list[dict], payload: dict[str, Any]) -> Any:
        """Try a feature once without retries (llama-cpp-python refuses unknown ones with HTTP 500,
        which the client would otherwise retry); on any other failure, send again with retries."""
        try:
            return self._create(messages, payload, retries=0)
        except _Refused:
            raise
        except BackendError:
            return self._create(messages, payload)

    def _create(self, messages: list[dict], kwargs: dict[str, Any], *, retries: int | None = None) -> Any:
        """One chat.completions.create call (the client retries), failures made actionable."""
        import openai

        client = self._get_client()
        if retries is not None:
            client = client.with_options(max_retries=retries)
        try:
            return client.chat.completions.create(model=self.model, messages=messages, **kwargs)
        except openai.APIStatusError as exc:
            message = self._status_message(exc, retried=retries != 0)
            if exc.status_code in (400, 422, 500) and _names_sent_feature(message, kwargs):
                raise _Refused(message) from None
            raise BackendError(message) from None
        except openai.APITimeoutError:
            raise BackendError(
                f"no answer from {safe_url(self.base_url)} within {self.timeout:g} s after "
                f"{self.max_retries} retries; check that the server is up and not overloaded, "
                "or raise the timeout"
            ) from None
        except openai.APIConnectionError:
            raise BackendError(
                f"cannot reach {safe_url(self.base_url)} after {self.max_retries} retries; check the "
                "URL (it usually ends in /v1) and that the server is running"
            ) from None

    def _status_message(self, exc: Any, *, retried: bool = True) -> str:
        """A curator-facing message for an HTTP error status, scrubbed of the key."""
        url, status = safe_url(self.base_url), exc.status_code
        after = f" after {self.max_retries} retries" if retried else ""
        detail = self._scrub(_server_detail(exc))
        hints = {
            401: f"the server at {url} rejected the API key; check the {self.api_key_env} environment variable",
            403: f"the server at {url} refused access with this key; check the {self.api_key_env} key's permissions",
            404: f"model {self.model!r} or the API path was not found at {url}; check the model name "
            "and that the URL ends in /v1",
            429: f"{url} kept rate-limiting{after}; lower the concurrency or wait, then resume the run",
        }
        hint = hints.get(status) or (
            f"the server at {url} failed (HTTP {status}){after}; check its logs"
            if status >= 500
            else f"the server at {url} refused the request (HTTP {status})"
        )
        return f"{hint}: {detail}" if detail else hint

    def _redact(self, text: str) -> str:
        """The API key replaced by *** in an answer (a broken server or proxy may echo it; answers are stored)."""
        key = self._resolve_key(required=False)
        return text.replace(key, "***") if key and key != DUMMY_KEY and key in text else text

    def _scrub(self, text: str) -> str:
        """Remove the API key (and anything that looks like a bearer token) from text."""
        key = self._resolve_key(required=False)
        if key and key != DUMMY_KEY:
            text = text.replace(key, "***")
        return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)

    def _resolve_key(self, *, required: bool) -> str | None:
        """The key from the argument or the environment; a dummy for servers other than OpenAI."""
        key = self._api_key or os.environ.get(self.api_key_env)
        if key:
            return key
        if urlsplit(self.base_url).hostname == urlsplit(OPENAI_URL).hostname:
            if required:
                raise BackendUnavailable(
                    f"no API key for {safe_url(self.base_url)}: set the {self.api_key_env} "
                    "environment variable, or choose a server that needs none"
                )
            return None
        return DUMMY_KEY

    def _get_client(self) -> Any:
        """The openai client, built on first use."""
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._resolve_key(required=True),
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
            return self._client


class _Refused(BackendError):
    """The server refused a feature we sent (response_format, logprobs) rather than failing."""


def _response_format(kind: str, schema: dict | None) -> dict | None:
    """The response_format payload for one dialect, or None to send none."""
    if schema is None or kind == "none":
        return None
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "selection", "schema": schema, "strict": False}}
    return {"type": "json_object", "schema": schema}


def _names_sent_feature(message: str, kwargs: dict[str, Any]) -> bool:
    """True when an error message names an optional feature this request sent."""
    sent = [name for name in ("response_format", "logprobs") if kwargs.get(name)]
    return any(name in message.lower() for name in sent)


def _server_detail(exc: Any) -> str:
    """The server's own error text from an APIStatusError, shortened."""
    body = getattr(exc, "body", None)
    detail: Any = body
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
    text = str(detail if detail is not None else getattr(exc, "message", "")).strip()
    return text[:300] + ("..." if len(text) > 300 else "")


def slot_logprobs(tokens: list[tuple[str, dict[str, float]]], *, prefill: str,
                  ids: list[str]) -> tuple[dict[str, float], float, list[str]]:
    """Each id's log probability at the first answer slot of a generated answer, from its tokens' alternatives.

    Args:
        tokens: The answer as (token text, {alternative text: log probability}) per generated token.
        prefill: The opening before the first id (matched with whitespace removed).
        ids: The ids to score.

    Returns:
        (id -> log probability normalised over the ids, the probability of the ids measured exactly, the ids
        given an upper bound instead: not listed, or not told apart from the longer ids they begin).

    Raises:
        AnswerError: The answer never wrote a first id, or the server listed too few alternatives to score the
            ids (`halts` set: no other pass would do better).
    """
    slot = _first_slot([text for text, _alts in tokens], prefill)
    if slot is None:
        raise AnswerError(f"the model's answer wrote no id after {prefill!r}, so no id could be scored; use "
                          "--aggregation borda with this model")
    written, alts = tokens[slot][0].strip(), tokens[slot][1]
    if len(alts) < min(SCORE_TOP, len(ids)):
        raise AnswerError(f"the server listed {len(alts)} alternatives for the answer's first id where "
                          f"{SCORE_TOP} were asked, too few for {len(ids)} ids; use --aggregation borda with it",
                          halts=True)
    found = _merged(alts)
    every = [t.strip() for text, a in tokens for t in (text, *a)]
    multi_digit = any(len(t) > 1 and t.isdigit() for t in every)  # "10" is one token here: no id begins another
    out: dict[str, float] = {}
    bounded: set[str] = set()
    for i in ids:
        longer = [j for j in ids if j != i and j.startswith(i)]
        if i not in found or i in out:
            continue
        if not longer or multi_digit:
            out[i] = found[i]
        elif written == i and slot + 1 < len(tokens):  # the token after the written "1" says whether it goes on
            after = tokens[slot + 1][1]
            following = _merged({t: lp for t, lp in after.items() if t == t.lstrip()})  # " 0" writes "1 0"
            go_on = []
            for j in longer:
                rest = following.get(j[len(i):])
                if rest is None:  # not listed: at most the least listed continuation; i's share is then a bound too
                    out[j] = found[i] + min(after.values())
                    bounded |= {j, i}
                else:
                    out[j] = found[i] + rest
                    go_on.append(rest)
            stop = 1.0 - float(np.exp(np.logaddexp.reduce(go_on))) if go_on else 1.0
            out[i] = found[i] + math.log(max(stop, 1e-12))
        else:  # digit by digit and not written: the first digit's probability bounds each id it begins
            for j in (i, *longer):
                out[j] = found[i]
                bounded.add(j)
    if not out:
        raise AnswerError(f"the model's answer listed none of the ids {ids[0]}..{ids[-1]} at its first id, so no id "
                          "could be scored; use --aggregation borda with it")
    measured = [v for i, v in out.items() if i not in bounded]
    floor = min(alts.values())
    for i in ids:
        if i not in out:
            out[i] = floor  # at most the least listed alternative
            bounded.add(i)
    mass = float(np.exp(np.logaddexp.reduce(measured))) if measured else 0.0
    norm = float(np.logaddexp.reduce([out[i] for i in ids]))
    return {i: out[i] - norm for i in ids}, mass, [i for i in ids if i in bounded]


def _merged(alts: dict[str, float]) -> dict[str, float]:
    """Alternatives by their text without surrounding whitespace: " 3" and "3" both write 3."""
    found: dict[str, float] = {}
    for text, lp in alts.items():
        key = text.strip()
        found[key] = float(np.logaddexp(found[key], lp)) if key in found else lp
    return found


def _first_slot(texts: list[str], prefill: str) -> int | None:
    """The first token that writes a digit right after an opening that reads `prefill` (whitespace aside), or None."""
    target = "".join(prefill.split())
    written = ""
    for index, text in enumerate(texts):
        if written.endswith(target) and text.strip()[:1].isdigit():
            return index
        written += "".join(text.split())
    return None
