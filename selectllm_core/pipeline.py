"""The Python API: one call per step, and `run` for the whole SelectLLM pipeline.

    from selectllm_core import pipeline
    result = pipeline.run("pool.jsonl", pipeline.RunConfig(budget=300))
    pipeline.export_run(result.store, result.run_id, "batch.csv")

A run is identified by everything that decides its outcome (pool, parameters, prompt, backend), so running
the same thing again finds the stored run: finished subsets are not called again and cached embeddings
are not computed again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from selectllm_core.embed import EmbeddingCache, EmbedResult, embed_texts, embedder_for
from selectllm_core.errors import ExportError
from selectllm_core.pool.load import Pool
from selectllm_core.select.context import subset_cap
from selectllm_core.select.listwise import Candidate, PromptSpec, execute, finalize
from selectllm_core.select.prompts import check, load_template
from selectllm_core.split import BudgetPlan, make_subsets, plan_budget
from selectllm_core.store import PoolSaved, Store

StageProgress = Callable[[str, int, int], None]
METHOD = "selectllm"


@dataclass(frozen=True)
class RunConfig:
    """Everything about a SelectLLM run except the pool and the backend."""

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


def load(source: Any, *, store: Store, columns: Any = None, name: str | None = None) -> Any:
    """Load a pool file (or DataFrame) and save it to the workspace."""
    from selectllm_core.pool.load import load_pool

    pool = load_pool(source, columns=columns, name=name)
    store.save_pool(pool)
    return pool


def column_map(source: Any, *, instruction: str | None = None, input: str | None = None,  # noqa: A002
               id: str | None = None) -> Any:  # noqa: A002
    """A ColumnMap with some columns named by the curator and the rest detected (None when none is named)."""
    from dataclasses import replace

    from selectllm_core.pool.load import ColumnMap, PoolError, detect_columns, read_table

    if not (instruction or input or id):
        return None
    given = {k: v for k, v in {"instruction": instruction, "input": input, "id": id}.items() if v}
    try:
        return replace(detect_columns(read_table(source), label=str(source))[1], **given)
    except PoolError:
        if not instruction:
            raise
        return ColumnMap(instruction=instruction, input=input, id=id)


def embed(pool: Any, *, embed_model: str | None = None, embedder: Any = None,
          cache: EmbeddingCache | None = None, progress: StageProgress | None = None,
          engine: str = "local") -> EmbedResult:
    """Embed a pool's `text` column through the cache (engine "ray": the misses on Ray actors)."""
    step = (lambda d, t: progress("embed", d, t)) if progress else None
    if engine == "ray":
        from selectllm_core.engines.ray import embed_texts_with_ray

        return embed_texts_with_ray(pool.frame["text"].tolist(), embed_model=embed_model, embedder=embedder,
                                    cache=cache, progress=step)
    embedder = embedder or embedder_for(embed_model)
    return embed_texts(pool.frame["text"].tolist(), embedder=embedder, cache=cache, progress=step)


IDENTITY_KEYS = ("kind", "model", "base_url", "n_ctx", "seed", "json_mode")


def backend_identity(desc: dict) -> dict:
    """The parts of a backend description that decide answers (not concurrency or negotiated formats)."""
    return {k: desc[k] for k in IDENTITY_KEYS if k in desc}


def sample_pool(pool: Any, size: int, *, seed: int = 0) -> Any:
    """A seeded random sample of a pool's rows (in their original order), as a pool of its own."""
    from dataclasses import replace

    from selectllm_core.errors import ConfigError

    n = len(pool.frame)
    if size < 2:
        raise ConfigError(f"A sample needs at least 2 rows (got --sample {size}).")
    if size >= n:
        return pool
    keep = sorted(pd.Series(range(n)).sample(n=size, random_state=seed).tolist())
    frame = pool.frame.iloc[keep].reset_index(drop=True)
    return replace(pool, frame=frame, name=f"{pool.name} (sample of {size}, seed {seed})")


