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
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from selectllm_core.embed import Embedder, EmbeddingCache, EmbedResult, embed_texts, embedder_for
from selectllm_core.engines import StageProgress, UnitOutcome, executor_for
from selectllm_core.engines.meter import CacheChoice, Meter, response_cache
from selectllm_core.engines.ray import embed_texts_with_ray  # ray itself loads only when used
from selectllm_core.errors import BackendError, ConfigError
from selectllm_core.llm import ChatBackend, backend_identity, can_score, make_backend
from selectllm_core.llm.prices import price_for
from selectllm_core.methods.base import Method, MethodResult, Param
from selectllm_core.pool.load import Pool, load_pool, sample_pool
from selectllm_core.select.context import subset_cap
from selectllm_core.select.listwise import Candidate, PromptSpec, ask_one, execute, finalize
from selectllm_core.select.orders import CHECK, MAX_ORDERS, VOTE, Consistency, check_sample, run_consistency
from selectllm_core.select.prompts import PRESETS, check, load_template
from selectllm_core.select.scores import AGGREGATIONS, execute_scores
from selectllm_core.select.spend import SpendEstimate, estimate_spend, subset_requests
from selectllm_core.split import STRATEGIES, BudgetPlan, SubsetPlan, make_subsets, plan_budget
from selectllm_core.split.budget import replan
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
    Param("orders", int, 1, "Show each subset in this many orders and aggregate the picks with Borda counts, "
          "against position bias (1: once, as the paper; P orders cost P times the calls). Gives the run's order "
          f"consistency. At most {MAX_ORDERS}.", min=1, max=MAX_ORDERS),
    Param("aggregation", str, "borda", "How the orders' answers become picks. borda: every order is a generated "
          "answer with reasons, and Borda counts combine them. scores: every order is a score pass that reads the "
          "probability of each id at the answer's first slot (no ids or reasons generated), each id's probability "
          "is divided by the probability the run's passes give its position, and one reasoned call per subset "
          "explains the best-scored picks (P score passes + 1 call; needs a backend that scores answer tokens: the "
          "local model, or a server that returns logprobs, where a pass writes the answer's first few tokens). "
          "Measured by benchmarks/bench_judge.py on 6 Dolly subsets with Qwen2.5-Coder-1.5B: with 4 orders, "
          "scores agreed with themselves 0.50-0.58 against Borda's 0.33 (chance 0.20) at about 0.6x Borda's time; "
          "with 8 orders 0.58 against 0.25 at about half its time; with 1 or 2 orders scores were at chance, and "
          "the bundled SmolLM2 is at chance either way.", choices=AGGREGATIONS, setting=True),
    Param("check_orders", int, 0, "With one order: ask this many sampled subsets again in reversed order, to "
          "measure order consistency (N more calls; the picks stay the paper's).", min=0),
    Param("max_input_chars", int, None, "Cut each input to this many characters in the prompt (saves tokens on "
          "long contexts, and more candidates then fit the context).", min=1),
    Param("embed_model", str, None, "minilm-int8 (about 2.4x faster, near-exact), model2vec (fastest, "
          "approximate), or a sentence-transformers model name or folder (default: the bundled all-MiniLM-L6-v2).",
          ui=False),
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
    orders: int = 1
    check_orders: int = 0
    max_input_chars: int | None = None
    embed_model: str | None = None
    sample: int | None = None
    aggregation: str = "borda"

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


def check_can_score(aggregation: str | None, backend: ChatBackend) -> None:
    """ConfigError, before any work, when the scores aggregation is asked of a backend that gives no id probabilities."""
    if aggregation == "scores" and not can_score(backend):
        raise ConfigError(f"The scores aggregation reads the probability of each answer id, and the {backend.name} "
                          "backend does not give it. Use the local backend or a server that returns logprobs, "
                          "or --aggregation borda.")


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


