"""What every selection method shares: the context it works in, its answer, and the stored run.

A method is a function `select(ctx, **params) -> Selection`. `execute_method` wraps it the same way for every
method: load the pool, check the budget, give the run a content id (pool, method, parameters, prompt, models),
record it in the workspace, run the method, and store its plan and its ranked selection. Running the same thing
again finds the stored run; methods that call a model resume from the batches already stored.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.embed import Embedder, EmbeddingCache, SentenceTransformerEmbedder, embed_texts
from selectllm_core.engines import StageProgress
from selectllm_core.engines.meter import CacheChoice, Meter, response_cache
from selectllm_core.errors import ConfigError
from selectllm_core.llm import BUNDLED_MODEL_FILE, LOCAL_N_CTX, ChatBackend, make_backend
from selectllm_core.pool.load import Pool, load_pool
from selectllm_core.split import check_budget
from selectllm_core.store import Store

NEEDS = ("embeddings", "llm", "logprobs")


@dataclass
class Selection:
    """A method's answer: pool positions in rank order, with a score and a reason for each.

    `complete` is False when rows could not be rated (failed or unreachable model calls), so running the
    same command again, or with retry_failed, may change the selection.
    """

    positions: list[int]
    scores: list[float | None]
    reasons: list[str]
    flags: dict[str, Any] = field(default_factory=dict)
    subset_of: np.ndarray | None = None
    complete: bool = True


@dataclass
class MethodResult:
    """What a method run produced; `short_by` > 0 only with a flag saying why (see docs/methods.md)."""

    run_id: str
    pool_id: str
    method: str
    budget: int
    selected: int
    short_by: int
    flags: dict[str, Any]
    stats: dict[str, Any]
    store: Store = field(repr=False)

    def frame(self) -> pd.DataFrame:
        """The stored selection with text, score, reason and decision, by rank."""
        return self.store.selection(self.run_id)


@dataclass
class Context:
    """Everything a method may use: the workspace, the run, the pool, embeddings and chat models."""

    store: Store
    run_id: str
    pool: Pool
    budget: int
    embedder: Embedder | None = None
    cache: EmbeddingCache | None = None
    models: list[tuple[ChatBackend, float]] = field(default_factory=list)
    progress: StageProgress | None = None
    retry_failed: bool = False
    scores_of: Callable[[str], pd.Series] | None = None  # the scores a stored run gave (for DEITA's score_run)
    meter: Meter | None = None  # the run's meter: the driver stops when it is cancelled or capped
    stats: dict[str, Any] = field(default_factory=dict)
    _vectors: np.ndarray | None = field(default=None, repr=False)

    @property
    def frame(self) -> pd.DataFrame:
        return self.pool.frame

    def step(self, stage: str, done: int, total: int) -> None:
        """Report progress of one stage."""
        if self.progress:
            self.progress(stage, done, total)

    def vectors(self) -> np.ndarray:
        """Unit embeddings of the pool's `text` column (through the cache), computed once per run."""
        if self._vectors is None:
            t0 = time.perf_counter()
            res = embed_texts(self.frame["text"].tolist(), embedder=self.embedder, cache=self.cache,
                              progress=lambda d, t: self.step("embed", d, t))
            self.stats.update(embedded_new=res.computed, embedded_cached=res.cached,
                              embed_seconds=round(time.perf_counter() - t0, 3))
            self._vectors = res.vectors
        return self._vectors


