"""What every selection method shares: the context it works in, its answer, and the stored run.

A method is a function `select(ctx, **params) -> Selection`. `execute_method` wraps it the same way for every
method: load the pool, check the budget, give the run a content id (pool, method, parameters, prompt, models),
record it in the workspace, run the method, and store its plan and its ranked selection. Running the same thing
again finds the stored run; methods that call a model resume from the batches already stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts
from selectllm_core.errors import ConfigError, SelectLLMError
from selectllm_core.store import Store

StageProgress = Callable[[str, int, int], None]
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
    pool: Any
    budget: int
    embedder: Any = None
    cache: EmbeddingCache | None = None
    models: list[tuple[Any, float]] = field(default_factory=list)
    progress: StageProgress | None = None
    retry_failed: bool = False
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
class Method:
    """A registered method: its select function, parameter defaults, what it needs, and texts for the UI."""

    name: str
    title: str
    summary: str
    select: Callable[..., Selection]
    defaults: dict[str, Any]
    needs: tuple[str, ...] = ()
    prompt: Callable[[dict], str] | None = None
    scores: Callable[[Store, str], pd.Series] | None = None
    note: str = ""
    max_models: int = 1

    def __call__(self, source: Any, *, budget: int, **kwargs: Any) -> MethodResult:
        """Run this method (see `execute_method`)."""
        params = {k: kwargs.pop(k) for k in list(kwargs) if k in self.defaults}
        return execute_method(self, source, budget=budget, params=params, **kwargs)


def row_lengths(frame: pd.DataFrame) -> np.ndarray:
    """Characters an annotator reads per row: instruction plus input."""
    return (frame["instruction"].str.len() + frame["input"].str.len()).to_numpy(dtype=np.int64)


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Positions with a finite score, highest first; ties keep pool order."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.argsort(-scores[finite], kind="stable")]


def check_budget(budget: int, pool_size: int) -> None:
    """Raise ConfigError unless 1 <= budget < pool size."""
    if budget < 1:
        raise ConfigError(f"The budget must be at least 1 row (got {budget}).")
    if budget >= pool_size:
        raise ConfigError(
            f"The budget ({budget}) covers the whole pool ({pool_size} rows): there is nothing to choose. "
            "Lower --budget or load a larger pool."
        )


def run_id_for(pool_id: str, method: str, params: dict, backend: dict, prompt: str) -> str:
    """Content id of a method run: the same inputs give the same id, so a repeat finds (and resumes) it."""
    key = json.dumps({"pool": pool_id, "method": method, "params": params, "backend": backend,
                      "prompt": prompt}, sort_keys=True, default=str)
    return f"{method}-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def resolve_params(method: Method, params: dict) -> dict:
    """The method's defaults updated with `params`; unknown names are a ConfigError."""
    unknown = sorted(set(params) - set(method.defaults))
    if unknown:
        allowed = ", ".join(method.defaults) or "none"
        raise ConfigError(f"Method {method.name!r} has no parameter {', '.join(unknown)}; its parameters: {allowed}.")
    return {**method.defaults, **params}


def resolve_models(method: Method, backend: Any, backends: list[tuple[Any, float]] | None) -> list[tuple[Any, float]]:
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
        from selectllm_core.llm import make_backend

        backend = make_backend("local")
    return [(backend, 1.0)]


def backend_record(models: list[tuple[Any, float]]) -> dict:
    """What a run stores about its models (never a key): one describe(), or every model with its weight."""
    if not models:
        return {}
    if len(models) == 1:
        return models[0][0].describe()
    return {"kind": "ensemble", "models": [{**b.describe(), "parameters": w} for b, w in models]}


def _resolve_pool(source: Any, store: Store) -> Any:
    """A loaded Pool from a Pool, a file path or a DataFrame; saved to the workspace."""
    if hasattr(source, "frame"):
        store.save_pool(source)
        return source
    from selectllm_core.pipeline import load

    return load(source, store=store)


