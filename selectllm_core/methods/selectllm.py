"""SelectLLM, the paper's method, as the registry runs it: embed, split into diverse subsets, ask the model.

    from selectllm_core.methods import selectllm
    result = selectllm.run("pool.jsonl", selectllm.RunConfig(budget=300))

A run is identified by everything that decides its outcome (pool, parameters, prompt, backend), so running
the same thing again finds the stored run: finished subsets are not called again (the run driver skips
them) and cached embeddings are not computed again. `selectllm_core.pipeline` is the public façade.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from selectllm_core.embed import Embedder, EmbeddingCache, EmbedResult, embed_texts, embedder_for
from selectllm_core.engines import StageProgress, executor_for
from selectllm_core.engines.ray import embed_texts_with_ray  # ray itself loads only when used
from selectllm_core.errors import ConfigError
from selectllm_core.llm import ChatBackend, backend_identity, make_backend
from selectllm_core.methods.base import Method, MethodResult, Param
from selectllm_core.pool.load import Pool, load_pool, sample_pool
from selectllm_core.select.context import subset_cap
from selectllm_core.select.listwise import Candidate, PromptSpec, execute, finalize
from selectllm_core.select.prompts import PRESETS, check, load_template
from selectllm_core.split import STRATEGIES, BudgetPlan, make_subsets, plan_budget
from selectllm_core.store import PoolSaved, Store

NAME = "selectllm"

PARAMS = (
    Param("subset_size", int, None, "Candidates per LLM query (default: ceil(pool / min(1000, budget)), as in the "
          "paper, capped so each prompt fits the model's context).", min=2, short="-s", setting=True),
    Param("picks_per_subset", int, None, "Picks per query (default: derived from the budget).", min=1, short="-k"),
    Param("split", str, "diverse", "diverse: one row of every cluster per subset (the paper's method); similar: "
          "one cluster per subset; random: a seeded draw.", choices=STRATEGIES, setting=True),
    Param("seed", int, 0, "Seeds clustering and shuffling: the same seed gives the same run."),
    Param("shuffle", bool, True, "Shuffle each subset's candidates before they are shown, against position bias "
          "(on by default; --no-shuffle keeps cluster order, for position-bias studies).", setting=True),
    Param("prompt", str, "default", "Preset (" + ", ".join(PRESETS) + ") or a template file. See "
          "`selectllm prompts`.", short="-p", setting=True),
    Param("domain", str, "", "Domain to prefer (for the domain preset or {domain} in a template)."),
    Param("max_tokens", int, 512, "Longest answer allowed per query.", min=1),
    Param("max_input_chars", int, None, "Cut each input to this many characters in the prompt (saves tokens on "
          "long contexts, and more candidates then fit the context).", min=1),
    Param("embed_model", str, None, "model2vec (fast, approximate), or a sentence-transformers model name or "
          "folder (default: the bundled all-MiniLM-L6-v2).", ui=False),
    Param("sample", int, None, "Select from a seeded random sample of this many rows (try settings cheaply "
          "before a full run).", min=2, ui=False),
)


@dataclass(frozen=True)
class RunConfig:
    """Everything about a SelectLLM run except the pool and the backend (each field is a Param in PARAMS)."""

    budget: int
    subset_size: int | None = None
    picks_per_subset: int | None = None
    split: str = "diverse"
    seed: int = 0
    shuffle: bool = True
    prompt: str = "default"
    domain: str = ""
    max_tokens: int = 512
    max_input_chars: int | None = None
    embed_model: str | None = None
    sample: int | None = None

    def params(self) -> dict:
        """The method's parameters (everything but the budget), as the registry declares them."""
        return {k: v for k, v in asdict(self).items() if k != "budget"}


@dataclass
class RunResult:
    """What a run produced, and what it cost in this call."""

    run_id: str
    pool_id: str
    plan: BudgetPlan
    summary: dict
    stats: dict = field(default_factory=dict)
    store: Store | None = field(default=None, repr=False)
    pool_saved: PoolSaved | None = None  # whether the pool was new, a new version, or already stored


def embed(pool: Pool, *, embed_model: str | None = None, embedder: Embedder | None = None,
          cache: EmbeddingCache | None = None, progress: StageProgress | None = None,
          engine: str = "local") -> EmbedResult:
    """Embed a pool's `text` column through the cache (engine "ray": the misses on Ray actors)."""
    step = (lambda d, t: progress("embed", d, t)) if progress else None
    if engine == "ray":
        return embed_texts_with_ray(pool.frame["text"].tolist(), embed_model=embed_model, embedder=embedder,
                                    cache=cache, progress=step)
    embedder = embedder or embedder_for(embed_model)
    return embed_texts(pool.frame["text"].tolist(), embedder=embedder, cache=cache, progress=step)