@dataclass(frozen=True)
class Param:
    """One parameter of a method, declared once: the CLI options, the Compare page's controls, the repeat
    command and the comparison's settings column are all made from it.

    Args:
        name: the keyword the method takes (and the stored parameter's key).
        type: int, float, str or bool.
        default: its value when not given (None: not set).
        help: one sentence for the CLI's --help and the page's tooltip.
        min, max: bounds a value must keep (checked for every front end).
        choices: the values allowed, when they are few.
        short: a one-letter CLI alias ("-s").
        label: the page's label (default: the name in words).
        widget: a special control on the page: "slider", "run" (a run of this pool), "column" (a numeric
            pool column), "preset" (a prompt preset); None: typed after `type`.
        setting: shown in the comparison's settings column (it tells runs of the method apart).
        ui: offered on the Compare page (False: the CLI only).
        legacy: names earlier versions stored it under (read from stored runs only, never accepted as input).
    """

    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    short: str | None = None
    label: str | None = None
    widget: str | None = None
    setting: bool = False
    ui: bool = True
    legacy: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The CLI option: --name-with-dashes (a bool that is on by default is turned off with --no-name)."""
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default is True else f"--{dashed}"

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def check(self, value: Any) -> Any:
        """The value as given (never converted: it is part of the run's id), or a ConfigError saying what is
        allowed: its type (an int is a fine float), its choices, its bounds."""
        if value is None:
            return None
        name = f"{self.name} ({self.flag})"
        if self.type is bool:
            fits = isinstance(value, (bool, np.bool_))
        elif self.type is int:
            fits = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        elif self.type is float:
            fits = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        else:
            fits = isinstance(value, self.type)
        if not fits:
            kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(self.type, "text")
            raise ConfigError(f"{name} must be {kind}, not {value!r}.")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, self.choices))} (got {value!r}).")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            bounds = f"from {self.min} to {self.max}" if self.min is not None and self.max is not None else (
                f"at least {self.min}" if self.min is not None else f"at most {self.max}")
            raise ConfigError(f"{name} must be {bounds} (got {value}).")
        return value

    def stored(self, params: dict) -> Any:
        """This parameter's value in a stored run's params (under an earlier name for runs made before a rename)."""
        for key in (self.name, *self.legacy):
            if key in params:
                return params[key]
        return None


@dataclass(frozen=True)
class Method:
    """A registered method: its parameters, what it needs, how it runs, and texts for the UI.

    Args:
        name: the registry key (stored as the run's method).
        title: the name a curator reads.
        summary: one line on what it does.
        params: every parameter it takes, each declared once.
        select: `select(ctx, **params) -> Selection` for methods run by `execute_method`.
        run: for a method with its own run (SelectLLM): `run(source, *, budget, store, embedder, cache, backend,
            progress, **params) -> MethodResult`.
        run_id: with `run`: `run_id(pool, *, budget, backend, **params) -> str`, the id that run will have.
        needs: "embeddings", "llm", "logprobs".
        listwise: the model chooses from a list (position bias is measured for such runs).
        command: the CLI command that runs it (the repeat command starts with it).
        prompt: the prompt text its run is keyed by, from its parameters.
        scores: the scores a stored run gave every rated row.
        note: what the UI says next to the method.
        max_models: models it can combine (SelectIT's model level).
    """

    name: str
    title: str
    summary: str
    params: tuple[Param, ...] = ()
    select: Callable[..., Selection] | None = None
    run: Callable[..., MethodResult] | None = None
    run_id: Callable[..., str] | None = None
    needs: tuple[str, ...] = ()
    listwise: bool = False
    command: str = ""
    prompt: Callable[[dict], str] | None = None
    scores: Callable[[Store, str], pd.Series] | None = None
    note: str = ""
    max_models: int = 1

    @property
    def defaults(self) -> dict[str, Any]:
        """Every parameter's default, by name."""
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def cli(self) -> str:
        """The command that runs this method (`selectllm method NAME` unless it has its own)."""
        return self.command or f"selectllm method {self.name}"

    def resolve(self, params: dict) -> dict:
        """The defaults updated with `params`, each checked; unknown names are a ConfigError."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(self.defaults) or "none"
            raise ConfigError(f"Method {self.name!r} has no parameter {', '.join(unknown)}; its parameters: "
                              f"{allowed}.")
        return {p.name: p.check(params.get(p.name, p.default)) for p in self.params}

    def setting(self, params: dict) -> str:
        """The parameters that tell runs of this method apart, for the comparison's settings column."""
        return ", ".join(f"{p.name}={p.stored(params)}" for p in self.params
                         if p.setting and p.stored(params) is not None)

    def repeat_command(self, run: dict) -> str:
        """The CLI command that repeats a stored run of this method (the pool path is the curator's)."""
        params = run["params"]
        flags = [f"--budget {params['budget']}"]
        for p in self.params:
            value = p.stored(params)
            if value is None or value == "" or (p.type is bool and value == p.default):
                continue
            flags.append(p.flag if p.type is bool else f"{p.flag} {shlex.quote(str(value))}")
        flags += backend_flags(run.get("backend") or {})
        if len(params.get("model_parameters") or []) > 1:
            flags.append("(model level: one --extra-model per model of the run's backend record)")
        return f"{self.cli()} POOL " + " ".join(flags)


def backend_flags(backend: dict) -> list[str]:
    """The backend options that repeat a run's model (its description never holds a key or a file's folder)."""
    if backend.get("kind") == "openai":
        flags = [f"--backend openai --base-url {shlex.quote(str(backend.get('base_url')))} "
                 f"--model {shlex.quote(str(backend.get('model')))}"]
        if backend.get("auth_env_var") not in (None, "OPENAI_API_KEY"):
            flags.append(f"--api-key-env {backend['auth_env_var']}")
        return flags
    if backend.get("kind") != "local":
        return []
    flags = []
    if backend.get("model") not in (None, BUNDLED_MODEL_FILE):
        flags.append(f"--model PATH/TO/{shlex.quote(str(backend['model']))}")  # the folder is the curator's
    if backend.get("n_ctx") not in (None, LOCAL_N_CTX):
        flags.append(f"--context-window {backend['n_ctx']}")
    return flags


def row_lengths(frame: pd.DataFrame) -> np.ndarray:
    """Characters an annotator reads per row: instruction plus input."""
    return (frame["instruction"].str.len() + frame["input"].str.len()).to_numpy(dtype=np.int64)


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Positions with a finite score, highest first; ties keep pool order."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.argsort(-scores[finite], kind="stable")]


def method_run_id(pool_id: str, method: str, params: dict, backend: dict, prompt: str) -> str:
    """Content id of a method run: the same inputs give the same id, so a repeat finds (and resumes) it."""
    key = json.dumps({"pool": pool_id, "method": method, "params": params, "backend": backend,
                      "prompt": prompt}, sort_keys=True, default=str)
    return f"{method}-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def resolve_models(method: Method, backend: ChatBackend | None,
                   backends: list[tuple[ChatBackend, float]] | None) -> list[tuple[ChatBackend, float]]:
    """The (chat backend, parameter count) pairs a method uses; the bundled local model by default."""
    if "llm" not in method.needs:
        if backend is not None or backends:
            raise ConfigError(f"Method {method.name!r} uses no language model: leave the backend out.")
        return []
    if backend is not None and backends:
        raise ConfigError("Give either one backend or a list of (backend, parameter count) pairs, not both.")
    if backends:
        models = [(b, float(w)) for b, w in backends]
        if len(models) > method.max_models:
            raise ConfigError(f"Method {method.name!r} uses one model; pass a single backend.")
        if any(not np.isfinite(w) or w <= 0 for _, w in models):
            raise ConfigError("Parameter counts weight the models: give each backend a positive number "
                              "(for example 7e9 for a 7B model).")
        return models
    if backend is None:
        backend = make_backend("local")
    return [(backend, 1.0)]


def backend_record(models: list[tuple[ChatBackend, float]]) -> dict:
    """What a run stores about its models (never a key): one describe(), or every model with its weight."""
    if not models:
        return {}
    if len(models) == 1:
        return models[0][0].describe()
    return {"kind": "ensemble", "models": [{**b.describe(), "parameters": w} for b, w in models]}


def load(source: Any, *, store: Store, columns: Any = None, name: str | None = None) -> Pool:
    """A pool from a Pool, a file path or a DataFrame, saved to the workspace (once per content)."""
    pool = source if isinstance(source, Pool) else load_pool(source, columns=columns, name=name)
    store.save_pool(pool)
    return pool


@dataclass(frozen=True)
class RunPlan:
    """What a method run will be stored as, known before it starts: its id, parameters, prompt and models."""

    run_id: str
    params: dict
    stored: dict
    prompt: str
    record: dict
    models: list
    embedder: Embedder | None


def plan_run(method: Method, pool_id: str, *, budget: int, params: dict | None = None,
             embedder: Embedder | None = None, backend: ChatBackend | None = None,
             backends: list[tuple[ChatBackend, float]] | None = None) -> RunPlan:
    """Resolve a method's parameters and models, and the content id its run will have (nothing is stored)."""
    params = method.resolve(params or {})
    models = resolve_models(method, backend, backends)
    stored = {**params, "budget": budget}
    if models:
        stored["model_parameters"] = [w for _b, w in models]
    if "embeddings" in method.needs:
        embedder = embedder or SentenceTransformerEmbedder()
        stored["embed_model_id"] = embedder.model_id
    prompt = method.prompt(params) if method.prompt else ""
    record = backend_record(models)
    return RunPlan(run_id=method_run_id(pool_id, method.name, stored, record, prompt), params=params, stored=stored,
                   prompt=prompt, record=record, models=models, embedder=embedder)


def execute_method(
    method: Method, source: Any, *, budget: int, params: dict | None = None, store: Store | None = None,
    embedder: Embedder | None = None, cache: EmbeddingCache | None = None, backend: ChatBackend | None = None,
    backends: list[tuple[ChatBackend, float]] | None = None, progress: StageProgress | None = None,
    retry_failed: bool = False, scores_of: Callable[[str], pd.Series] | None = None, responses: CacheChoice = True,
    cancel: threading.Event | None = None,
) -> MethodResult:
    """Run one selection method on a pool and store it as a run.

    Args:
        method: a registered Method.
        source: a Pool, a pool file path or a DataFrame.
        budget: rows to select.
        params: the method's parameters (defaults fill the rest).
        store: the workspace (default: from the environment).
        embedder: an Embedder for methods that need embeddings (default: the bundled all-MiniLM-L6-v2).
        cache: the embedding cache (default: from the environment).
        backend: a ChatBackend for LLM methods (default: the bundled local model).
        backends: (backend, parameter count) pairs instead of `backend` (SelectIT's model level).
        progress: called with (stage, done, total); stages are embed, rate.
        retry_failed: LLM methods call again the batches stored as failed.
        scores_of: the scores a stored run gave (the registry's `run_scores`, for methods that rank by them).
        responses: the response cache for the method's chat calls (True: the cache folder's; False: off); each
            call is recorded with its cost from the workspace's price table.
        cancel: set it to stop the run cleanly (RunStopped; running it again resumes it).

    Returns:
        A MethodResult; its selection is in the store under `run_id`.
    """
    store = store or Store()
    # 1. pool, budget and parameters
    pool = load(source, store=store)
    check_budget(budget, len(pool.frame))
    spec = plan_run(method, pool.pool_id, budget=budget, params=params, embedder=embedder, backend=backend,
                    backends=backends)
    # 2. the run record (found again when everything matches)
    run_id = spec.run_id
    store.create_run(run_id, pool_id=pool.pool_id, method=method.name, params=spec.stored, prompt=spec.prompt,
                     backend=spec.record)
    answers = response_cache(responses)
    # a retry asks the model anew (still storing its answers), as `selectllm retry` does
    meters = [Meter.for_backend(store, b, cache=answers, cancel=cancel, read_cache=not retry_failed)
              for b, _w in spec.models]
    models = [(m.wrap(b), w) for m, (b, w) in zip(meters, spec.models)]
    ctx = Context(store=store, run_id=run_id, pool=pool, budget=budget, embedder=spec.embedder,
                  cache=cache or EmbeddingCache(), models=models, progress=progress, retry_failed=retry_failed,
                  scores_of=scores_of,
                  meter=meters[0] if len(meters) == 1 else Meter(price=None, cancel=cancel))
    params = spec.params
    # 3. the method itself
    store.set_run_status(run_id, "running")
    t0 = time.perf_counter()
    try:
        sel = method.select(ctx, **params)
    except BaseException:  # an error, or Ctrl-C: the run resumes from what was stored
        store.set_run_status(run_id, "interrupted")
        raise
    ctx.stats["select_seconds"] = round(time.perf_counter() - t0, 3)
    # 4. plan and selection
    _save(store, run_id, pool.frame, sel)
    short = budget - len(sel.positions)
    store.set_run_status(run_id, "complete" if sel.complete else "incomplete")
    return MethodResult(run_id=run_id, pool_id=pool.pool_id, method=method.name, budget=budget,
                        selected=len(sel.positions), short_by=short, flags=sel.flags, stats=ctx.stats, store=store)


def _save(store: Store, run_id: str, frame: pd.DataFrame, sel: Selection) -> None:
    """Store the plan (batch per row for LLM methods, -1 otherwise; no clusters) and the ranked selection."""
    ids = frame["id"].tolist()
    subset = sel.subset_of if sel.subset_of is not None else np.full(len(ids), -1)
    store.save_plan(run_id, [(ids[p], p, -1, int(subset[p])) for p in range(len(ids))])
    rows = [(ids[p], rank, None if s is None or not np.isfinite(s) else float(s), reason)
            for rank, (p, s, reason) in enumerate(zip(sel.positions, sel.scores, sel.reasons, strict=True), start=1)]
    store.save_selection(run_id, rows)