def plan(pool: Pool, config: RunConfig, *, backend: Any) -> BudgetPlan:
    """The budget plan of a run, its subset size capped so every prompt fits the backend's context window.

    The CLI's `plan`, the app's pages and `run` all plan through here, so they show the same numbers.
    """
    template, _fmt = load_template(config.prompt)
    cap = subset_cap(pool.frame, backend, template=template, max_tokens=config.max_tokens,
                     max_input_chars=config.max_input_chars, seed=config.seed)
    return plan_budget(len(pool.frame), config.budget, subset_size=config.subset_size,
                       picks_per_subset=config.picks_per_subset, max_subset_size=cap.size, cap_reason=cap.reason())


def run_id_of(pool: Pool, config: RunConfig, backend: Any, *, budget: BudgetPlan | None = None) -> str:
    """The id `run` gives this run of this pool (the app shows and resumes runs by it)."""
    budget = budget or plan(pool, config, backend=backend)
    template, _fmt = load_template(config.prompt)
    return run_id_for(pool.pool_id, config, template, backend.describe(),
                      budget.subset_size if budget.cap_note else None)


def run_id_for(pool_id: str, config: RunConfig, template: str, backend_desc: dict, cap: int | None = None) -> str:
    """Content id of a run: the same inputs give the same id, so a repeat resumes it.

    A subset size capped by the context is part of it (only then, so runs made before caps keep their ids).
    """
    extra = {"subset_cap": cap} if cap else {}
    key = json.dumps({"pool": pool_id, "method": METHOD, "config": asdict(config), "template": template,
                      "backend": backend_identity(backend_desc), **extra}, sort_keys=True)
    return "run-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _subsets_from_plan(store: Store, run_id: str, pool: Any) -> dict[int, list[Candidate]]:
    """Rebuild every subset's rows from the stored plan (members ordered by cluster, then position)."""
    plan = store.plan(run_id).sort_values(["subset", "cluster", "position"])
    frame = pool.frame.set_index("id")
    subsets: dict[int, list[Candidate]] = {}
    for subset, group in plan.groupby("subset", sort=True):
        rows = frame.loc[group["id"]]
        subsets[int(subset)] = [Candidate(str(i), str(r.instruction), str(r.input)) for i, r in rows.iterrows()]
    return subsets