def plan(pool: Pool, config: RunConfig, *, backend: ChatBackend) -> BudgetPlan:
    """The budget plan of a run, its subset size capped so every prompt fits the backend's context window.

    The CLI's `plan`, the app's pages and `run` all plan through here, so they show the same numbers.
    """
    template, _fmt = load_template(config.prompt)
    cap = subset_cap(pool.frame, backend, template=template, max_tokens=config.max_tokens,
                     max_input_chars=config.max_input_chars, seed=config.seed)
    return plan_budget(len(pool.frame), config.budget, subset_size=config.subset_size,
                       picks_per_subset=config.picks_per_subset, max_subset_size=cap.size, cap_reason=cap.reason())


def run_id_of(pool: Pool, config: RunConfig, backend: ChatBackend, *, budget_plan: BudgetPlan | None = None) -> str:
    """The id `run` gives this run of this pool (the app shows and resumes runs by it).

    Content id of pool, config, template and backend identity: the same inputs give the same id, so a repeat
    resumes it. A subset size capped by the context is part of it (only then, so runs made before caps keep
    their ids).
    """
    if config.sample:  # `run` selects from the sample, so the id is the sample's (sampling twice changes nothing)
        pool = sample_pool(pool, config.sample, seed=config.seed)
    budget_plan = budget_plan or plan(pool, config, backend=backend)
    template, _fmt = load_template(config.prompt)
    extra = {"subset_cap": budget_plan.subset_size} if budget_plan.cap_note else {}
    key = json.dumps({"pool": pool.pool_id, "method": NAME, "config": asdict(config), "template": template,
                      "backend": backend_identity(backend.describe()), **extra}, sort_keys=True)
    return "run-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def subsets_from_plan(store: Store, run_id: str, pool: Pool) -> dict[int, list[Candidate]]:
    """Rebuild every subset's rows from the stored plan (members ordered by cluster, then position)."""
    stored = store.plan(run_id).sort_values(["subset", "cluster", "position"])
    frame = pool.frame.set_index("id")
    subsets: dict[int, list[Candidate]] = {}
    for subset, group in stored.groupby("subset", sort=True):
        rows = frame.loc[group["id"]]
        subsets[int(subset)] = [Candidate(str(i), str(r.instruction), str(r.input)) for i, r in rows.iterrows()]
    return subsets


def run(
    source: Any, config: RunConfig, *, store: Store | None = None, backend: ChatBackend | None = None,
    embedder: Embedder | None = None, cache: EmbeddingCache | None = None, progress: StageProgress | None = None,
    engine: str = "local",
) -> RunResult:
    """Run the whole pipeline: load, embed, split, ask the model per subset, trim to the budget.

    Args:
        source: a pool file path, a DataFrame, or a loaded Pool.
        config: run parameters.
        store: the workspace (default: from the environment).
        backend: a ChatBackend (default: the bundled local model).
        embedder: an Embedder (default: sentence-transformers with config.embed_model).
        cache: the embedding cache (default: from the environment).
        progress: called with (stage, done, total); stages are embed, cluster, select.
        engine: "local" (this process) or "ray" (embedding and LLM calls on a Ray cluster; results are
            written here, so the run id, the cache and resume are the same for both engines).

    Returns:
        A RunResult; `stats` counts new embeddings and new LLM calls made by this call.
    """
    SELECTLLM.resolve(config.params())  # the registry's bounds, for the Python API as for the CLI
    store = store or Store()
    cache = cache or EmbeddingCache()
    backend = backend or make_backend("local")
    executor = executor_for(engine, backend)  # an unknown engine fails here, before any work
    template, answer_format = load_template(config.prompt)
    check(template, domain=config.domain)
    stats: dict[str, Any] = {}
    # 1. pool (saved once, so the report says whether it was new, a new version or already stored)
    pool = source if isinstance(source, Pool) else load_pool(source)
    if config.sample:
        pool = sample_pool(pool, config.sample, seed=config.seed)
    saved = store.save_pool(pool)
    budget_plan = plan(pool, config, backend=backend)
    run_id = run_id_of(pool, config, backend, budget_plan=budget_plan)
    # 2. embeddings (cached by text)
    t0 = time.perf_counter()
    emb = embed(pool, embed_model=config.embed_model, embedder=embedder, cache=cache, progress=progress,
                engine=engine)
    stats.update(embedded_new=emb.computed, embedded_cached=emb.cached, embed_seconds=time.perf_counter() - t0)
    # 3. split (once per run; a resumed run reads the stored plan)
    t0 = time.perf_counter()
    params = {**asdict(config), "answer_format": answer_format, "embed_model_id": emb.model_id,
              "budget_plan": asdict(budget_plan)}
    if store.create_run(run_id, pool_id=pool.pool_id, method=NAME, params=params, prompt=template,
                        backend=backend.describe()) or store.plan(run_id).empty:
        if progress:
            progress("cluster", 0, 1)
        split = make_subsets(emb.vectors, budget_plan, strategy=config.split, random_state=config.seed)
        ids = pool.frame["id"].tolist()
        subset_of = split.subset_of()
        store.save_plan(run_id, [(ids[p], p, int(split.cluster_of[p]), int(subset_of[p])) for p in range(len(ids))])
        if progress:
            progress("cluster", 1, 1)
    stats["cluster_seconds"] = time.perf_counter() - t0
    # 4. the model, subset by subset (the run driver skips finished subsets and records each outcome)
    t0 = time.perf_counter()
    calls_before = store.count_calls(run_id)
    execute(store, run_id, subsets_from_plan(store, run_id, pool), executor=executor,
            k=budget_plan.picks_per_subset, prompt=PromptSpec(template, answer_format, config.domain,
                                                              config.max_tokens, config.max_input_chars),
            seed=config.seed, shuffle=config.shuffle, progress=progress)
    stats.update(llm_calls_new=store.count_calls(run_id) - calls_before, llm_seconds=time.perf_counter() - t0)
    # 5. trim to the budget
    summary = finalize(store, run_id, budget_plan.budget)
    return RunResult(run_id=run_id, pool_id=pool.pool_id, plan=budget_plan, summary=summary, stats=stats,
                     store=store, pool_saved=saved)


