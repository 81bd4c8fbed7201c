"""Selection methods beside SelectLLM, each stored as a run and comparable with `selectllm_core.runs.compare`.

    from selectllm_core import methods
    result = methods.run_method("coreset", "pool.jsonl", budget=300, seed=0)
    result.frame()                       # the ranked selection with scores and reasons
    methods.METHODS["alpagasus"].note    # what the UI should say next to the method

Every method takes a pool and a budget and returns exactly `budget` rows, ranked, with a score and/or a reason
per row; docs/methods.md gives the formulas and the two cases that may return fewer (AlpaGasus's threshold,
and rows a model failed to rate, both flagged in `MethodResult.flags`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from selectllm_core.errors import ConfigError
from selectllm_core.methods import alpagasus, selectit
from selectllm_core.methods.base import (
    Context,
    Method,
    MethodResult,
    RunPlan,
    Selection,
    execute_method,
    export_run,
    plan_run,
    repeat_command,
    row_lengths,
    run_manifest,
)
from selectllm_core.methods.basic import select_length, select_random
from selectllm_core.methods.coreset import select_coreset
from selectllm_core.methods.deita import select_deita
from selectllm_core.store import Store

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "Random", "A seeded uniform draw: the baseline every method must beat.",
               select_random, {"seed": 0}),
        Method("length", "Length", "Longest (or shortest) instructions first, counting instruction + input.",
               select_length, {"order": "longest"}),
        Method("coreset", "k-center coreset", "Farthest-first picks that cover the embedding space (cosine).",
               select_coreset, {"seed": 0}, needs=("embeddings",)),
        Method("deita", "DEITA-like filter", "Best score first, skipping rows too similar (> tau) to a pick.",
               select_deita, {"tau": 0.9, "score_run": None, "score_column": None}, needs=("embeddings",)),
        Method("alpagasus", "AlpaGasus rating", "A model rates each instruction 0-5 with a reason; keep >= 4.5.",
               alpagasus.select_alpagasus, {"threshold": 4.5, "batch_size": 20, "max_tokens": 256},
               needs=("llm",), prompt=lambda _p: alpagasus.TEMPLATE, scores=alpagasus.stored_scores,
               note=alpagasus.NOTE),
        Method("selectit", "SelectIT", "Uncertainty-aware rating from the probabilities of the digits 1-5.",
               selectit.select_selectit, {"alpha": 0.2, "k": 5, "batch_size": 20, "top_n": 20},
               needs=("llm", "logprobs"), prompt=selectit.prompt_text, scores=selectit.stored_scores,
               note="SelectIT rated (instruction, response) pairs; here each instruction is rated alone.",
               max_models=16),
    )
}


def get(name: str) -> Method:
    """A registered method by name."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}; choose one of: {', '.join(METHODS)} (or selectllm: "
                          "`selectllm run`).")
    return METHODS[name]


def run_method(name: str, source: Any, *, budget: int, store: Store | None = None, embedder: Any = None,
               cache: Any = None, backend: Any = None, backends: list[tuple[Any, float]] | None = None,
               progress: Any = None, retry_failed: bool = False, **params: Any) -> MethodResult:
    """Run a selection method by name and store it as a run.

    Args:
        name: a key of METHODS.
        source: a Pool, a pool file path or a DataFrame.
        budget: rows to select.
        store: the workspace (default: from the environment).
        embedder: Embedder for coreset and deita (default: the bundled all-MiniLM-L6-v2).
        cache: embedding cache (default: from the environment).
        backend: ChatBackend for alpagasus and selectit (default: the bundled local model).
        backends: (backend, parameter count) pairs: SelectIT's model level.
        progress: called with (stage, done, total).
        retry_failed: rating methods call again the batches stored as failed.
        **params: the method's parameters (see METHODS[name].defaults).

    Returns:
        MethodResult (run id, selected, short_by, flags, stats).
    """
    return execute_method(get(name), source, budget=budget, params=params, store=store, embedder=embedder,
                          cache=cache, backend=backend, backends=backends, progress=progress,
                          retry_failed=retry_failed)


def plan(name: str, pool_id: str, *, budget: int, embedder: Any = None, backend: Any = None,
         backends: list[tuple[Any, float]] | None = None, **params: Any) -> RunPlan:
    """The run id and resolved parameters `run_method` would use on a stored pool, without running anything."""
    return plan_run(get(name), pool_id, budget=budget, params=params, embedder=embedder, backend=backend,
                    backends=backends)


def run_scores(store: Store, run_id: str) -> pd.Series:
    """Scores (row id -> score) a stored run gave: every rated row for rating methods, else the selection's."""
    run = store.get_run(run_id)
    method = METHODS.get(run["method"])
    if method is not None and method.scores is not None:
        scores = method.scores(store, run_id)
    else:
        sel = store.selection(run_id)
        scores = pd.Series(sel["score"].to_numpy(dtype=float), index=sel["id"]).dropna()
    if scores.empty:
        raise ConfigError(f"Run {run_id} ({run['method']}) stored no scores: score with a rating run "
                          "(alpagasus, selectit), a length or coreset run, or a numeric pool column.")
    return scores


__all__ = ["METHODS", "Context", "Method", "MethodResult", "RunPlan", "Selection", "export_run", "get", "plan",
           "repeat_command", "row_lengths", "run_manifest", "run_method", "run_scores"]
