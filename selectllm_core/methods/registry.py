"""The one method registry: every selection method, SelectLLM included, with its parameters declared once.

From each `Method` and its `Param`s come the `selectllm method NAME` options and `selectllm run`'s method
options (cli/), the Compare page's controls (app_pages/compare.py), the manifest's repeat command and the
comparison's settings column (runs/). Adding a method means one new file in this folder, with its select
function, plus one entry in METHODS below.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from selectllm_core.embed import Embedder, EmbeddingCache
from selectllm_core.engines import StageProgress
from selectllm_core.errors import ConfigError
from selectllm_core.llm import ChatBackend
from selectllm_core.methods.alpagasus import NOTE as ALPAGASUS_NOTE
from selectllm_core.methods.alpagasus import TEMPLATE as ALPAGASUS_TEMPLATE
from selectllm_core.methods.alpagasus import select_alpagasus
from selectllm_core.methods.alpagasus import stored_scores as alpagasus_scores
from selectllm_core.methods.base import Method, MethodResult, Param, execute_method, plan_run
from selectllm_core.methods.basic import select_length, select_random
from selectllm_core.methods.coreset import select_coreset
from selectllm_core.methods.deita import select_deita
from selectllm_core.methods.selectit import PHRASINGS, prompt_text, select_selectit
from selectllm_core.methods.selectit import stored_scores as selectit_scores
from selectllm_core.methods.selectllm import SELECTLLM
from selectllm_core.pool.load import Pool
from selectllm_core.store import Store

_BATCH = Param("batch_size", int, 20, "Rows rated per stored batch: a stopped run resumes from the last saved batch.",
               min=1)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        SELECTLLM,
        Method("random", "Random", "A seeded uniform draw: the baseline every method must beat.",
               params=(Param("seed", int, 0, "Seeds the draw: the same seed gives the same selection.",
                             setting=True),),
               select=select_random),
        Method("length", "Length", "Longest (or shortest) instructions first, counting instruction + input.",
               params=(Param("order", str, "longest", "Longest first favours detailed tasks; shortest first, cheap "
                             "ones (instruction + input characters).", choices=("longest", "shortest"),
                             setting=True),),
               select=select_length),
        Method("coreset", "k-center coreset", "Farthest-first picks that cover the embedding space (cosine).",
               params=(Param("seed", int, 0, "Seeds the first centre: the same seed gives the same selection.",
                             setting=True),),
               select=select_coreset, needs=("embeddings",)),
        Method("deita", "DEITA-like filter", "Best score first, skipping rows too similar (> tau) to a pick.",
               params=(Param("tau", float, 0.9, "Skip a row whose cosine similarity to an earlier pick is above "
                             "this (DEITA uses 0.9).", min=0.0, max=1.0, label="Similarity threshold (tau)",
                             widget="slider", setting=True),
                       Param("score_run", str, None, "Rank by the scores of another run of this pool (a rating, "
                             "length or coreset run); none: row length.", label="Score by run", widget="run",
                             setting=True),
                       Param("score_column", str, None, "Or rank by a numeric column of the pool.",
                             label="Score by column", widget="column", setting=True)),
               select=select_deita, needs=("embeddings",)),
        Method("alpagasus", "AlpaGasus rating", "A model rates each instruction 0-5 with a reason; keep >= 4.5.",
               params=(Param("threshold", float, 4.5, "Keep rows rated at or above this, on the 0-5 scale "
                             "(AlpaGasus keeps 4.5 and up).", min=0.0, max=5.0, setting=True),
                       _BATCH,
                       Param("max_tokens", int, 256, "Longest rating answer allowed.", min=16, ui=False)),
               select=select_alpagasus, needs=("llm",), prompt=lambda _p: ALPAGASUS_TEMPLATE,
               scores=alpagasus_scores, note=ALPAGASUS_NOTE),
        Method("selectit", "SelectIT", "Uncertainty-aware rating from the probabilities of the digits 1-5.",
               params=(Param("alpha", float, 0.2, "Uncertainty penalty: score = mean / (1 + alpha x std) over the "
                             "prompt phrasings.", min=0.0, label="Alpha (uncertainty penalty)", setting=True),
                       Param("phrasings", int, 5, "Rating prompt phrasings per row (the paper uses all 5).", min=1,
                             label="Prompt phrasings",
                             max=len(PHRASINGS), setting=True, legacy=("k",)),
                       _BATCH,
                       Param("top_n", int, 20, "Most likely first tokens read per rating; the digits 1-5 must be "
                             "among them (OpenAI allows up to 20).", min=5, label="Top tokens read (top_n)")),
               select=select_selectit, needs=("llm", "logprobs"), prompt=prompt_text,
               scores=selectit_scores,
               note="SelectIT rated (instruction, response) pairs; here each instruction is rated alone.",
               max_models=16),
    )
}


def get(name: str) -> Method:
    """A registered method by name; an unknown name gets the list of known ones."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}.")
    return METHODS[name]