def run(
    source: Any, config: RunConfig, *, store: Store | None = None, backend: Any = None, embedder: Any = None,
    cache: EmbeddingCache | None = None, progress: StageProgress | None = None, engine: str = "local",
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
    from selectllm_core.errors import ConfigError
    from selectllm_core.llm import make_backend

    if engine not in ("local", "ray"):
        raise ConfigError(f"Unknown engine {engine!r}: choose local or ray.")

    store = store or Store()
    cache = cache or EmbeddingCache()
    backend = backend or make_backend("local")
    template, answer_format = load_template(config.prompt)
    check(template, domain=config.domain)
    stats: dict[str, Any] = {}
    # 1. pool
    pool = source if hasattr(source, "frame") else load(source, store=store)
    if config.sample:
        pool = sample_pool(pool, config.sample, seed=config.seed)
    saved = store.save_pool(pool)
    budget = plan(pool, config, backend=backend)
    run_id = run_id_of(pool, config, backend, budget=budget)
    # 2. embeddings (cached by text)
    t0 = time.perf_counter()
    emb = embed(pool, embed_model=config.embed_model, embedder=embedder, cache=cache, progress=progress,
                engine=engine)
    stats.update(embedded_new=emb.computed, embedded_cached=emb.cached, embed_seconds=time.perf_counter() - t0)
    # 3. split (once per run; a resumed run reads the stored plan)
    t0 = time.perf_counter()
    params = {**asdict(config), "answer_format": answer_format, "embed_model_id": emb.model_id,
              "budget_plan": asdict(budget)}
    if store.create_run(run_id, pool_id=pool.pool_id, method=METHOD, params=params, prompt=template,
                        backend=backend.describe()) or store.plan(run_id).empty:
        if progress:
            progress("cluster", 0, 1)
        split = make_subsets(emb.vectors, budget, strategy=config.split, random_state=config.seed)
        ids = pool.frame["id"].tolist()
        subset_of = split.subset_of()
        store.save_plan(run_id, [(ids[p], p, int(split.cluster_of[p]), int(subset_of[p])) for p in range(len(ids))])
        if progress:
            progress("cluster", 1, 1)
    stats["cluster_seconds"] = time.perf_counter() - t0
    # 4. the model, subset by subset
    t0 = time.perf_counter()
    calls_before = store.count_calls(run_id)
    step = (lambda d, t, _c: progress("select", d, t)) if progress else None
    if engine == "ray":
        from selectllm_core.engines.ray import execute_with_ray as run_subsets
    else:
        run_subsets = execute
    run_subsets(store, run_id, _subsets_from_plan(store, run_id, pool), backend=backend,
                k=budget.picks_per_subset, prompt=PromptSpec(template, answer_format, config.domain,
                                                             config.max_tokens, config.max_input_chars),
                seed=config.seed, shuffle=config.shuffle, progress=step)
    stats.update(llm_calls_new=store.count_calls(run_id) - calls_before, llm_seconds=time.perf_counter() - t0)
    # 5. trim to the budget
    summary = finalize(store, run_id, budget.budget)
    return RunResult(run_id=run_id, pool_id=pool.pool_id, plan=budget, summary=summary, stats=stats, store=store,
                     pool_saved=saved)


def retry_failed(store: Store, run_id: str, *, backend: Any, subsets: list[int] | None = None,
                 progress: StageProgress | None = None) -> dict:
    """Call failed (or the given) subsets of a stored run again, then re-trim the selection.

    The backend must describe itself as the run's backend did, so a retry cannot mix models silently.
    """
    from selectllm_core.errors import ConfigError

    run = store.get_run(run_id)
    if run["method"] != METHOD:
        from selectllm_core.methods import repeat_command

        raise ConfigError(
            f"Run {run_id} is a {run['method']} run; `selectllm retry` retries SelectLLM runs. Run its command "
            f"again (add --retry-failed for alpagasus and selectit): {repeat_command(run)}"
        )
    if backend_identity(backend.describe()) != backend_identity(run["backend"]):
        raise ConfigError(
            f"Run {run_id} used backend {run['backend']}, not {backend.describe()}: retry with the same backend "
            "settings, or start a new run."
        )
    results = store.subset_results(run_id)
    targets = subsets if subsets is not None else [r["subset"] for r in results if r["status"] != "ok"]
    store.reset_subsets(run_id, targets)
    pool = store.load_pool(run["pool_id"])
    params = run["params"]
    all_subsets = _subsets_from_plan(store, run_id, pool)
    wanted = {s: all_subsets[s] for s in targets if s in all_subsets}
    step = (lambda d, t, _c: progress("select", d, t)) if progress else None
    counts = execute(store, run_id, wanted, backend=backend, k=params["budget_plan"]["picks_per_subset"],
                     prompt=PromptSpec(run["prompt"], params["answer_format"], params["domain"],
                                       params["max_tokens"], params.get("max_input_chars")),
                     seed=params["seed"], shuffle=params["shuffle"], progress=step)
    return {**finalize(store, run_id, params["budget"]), "retried": counts}


def selection_frame(store: Store, run_id: str, *, which: str = "selected") -> pd.DataFrame:
    """A run's picks for export: "selected" (all not rejected), "accepted" or "all"."""
    return which_picks(store.selection(run_id), which)


def which_picks(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of a selection (`Store.selection`) that `which` names: "selected", "accepted" or "all"."""
    if which == "accepted":
        return frame[frame["decision"] == "accepted"]
    if which == "selected":
        return frame[frame["decision"] != "rejected"]
    if which == "all":
        return frame
    raise ExportError(f"Unknown choice {which!r}: export 'selected', 'accepted' or 'all'.")


def manifest(store: Store, run_id: str, *, which: str = "selected") -> dict:
    """Everything needed to repeat a run: pool, parameters, prompt, backend (no secrets), versions."""
    run = store.get_run(run_id)
    pools = store.list_pools()
    pool = pools[pools["pool_id"] == run["pool_id"]].to_dict("records")
    versions = {}
    for dist in ("selectllm-studio", "sentence-transformers", "k-means-constrained", "llama-cpp-python",
                 "openai", "numpy", "pandas"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "run_id": run_id, "method": run["method"], "status": run["status"], "created_at": run["created_at"],
        "pool": pool[0] if pool else {"pool_id": run["pool_id"]}, "params": run["params"],
        "prompt_template": run["prompt"], "backend": run["backend"], "usage": store.usage(run_id),
        "degraded": degradations(store, run_id),
        "exported": which, "versions": versions, "repeat": _repeat_command(run),
    }


def degradations(store: Store, run_id: str) -> list[str]:
    """What in a run went otherwise than asked, in words: never silent (the page, `status` and manifests say it).

    Returns:
        One sentence per degradation: answers without the JSON constraint, subsets given fewer picks.
    """
    run, usage = store.get_run(run_id), store.usage(run_id)
    out = []
    formats = usage.get("answer_formats", {})
    unconstrained = formats.get("none", 0)
    if unconstrained and run["backend"].get("json_mode", "auto") != "off" and run["method"] == METHOD:
        out.append(f"{unconstrained} of {sum(formats.values())} answered calls were sent without a JSON constraint: "
                   "the server refused response_format, so the studio fell back to plain text and parsed the "
                   "answers (invalid ones are failed subsets, never guessed picks).")
    notes = store.subset_notes(run_id)  # not every result: the run panel asks this every 2 s while a run works
    if notes:
        out.append(f"{len(notes)} subset(s) got fewer picks than planned, e.g. subset {notes[0][0]}: {notes[0][1]}.")
    return out


def _repeat_command(run: dict) -> str:
    """The command that repeats a run (the pool path is the curator's)."""
    if run["method"] != METHOD:
        from selectllm_core.methods import repeat_command

        return repeat_command(run)
    return "selectllm run POOL " + " ".join(_cli_flags(run["params"], run["backend"]))


def _cli_flags(params: dict, backend: dict) -> list[str]:
    """The CLI flags that repeat a run (the pool path is the curator's)."""
    flags = [f"--budget {params['budget']}", f"--split {params['split']}", f"--seed {params['seed']}"]
    for key, flag in (("subset_size", "--subset-size"), ("picks_per_subset", "--picks-per-subset"),
                      ("embed_model", "--embed-model"), ("max_input_chars", "--max-input-chars"),
                      ("max_tokens", "--max-tokens"), ("sample", "--sample")):
        if params.get(key) is not None:
            flags.append(f"{flag} {params[key]}")
    if params.get("domain"):
        flags.append(f"--domain {json.dumps(params['domain'])}")
    if not params.get("shuffle", True):
        flags.append("--no-shuffle")
    flags.append(f"--prompt {params['prompt']}")
    if backend.get("kind") == "openai":
        flags += [f"--backend openai --base-url {backend.get('base_url')} --model {backend.get('model')}"]
    return flags


def export_run(store: Store, run_id: str, out: str | Path, *, fmt: str | None = None, which: str = "selected",
               batch_size: int | None = None, record: bool = True) -> Any:
    """Write a run's picks for annotation, with a manifest beside them.

    Args:
        store: the workspace.
        run_id: the run.
        out: a file path (its extension picks the format) or a folder.
        fmt: csv (default), jsonl, parquet or labelstudio.
        which: "selected" (not rejected), "accepted" or "all".
        batch_size: rows per file; None writes one file.
        record: remember the exported picks, so a later retry never drops them from the selection (the
            Export page prepares its download without recording, and records when it is downloaded).

    Returns:
        An export.ExportResult.
    """
    from selectllm_core.runs.export import write_export

    frame = selection_frame(store, run_id, which=which)
    kwargs = {"fmt": fmt} if fmt else {}
    result = write_export(frame, out=out, run_id=run_id, manifest=manifest(store, run_id, which=which),
                          batch_size=batch_size, **kwargs)
    if record:
        store.mark_exported(run_id, frame["id"])
    return result