def estimate(pool: Pool, config: RunConfig, *, backend: ChatBackend, store: Store, vectors: Any = None,
             responses: CacheChoice = True, exact: bool = True) -> tuple[BudgetPlan, SubsetPlan, SpendEstimate]:
    """What a run will send and cost before anything is sent: its plan, its split and the spend estimate.

    `selectllm plan` and the app's Prompt page estimate through here, so they show the same numbers; requests
    already in the response cache count as free.

    Args:
        pool: the pool (sampled by `config.sample` as `run` would).
        config: the run's parameters.
        backend: the backend the run will use.
        store: the workspace (its price table prices the calls).
        vectors: the pool's embeddings (None: embedded through the cache).
        responses: the response cache the run will read.
        exact: count prompt tokens with the backend's tokenizer when it has one.
    """
    if config.sample:
        pool = sample_pool(pool, config.sample, seed=config.seed)
    budget_plan = plan(pool, config, backend=backend)
    if vectors is None:
        vectors = embed(pool, embed_model=config.embed_model).vectors
    split = make_subsets(vectors, budget_plan, strategy=config.split, random_state=config.seed)
    template, answer_format = load_template(config.prompt)
    spec = PromptSpec(template, answer_format, config.domain, config.max_tokens, config.max_input_chars)
    requests = subset_requests(pool.frame, split.subsets, split.cluster_of, prompt=spec,
                               k=budget_plan.picks_per_subset, seed=config.seed, shuffle=config.shuffle,
                               orders=config.orders, checks=order_checks(config, budget_plan.n_subsets))
    spend = estimate_spend(requests, backend=backend, price=price_for(backend.describe(), store.prices()),
                           answer_format=answer_format, max_tokens=config.max_tokens,
                           cache=response_cache(responses), exact=exact, rounds=budget_plan.rounds,
                           orders=config.orders, aggregation=config.aggregation)
    return budget_plan, split, spend


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
    if budget_plan.next_rounds:  # a tournament (runs made before rounds trimmed instead, and keep their ids)
        extra["rounds"] = len(budget_plan.rounds)
    # orders, the order check and the aggregation join the id only when used, so runs made before them keep their ids
    fields = {k: v for k, v in asdict(config).items() if (k, v) not in (("orders", 1), ("check_orders", 0),
                                                                         ("aggregation", "borda"))}
    key = json.dumps({"pool": pool.pool_id, "method": NAME, "config": fields, "template": template,
                      "backend": backend_identity(backend.describe()), **extra}, sort_keys=True)
    return "run-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def subsets_from_plan(store: Store, run_id: str, pool: Pool, *, round_: int = 1) -> dict[int, list[Candidate]]:
    """Rebuild every subset's rows of a round from the stored plan (members ordered by cluster, then position)."""
    stored = (store.plan(run_id) if round_ == 1 else store.round_plan(run_id, round_)).sort_values(
        ["subset", "cluster", "position"])
    frame = pool.frame.set_index("id")
    subsets: dict[int, list[Candidate]] = {}
    for subset, group in stored.groupby("subset", sort=True):
        rows = frame.loc[group["id"]]
        subsets[int(subset)] = [Candidate(str(i), str(r.instruction), str(r.input)) for i, r in rows.iterrows()]
    return subsets