@dataclass(frozen=True)
class RunPlan:
    """What a method run will be stored as, known before it starts: its id, parameters, prompt and models."""

    run_id: str
    params: dict
    stored: dict
    prompt: str
    record: dict
    models: list
    embedder: Any


def plan_run(method: Method, pool_id: str, *, budget: int, params: dict | None = None, embedder: Any = None,
             backend: Any = None, backends: list[tuple[Any, float]] | None = None) -> RunPlan:
    """Resolve a method's parameters and models, and the content id its run will have (nothing is stored)."""
    params = resolve_params(method, params or {})
    models = resolve_models(method, backend, backends)
    stored = {**params, "budget": budget}
    if models:
        stored["model_parameters"] = [w for _b, w in models]
    if "embeddings" in method.needs:
        embedder = embedder or SentenceTransformerEmbedder()
        stored["embed_model_id"] = embedder.model_id
    prompt = method.prompt(params) if method.prompt else ""
    record = backend_record(models)
    return RunPlan(run_id=run_id_for(pool_id, method.name, stored, record, prompt), params=params, stored=stored,
                   prompt=prompt, record=record, models=models, embedder=embedder)


def execute_method(
    method: Method, source: Any, *, budget: int, params: dict | None = None, store: Store | None = None,
    embedder: Any = None, cache: EmbeddingCache | None = None, backend: Any = None,
    backends: list[tuple[Any, float]] | None = None, progress: StageProgress | None = None,
    retry_failed: bool = False,
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

    Returns:
        A MethodResult; its selection is in the store under `run_id`.
    """
    store = store or Store()
    # 1. pool, budget and parameters
    pool = _resolve_pool(source, store)
    check_budget(budget, len(pool.frame))
    spec = plan_run(method, pool.pool_id, budget=budget, params=params, embedder=embedder, backend=backend,
                    backends=backends)
    # 2. the run record (found again when everything matches)
    run_id = spec.run_id
    store.create_run(run_id, pool_id=pool.pool_id, method=method.name, params=spec.stored, prompt=spec.prompt,
                     backend=spec.record)
    ctx = Context(store=store, run_id=run_id, pool=pool, budget=budget, embedder=spec.embedder,
                  cache=cache or EmbeddingCache(), models=spec.models, progress=progress, retry_failed=retry_failed)
    params = spec.params
    # 3. the method itself
    store.set_run_status(run_id, "running")
    t0 = time.perf_counter()
    try:
        sel = method.select(ctx, **params)
    except SelectLLMError:
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


# -- manifest and export for any run -----------------------------------------------------------------------------
def repeat_command(run: dict) -> str:
    """The CLI command that repeats a stored method run (the pool path is the curator's)."""
    params = dict(run["params"])
    flags = [f"--budget {params.pop('budget')}"]
    params.pop("embed_model_id", None)
    weights = params.pop("model_parameters", None) or []
    for key, value in sorted(params.items()):
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags.append(f"{flag} {json.dumps(value) if isinstance(value, str) and ' ' in value else value}")
    backend = run.get("backend") or {}
    if backend.get("kind") == "openai":
        flags.append(f"--backend openai --base-url {backend.get('base_url')} --model {backend.get('model')}")
    if len(weights) > 1:
        flags.append("(model level: one --extra-model per model of the run's backend record)")
    return f"selectllm method {run['method']} POOL " + " ".join(flags)


def run_manifest(store: Store, run_id: str, *, which: str = "selected") -> dict:
    """Everything needed to repeat any run (one manifest builder for every method: `pipeline.manifest`)."""
    from selectllm_core.pipeline import manifest

    return manifest(store, run_id, which=which)


def export_run(store: Store, run_id: str, out: str | Path, *, fmt: str | None = None, which: str = "selected",
               batch_size: int | None = None) -> Any:
    """Write any run's picks for annotation with its manifest (`pipeline.export_run` serves every method)."""
    from selectllm_core.pipeline import export_run as export_any

    return export_any(store, run_id, out, fmt=fmt, which=which, batch_size=batch_size)