def retry_failed(store: Store, run_id: str, *, backend: ChatBackend, subsets: list[int] | None = None,
                 progress: StageProgress | None = None) -> dict:
    """Call failed (or the given) subsets of a stored run again, then re-trim the selection.

    The backend must describe itself as the run's backend did, so a retry cannot mix models silently.
    """
    stored = store.get_run(run_id)
    if stored["method"] != NAME:  # `pipeline.retry_failed` also names the command that repeats it
        raise ConfigError(f"Run {run_id} is a {stored['method']} run; `selectllm retry` retries SelectLLM runs.")
    if backend_identity(backend.describe()) != backend_identity(stored["backend"]):
        raise ConfigError(
            f"Run {run_id} used backend {stored['backend']}, not {backend.describe()}: retry with the same backend "
            "settings, or start a new run."
        )
    results = store.subset_results(run_id)
    targets = subsets if subsets is not None else [r["subset"] for r in results if r["status"] != "ok"]
    store.reset_subsets(run_id, targets)
    pool = store.load_pool(stored["pool_id"])
    params = stored["params"]
    every = subsets_from_plan(store, run_id, pool)
    counts = execute(store, run_id, {s: every[s] for s in targets if s in every}, backend=backend,
                     k=params["budget_plan"]["picks_per_subset"],
                     prompt=PromptSpec(stored["prompt"], params["answer_format"], params["domain"],
                                       params["max_tokens"], params.get("max_input_chars")),
                     seed=params["seed"], shuffle=params["shuffle"], progress=progress)
    return {**finalize(store, run_id, params["budget"]), "retried": counts}


def run_as_method(source: Any, *, budget: int, store: Store | None = None, embedder: Embedder | None = None,
                  cache: EmbeddingCache | None = None, backend: ChatBackend | None = None,
                  progress: StageProgress | None = None, **params: Any) -> MethodResult:
    """`run`, called the way the registry calls every method (the Compare page, `methods.run_method`)."""
    result = run(source, RunConfig(budget=budget, **params), store=store, backend=backend, embedder=embedder,
                 cache=cache, progress=progress)
    s = result.summary
    return MethodResult(run_id=result.run_id, pool_id=result.pool_id, method=NAME, budget=budget,
                        selected=s["selected"], short_by=s["short_by"],
                        flags={"subsets": s["subsets"]} if s["short_by"] else {}, stats=result.stats,
                        store=result.store)


def _registry_run_id(pool: Pool, *, budget: int, backend: ChatBackend | None = None, **params: Any) -> str:
    """The run id `run_as_method` will give (the registry's run-id hook)."""
    return run_id_of(pool, RunConfig(budget=budget, **params), backend or make_backend("local"))


SELECTLLM = Method(
    NAME, "SelectLLM", "The paper's method: diverse subsets by equal-size K-means, the model picks the best of each.",
    params=PARAMS, run=run_as_method, run_id=_registry_run_id, needs=("embeddings", "llm"), listwise=True, command="selectllm run",
    note="The model chooses from a list: position bias is measured for these runs.",
)