def run(
    source: Any, config: RunConfig, *, store: Store | None = None, backend: ChatBackend | None = None,
    embedder: Embedder | None = None, cache: EmbeddingCache | None = None, progress: StageProgress | None = None,
    engine: str = "local", responses: CacheChoice = True, max_cost: float | None = None,
    cancel: threading.Event | None = None,
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
        responses: the response cache (True: the cache folder's; False: off). A request answered before is
            not sent again, so a run that differs only in budget or trimming makes no call.
        max_cost: stop before the call that could take this run's spending past this (the price table's money);
            the same call with a higher cap resumes the run.
        cancel: set it to stop the run cleanly (no new call starts; RunStopped; resuming continues it).

    Returns:
        A RunResult; `stats` counts new embeddings, LLM calls sent, answers from the cache and money spent.

    Raises:
        SpendCapReached: the cap was reached (finished subsets are kept; the run is interrupted).
    """
    SELECTLLM.resolve(config.params())  # the registry's bounds, for the Python API as for the CLI
    store = store or Store()
    cache = cache or EmbeddingCache()
    backend = backend or make_backend("local")
    check_can_score(config.aggregation, backend)
    meter = Meter.for_backend(store, backend, cache=response_cache(responses) if engine == "local" else None,
                              max_cost=max_cost, cancel=cancel)
    executor = executor_for(engine, backend, meter=meter)  # an unknown engine fails here, before any work
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
    # 4. the model, subset by subset and round by round (the run driver skips finished subsets)
    t0 = time.perf_counter()
    calls_before = store.count_calls(run_id)
    try:
        final = ask_rounds(store, run_id, pool, emb.vectors, config, budget_plan, executor=executor, meter=meter,
                           prompt=PromptSpec(template, answer_format, config.domain, config.max_tokens,
                                             config.max_input_chars), progress=progress)
    finally:  # an executor that keeps workers across rounds (Ray actors) stops them with the run
        getattr(executor, "close", lambda: None)()
    stats.update(llm_calls_new=store.count_calls(run_id) - calls_before, llm_seconds=time.perf_counter() - t0,
                 rounds=final, **meter.summary())
    # 5. trim the last round's picks to the budget
    summary = finalize(store, run_id, budget_plan.budget, subsets=final_subsets(store, run_id))
    return RunResult(run_id=run_id, pool_id=pool.pool_id, plan=budget_plan, summary=summary, stats=stats,
                     store=store, pool_saved=saved)


def ask_rounds(store: Store, run_id: str, pool: Pool, vectors: Any, config: RunConfig, budget_plan: BudgetPlan, *,
               executor: Any, meter: Meter, prompt: PromptSpec, progress: StageProgress | None = None,
               start: int = 1) -> int:
    """Ask the model every subset of every round, from round `start` on; returns the number of the last round.

    Round 1 is the stored plan. When a round had more subsets than the budget, its winners (every usable
    subset's picks, in subset order) are split again with the run's split over their own embeddings and asked
    again; a stored round is read back, so a stopped run resumes inside any round. A round with subsets that
    could not reach the model stops the tournament (BackendError): the next round needs all its winners.
    """
    position = {rid: i for i, rid in enumerate(pool.frame["id"].tolist())}
    rounds = {r["round"]: r for r in store.rounds(run_id)}
    if 1 not in rounds:
        store.save_round(run_id, 1, first_subset=0, plan=_round_record(budget_plan))
        rounds = {r["round"]: r for r in store.rounds(run_id)}
    r = start
    while True:
        info = rounds[r]
        units = subsets_from_plan(store, run_id, pool, round_=r)
        stage = f"select round {r}" if budget_plan.next_rounds or len(rounds) > 1 else "select"
        if config.aggregation == "scores":
            execute_scores(store, run_id, units, executor=executor, k=info["plan"]["picks_per_subset"],
                           prompt=prompt, seed=config.seed, shuffle=config.shuffle, orders=config.orders,
                           progress=_staged(progress, stage), meter=meter)
        else:
            execute(store, run_id, units, executor=executor, k=info["plan"]["picks_per_subset"], prompt=prompt,
                    seed=config.seed, shuffle=config.shuffle, progress=_staged(progress, stage), meter=meter,
                    orders=config.orders, checks=order_checks(config, info["n_subsets"]) if r == 1 else frozenset())
        if info["n_subsets"] <= budget_plan.budget:  # few enough subsets: their picks are trimmed to the budget
            return r
        results = [x for x in store.subset_results(run_id) if x["subset"] in units]
        missing = [x["subset"] for x in results if x["status"] == "error"] + sorted(set(units) - {
            x["subset"] for x in results})
        if missing:
            store.set_run_status(run_id, "interrupted")
            raise BackendError(
                f"Round {r} has {len(missing)} subset(s) that could not reach the model (e.g. subset {missing[0]}); "
                "the next round needs every winner. Fix the backend and run the same command again: finished "
                "subsets are kept.")
        winners = list(dict.fromkeys(p for x in results if x["status"] == "ok" for p in x["picks"]))
        if len(winners) <= budget_plan.budget:  # failed subsets passed fewer on than planned: these are all
            return r
        if r + 1 not in rounds:
            try:
                nxt = replan(budget_plan, len(winners), subset_size=config.subset_size,
                             picks_per_subset=config.picks_per_subset)
            except ConfigError:  # too few winners for another round (the plan says so): these are trimmed
                return r
            split = make_subsets(vectors[[position[w] for w in winners]], nxt, strategy=config.split,
                                 random_state=config.seed)
            first = info["first_subset"] + info["n_subsets"]
            subset_of = split.subset_of()
            store.save_round(run_id, r + 1, first_subset=first, plan=_round_record(nxt),
                             rows=[(w, i, int(split.cluster_of[i]), first + int(subset_of[i]))
                                   for i, w in enumerate(winners)])
            rounds = {x["round"]: x for x in store.rounds(run_id)}
        r += 1


def order_checks(config: RunConfig | dict, n_subsets: int) -> frozenset[int]:
    """The round-1 subsets a one-order run asks again in reversed order (`check_orders` of them, seeded)."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    if get("orders", 1) != 1 or get("aggregation", "borda") == "scores":
        return frozenset()
    return frozenset(check_sample(n_subsets, get("check_orders", 0) or 0, seed=get("seed", 0)))


def _round_record(plan_: BudgetPlan) -> dict:
    """A round's plan as the workspace keeps it (without the later rounds it foresaw)."""
    return {k: v for k, v in asdict(plan_).items() if k != "next_rounds"}


def _staged(progress: StageProgress | None, stage: str) -> StageProgress | None:
    """Progress of one round under its own stage name ("select round 2")."""
    if progress is None or stage == "select":
        return progress
    return lambda _stage, done, total: progress(stage, done, total)


def final_subsets(store: Store, run_id: str) -> set[int] | None:
    """The subsets whose picks make the selection: the last round's (None: the run has one round)."""
    rounds = store.rounds(run_id)
    if len(rounds) <= 1:
        return None
    last = rounds[-1]
    return set(range(last["first_subset"], last["first_subset"] + last["n_subsets"]))


def check_orders(store: Store, run_id: str, *, backend: ChatBackend, subsets: int = 4,
                 responses: CacheChoice = True) -> Consistency:
    """Measure a finished run's order consistency: ask a sample of its usable round-1 subsets again, reversed.

    The answers are evidence only: the run's picks and selection do not change. Subsets already shown in
    several orders are left out; the calls are recorded in the ledger with their cost (`subsets` more calls,
    plus a repair per unusable answer). The backend must be the run's.

    Returns:
        The run's order consistency with the new answers.
    """
    stored = store.get_run(run_id)
    if stored["method"] != NAME:
        raise ConfigError(f"Run {run_id} is a {stored['method']} run: order consistency is measured for SelectLLM "
                          "runs, whose model chooses among shown candidates.")
    if backend_identity(backend.describe()) != backend_identity(stored["backend"]):
        raise ConfigError(f"Run {run_id} used backend {stored['backend']}, not {backend.describe()}: check it with "
                          "the same backend settings.")
    if subsets < 1:
        raise ConfigError(f"Check at least 1 subset (got {subsets}).")
    params, pool = stored["params"], store.load_pool(stored["pool_id"])
    round_one = subsets_from_plan(store, run_id, pool)
    open_ = [r for r in store.subset_results(run_id)
             if r["status"] == "ok" and not r["orders"] and r["subset"] in round_one]
    chosen = sorted(check_sample(len(open_), subsets, seed=params.get("seed", 0)))
    meter = Meter.for_backend(store, backend, cache=response_cache(responses))
    metered = meter.wrap(backend)
    prompt = PromptSpec(stored["prompt"], params["answer_format"], params["domain"], params["max_tokens"],
                        params.get("max_input_chars"))
    for r in (open_[i] for i in chosen):
        by_id = {c.row_id: c for c in round_one[r["subset"]]}
        shown = [by_id[rid] for rid in r["members"]][::-1]
        out = UnitOutcome(subset=r["subset"], status="ok", members=r["members"])
        got = ask_one(metered, shown, k=len(r["picks"]), prompt=prompt, out=out)
        for call in out.calls:
            if call.get("cost") is None and call.get("ok", True):
                call["cost"] = meter.cost_of(call)
        if out.status == "error" and not out.calls:  # refused before sending (stopped): nothing to record
            raise BackendError(out.error or "the check was not sent")
        picks = got[0] if isinstance(got, tuple) else None
        store.add_orders(run_id, r["subset"], [
            {"role": VOTE, "shown": r["members"], "picks": r["picks"]},
            {"role": CHECK, "shown": [c.row_id for c in shown], "picks": picks}], out.calls)
        if out.status == "error":  # the backend could not be reached: say so, keep what was measured
            raise BackendError(f"{out.error} (order check of subset {r['subset']}; the subsets checked before it "
                               "are recorded)")
    return run_consistency(store.subset_results(run_id))


def retry_failed(store: Store, run_id: str, *, backend: ChatBackend, subsets: list[int] | None = None,
                 progress: StageProgress | None = None, responses: CacheChoice = True,
                 max_cost: float | None = None, cancel: threading.Event | None = None,
                 embedder: Embedder | None = None, cache: EmbeddingCache | None = None) -> dict:
    """Call failed (or the given) subsets of a stored run again, then re-trim the selection.

    The backend must describe itself as the run's backend did, so a retry cannot mix models silently. A retry
    asks the model again (it does not read the response cache) and stores the new answers there. A retried
    subset of a tournament's earlier round can change its winners, so the rounds after it are played again
    (through the response cache: requests that did not change cost nothing); `embedder` and `cache` give the
    winners' embeddings (default: the run's embedding model, through the cache).
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
    check_can_score(params.get("aggregation"), backend)
    meter = Meter.for_backend(store, backend, cache=response_cache(responses), max_cost=max_cost, read_cache=False,
                              cancel=cancel)
    prompt = PromptSpec(stored["prompt"], params["answer_format"], params["domain"], params["max_tokens"],
                        params.get("max_input_chars"))
    rounds = store.rounds(run_id) or [{"round": 1, "first_subset": 0, "n_subsets": len(every),
                                       "plan": params["budget_plan"]}]
    counts = dict.fromkeys(("ok", "failed", "error", "skipped", "called"), 0)
    for info in rounds:  # each round's subsets with that round's picks per subset
        units = every if info["round"] == 1 else subsets_from_plan(store, run_id, pool, round_=info["round"])
        mine = {s: units[s] for s in targets if s in units}
        if mine:
            checks = order_checks(params, info["n_subsets"]) if info["round"] == 1 else frozenset()
            if params.get("aggregation") == "scores":  # the prior stays the whole round's
                got = execute_scores(store, run_id, mine, executor=executor_for("local", backend, meter=meter),
                                     meter=meter, k=info["plan"]["picks_per_subset"], prompt=prompt,
                                     seed=params["seed"], shuffle=params["shuffle"], progress=progress,
                                     orders=params.get("orders", 1), prior_over=list(units))
            else:
                got = execute(store, run_id, mine, backend=meter.wrap(backend), meter=meter,
                              k=info["plan"]["picks_per_subset"], prompt=prompt, seed=params["seed"],
                              shuffle=params["shuffle"], progress=progress, orders=params.get("orders", 1),
                              checks=checks)
            counts = {key: counts[key] + got.get(key, 0) for key in counts}
    changed = [info["round"] for info in rounds if any(
        info["first_subset"] <= s < info["first_subset"] + info["n_subsets"] for s in targets)]
    if changed and changed[0] < rounds[-1]["round"]:  # new winners: the later rounds are played again
        store.drop_rounds_after(run_id, changed[0])
        config = RunConfig(**{f: params[f] for f in RunConfig.__dataclass_fields__ if f in params})
        vectors = embed(pool, embed_model=params.get("embed_model"), embedder=embedder, cache=cache).vectors
        plan_ = _stored_plan(params["budget_plan"])
        again = Meter.for_backend(store, backend, cache=response_cache(responses), max_cost=max_cost, cancel=cancel)
        ask_rounds(store, run_id, pool, vectors, config, plan_, executor=executor_for("local", backend, meter=again),
                   meter=again, prompt=prompt, progress=progress, start=changed[0])
    return {**finalize(store, run_id, params["budget"], subsets=final_subsets(store, run_id)), "retried": counts}


def _stored_plan(record: dict) -> BudgetPlan:
    """A BudgetPlan from the run's stored parameters (later rounds are planned again from their winners)."""
    return BudgetPlan(**{k: v for k, v in record.items() if k != "next_rounds"})


def run_as_method(source: Any, *, budget: int, store: Store | None = None, embedder: Embedder | None = None,
                  cache: EmbeddingCache | None = None, backend: ChatBackend | None = None,
                  progress: StageProgress | None = None, responses: CacheChoice = True,
                  cancel: threading.Event | None = None, **params: Any) -> MethodResult:
    """`run`, called the way the registry calls every method (the Compare page, `methods.run_method`)."""
    result = run(source, RunConfig(budget=budget, **params), store=store, backend=backend, embedder=embedder,
                 cache=cache, progress=progress, responses=responses, cancel=cancel)
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