def run_method(name: str, source: Any, *, budget: int, store: Store | None = None,
               embedder: Embedder | None = None, cache: EmbeddingCache | None = None, backend: ChatBackend | None = None,
               backends: list[tuple[ChatBackend, float]] | None = None, progress: StageProgress | None = None,
               retry_failed: bool = False, cancel: threading.Event | None = None, responses: bool = True,
               **params: Any) -> MethodResult:
    """Run a selection method by name and store it as a run.

    Args:
        name: a key of METHODS.
        source: a Pool, a pool file path or a DataFrame.
        budget: rows to select.
        store: the workspace (default: from the environment).
        embedder: Embedder for methods that need embeddings (default: the bundled all-MiniLM-L6-v2).
        cache: embedding cache (default: from the environment).
        backend: ChatBackend for methods that ask a model (default: the bundled local model).
        backends: (backend, parameter count) pairs: SelectIT's model level.
        progress: called with (stage, done, total).
        retry_failed: rating methods call again the batches stored as failed.
        cancel: set it to stop the run cleanly (RunStopped); running it again resumes it.
        responses: read and fill the response cache of the cache folder (False: send every request).
        **params: the method's parameters (see METHODS[name].params).

    Returns:
        MethodResult (run id, selected, short_by, flags, stats).
    """
    method, store = get(name), store or Store()
    if method.run is not None:
        if backends or retry_failed:
            raise ConfigError(f"{method.title} takes one backend; retry its failed subsets with `selectllm retry`.")
        return method.run(source, budget=budget, store=store, embedder=embedder, cache=cache, backend=backend,
                          progress=progress, cancel=cancel, responses=responses, **method.resolve(params))
    return execute_method(method, source, budget=budget, params=params, store=store, embedder=embedder,
                          cache=cache, backend=backend, backends=backends, progress=progress,
                          retry_failed=retry_failed, scores_of=lambda run_id: run_scores(store, run_id),
                          cancel=cancel, responses=responses)


def run_id(name: str, pool: Pool, *, budget: int, embedder: Embedder | None = None, backend: ChatBackend | None = None,
           **params: Any) -> str:
    """The run id `run_method` will give, without running anything (the studio keys its jobs by it)."""
    method = get(name)
    if method.run_id is not None:
        return method.run_id(pool, budget=budget, backend=backend, **method.resolve(params))
    return plan_run(method, pool.pool_id, budget=budget, params=params, embedder=embedder, backend=backend).run_id


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


def repeat_command(run: dict) -> str:
    """The CLI command that repeats a stored run of any method (the pool path is the curator's)."""
    return get(run["method"]).repeat_command(run)


def setting(run: dict) -> str:
    """The parameters that tell runs of one method apart (the comparison's settings column)."""
    method = METHODS.get(run["method"])
    return method.setting(run["params"]) if method else ""
