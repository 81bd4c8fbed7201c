"""The `selectllm` commands for SelectLLM runs and the workspace: load, embed, plan, run, retry, status, runs,
pools, export, prompts, doctor. Errors are converted once, by the group (cli/__init__.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from selectllm_core import pipeline
from selectllm_core.cli.options import (
    LOCAL_NOTE,
    Bars,
    apply,
    backend_from,
    backend_options,
    budget_option,
    column_options,
    embed_model_option,
    engine_option,
    export_options,
    json_option,
    open_store,
    param_options,
    pool_from,
    spend_options,
    workspace_option,
)
from selectllm_core.embed import embedder_for
from selectllm_core.embed.neardup import DEFAULT_TAU, pool_near_duplicates, report_lines
from selectllm_core.embed.neardup import keep_one_per_group as keep_one_per_group_of
from selectllm_core.errors import ConfigError
from selectllm_core.llm.local import LocalLlamaBackend, stop_model_processes
from selectllm_core.llm.prices import money
from selectllm_core.methods.selectllm import PARAMS, estimate
from selectllm_core.pool.load import column_map, load_pool
from selectllm_core.runs.evidence import run_evidence
from selectllm_core.runs.export import FORMATS
from selectllm_core.runs.picks import WHICH
from selectllm_core.select.prompts import KNOWN, PRESETS

near_dup_option = click.option(
    "--near-dup-tau", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_TAU, show_default=True,
    help="Near-duplicate groups: rows whose embeddings have cosine similarity at or above this (faiss range search).")


@click.command()
@click.argument("pool")
@near_dup_option
@click.option("--keep-one-per-group", is_flag=True,
              help="Also store the pool with one row per near-duplicate group (a pool of its own; run on its id).")
@click.option("--no-near-dups", is_flag=True, help="Skip the near-duplicate groups (they need the pool's embeddings).")
@workspace_option
@column_options
def load(pool: str, near_dup_tau: float, keep_one_per_group: bool, no_near_dups: bool, workspace: str | None,
         columns: dict) -> None:
    """Check a pool file (CSV, TSV, JSONL, JSON, Parquet), store it, and report its near-duplicate groups."""
    p = load_pool(pool, columns=column_map(pool, **columns))  # always a file: `load` stores what it reads
    store = open_store(workspace)
    saved = store.save_pool(p)
    r = p.report
    click.echo(f"pool {saved.pool_id} ({p.name}): {r.rows_kept} rows kept of {r.rows_read} read; schema {r.schema}")
    click.echo(f"  {saved.message}")
    click.echo(f"  dropped {r.duplicates_dropped} exact duplicates, {r.empty_dropped} empty rows, "
               f"{len(r.bad_rows)} bad rows")
    for row, message in r.bad_rows[:10]:
        click.echo(f"  row {row}: {message}")
    for note in getattr(r, "notes", []):
        click.echo(f"  note: {note}")
    if no_near_dups:
        return
    dups = pool_near_duplicates(p, tau=near_dup_tau, progress=lambda d, t: None)
    for line in report_lines(dups, pool=p):
        click.echo(f"  {line}")
    if keep_one_per_group and dups.groups:
        kept = keep_one_per_group_of(p, dups)
        done = store.save_pool(kept)
        click.echo(f"  one per group: pool {done.pool_id} ({kept.name}), {len(kept.frame):,} rows. {done.message}")


@click.command()
@click.argument("pool")
@embed_model_option
@workspace_option
@column_options
@engine_option
def embed(pool: str, embed_model: str | None, workspace: str | None, columns: dict, engine: str) -> None:
    """Embed a pool (cached: a second call embeds nothing)."""
    p = pool_from(open_store(workspace), pool, columns)
    res = pipeline.embed(p, embed_model=embed_model, progress=Bars(), engine=engine)
    click.echo(f"{len(res.vectors)} vectors ({res.model_id}): {res.computed} computed, {res.cached} from cache")


@click.command()
@click.argument("pool")
@budget_option
@param_options(PARAMS)  # every run parameter: the split shapes the plan, the prompt the tokens
@near_dup_option
@click.option("--no-response-cache", "no_response_cache", is_flag=True,
              help="Estimate as if no answer were cached.")
@backend_options
@workspace_option
@column_options
def plan(pool: str, budget: int, workspace: str | None, columns: dict, no_response_cache: bool, near_dup_tau: float,
         **o: Any) -> None:
    """Show how a budget is spread over subsets, the cluster sizes, and the calls, tokens and cost before any call."""
    store = open_store(workspace)
    p = pool_from(store, pool, columns)
    backend = backend_from(o)
    config = pipeline.RunConfig(budget=budget, **o)
    vectors = pipeline.embed(p, embed_model=config.embed_model, progress=Bars()).vectors
    b, sp, spend = estimate(p, config, backend=backend, store=store, vectors=vectors,
                            responses=not no_response_cache)
    click.echo(b.describe())
    sizes = np.bincount(sp.padded_clusters[sp.padded_clusters >= 0]) if sp.n_clusters else np.array([])
    shown = [len(s) for s in sp.subsets]
    click.echo(f"{config.split} split: {sp.n_clusters} clusters" + (f" of {sizes.min()}..{sizes.max()} rows (padded)"
               if len(sizes) else "") + f"; subsets hold {min(shown)}..{max(shown)} rows")
    for line in spend.lines():
        click.echo(line)
    for line in report_lines(pool_near_duplicates(p, tau=near_dup_tau, vectors=vectors), pool=p):  # cached
        click.echo(line)


@click.command()
@click.argument("pool")
@budget_option
@param_options(PARAMS)
@engine_option
@backend_options
@spend_options
@export_options
@click.option("--no-export", is_flag=True, help="Only run the selection; export later with `selectllm export`.")
@json_option
@workspace_option
@column_options
def run(pool: str, budget: int, workspace: str | None, columns: dict, engine: str, out: str | None,
        fmt: str | None, no_export: bool, as_json: bool, max_cost: float | None, no_response_cache: bool,
        **o: Any) -> None:
    """Run the whole pipeline: load, embed, split, ask the model, trim to the budget, export.

    Running the same command again resumes it: finished subsets are not called again. The export goes to
    --out, else exports/RUN_ID.csv.
    """
    store = open_store(workspace)
    local = o["backend"] == "local"
    backend = backend_from(o)
    config = pipeline.RunConfig(budget=budget, **o)
    if local and not as_json:
        click.echo(LOCAL_NOTE.format(what="selections"), err=True)
    result = pipeline.run(pool_from(store, pool, columns), config, store=store, backend=backend, progress=Bars(),
                          engine=engine, responses=not no_response_cache, max_cost=max_cost)
    report = {"run_id": result.run_id, "pool_id": result.pool_id, "pool": result.pool_saved.message,
              "plan": result.plan.describe(), **result.summary, "stats": result.stats}
    if not no_export and result.summary["selected"]:
        exp = pipeline.export_run(store, result.run_id, out or f"exports/{result.run_id}.csv", fmt=fmt)
        report["export"] = ([str(f) for f in exp.files] + [str(exp.manifest_path)]
                            + ([str(exp.config_path)] if exp.config_path else []))
    _report(report, as_json)


def _report(out: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    s = out["stats"]
    click.echo(f"pool {out['pool_id']}: {out['pool']}")
    click.echo(f"run {out['run_id']}: {out['plan']}")
    click.echo(f"  embeddings: {s['embedded_new']} computed, {s['embedded_cached']} from cache; "
               f"LLM calls this time: {s['llm_calls_sent']} sent, {s['llm_answers_cached']} answered by the "
               f"response cache ({s['response_cache']}); spent {money(s['cost'])} ({s['price_source']})")
    click.echo(f"  subsets: {out['subsets']}; selected {out['selected']} of {out['budget']}")
    if out["short_by"]:
        click.echo(f"  {out['short_by']} rows short: some subsets failed. See `selectllm status {out['run_id']}` "
                   f"and `selectllm retry {out['run_id']}`. No picks were invented.")
    for path in out.get("export", []):
        click.echo(f"  wrote {path}")


@click.command()
@click.argument("run_id")
@click.option("--subset", "subsets", type=int, multiple=True, help="Retry these subsets (default: all not ok).")
@backend_options
@spend_options
@workspace_option
def retry(run_id: str, subsets: tuple[int, ...], workspace: str | None, max_cost: float | None,
          no_response_cache: bool, **o: Any) -> None:
    """Call the failed subsets of a run again (same backend settings as the run); the model is asked anew."""
    out = pipeline.retry_failed(open_store(workspace), run_id, backend=backend_from(o),
                                subsets=list(subsets) or None, progress=Bars(), max_cost=max_cost,
                                responses=not no_response_cache)
    click.echo(json.dumps(out, indent=2))


@click.command("check-orders")
@click.argument("run_id")
@click.option("--subsets", type=click.IntRange(min=1), default=4, show_default=True,
              help="Usable subsets to ask again in reversed order: this many more calls.")
@backend_options
@workspace_option
@click.option("--no-response-cache", is_flag=True, help="Send every request, even one answered before.")
def check_orders(run_id: str, subsets: int, workspace: str | None, no_response_cache: bool, **o: Any) -> None:
    """Measure a run's order consistency: re-ask a sample of its subsets in reversed order (picks stay)."""
    store = open_store(workspace)
    pipeline.check_orders(store, run_id, backend=backend_from(o), subsets=subsets, responses=not no_response_cache)
    evidence = run_evidence(store, run_id)
    click.echo(evidence.consistency.verdict())
    if evidence.warning:
        click.echo(f"WARNING: {evidence.warning}")


@click.command()
@click.argument("run_id")
@click.option("--failed", is_flag=True, help="Show only subsets that are not ok, with their raw answers.")
@workspace_option
def status(run_id: str, failed: bool, workspace: str | None) -> None:
    """Show a run: parameters, usage, and each subset's outcome."""
    store = open_store(workspace)
    run = store.get_run(run_id)
    click.echo(f"run {run_id} [{run['status']}] method {run['method']} backend {run['backend']}")
    u = store.usage(run_id)
    unpriced = f" ({u['unpriced']} call(s) of a model with no price: `selectllm prices set`)" if u["unpriced"] else ""
    click.echo(f"  calls: {u['calls']} answers, {u['sent']} sent, {u['cached']} from the response cache; tokens "
               f"sent: {u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} answer; spent "
               f"{money(u['cost'])}{unpriced}")
    click.echo(f"  answer formats: {u['answer_formats']}")
    for r in pipeline.rounds(store, run_id):  # a tournament: what each round asked and cost
        click.echo(f"  round {r['round']}: {r['rows']:,} rows in {r['subsets']:,} subsets, {r['picks_per_subset']} "
                   f"pick(s) each; {r['calls']:,} answers ({r['cached']:,} from the cache); tokens sent "
                   f"{r['prompt_tokens']:,} + {r['completion_tokens']:,}; spent {money(r['cost'])}")
    for line in pipeline.degradations(store, run_id):
        click.echo(f"  degraded: {line}")
    if run["method"] == pipeline.METHOD:  # the reasons are checked with the run's embedding model
        try:
            evidence = run_evidence(store, run_id, embedder=embedder_for(run["params"].get("embed_model")))
        except ConfigError as exc:  # the rest of the evidence still stands: say why the reasons are unchecked
            evidence = run_evidence(store, run_id)
            click.echo(f"  reasons: not checked: {exc}")
        for line in evidence.lines():
            click.echo(f"  {line}")
        if evidence.warning:
            click.echo(f"  WARNING: {evidence.warning}")
    for r in store.subset_results(run_id):
        if failed and r["status"] == "ok":
            continue
        click.echo(f"  subset {r['subset']}: {r['status']} picks={r['picks']}" +
                   (f" error={r['error']!r}" if r["error"] else "") + (f" note={r['note']!r}" if r["note"] else ""))
        if r["status"] != "ok":
            for i, raw in enumerate(r["raw"], start=1):
                click.echo(f"    answer {i}: {raw[:300]!r}")


@click.command()
@workspace_option
def runs(workspace: str | None) -> None:
    """List the runs in the workspace."""
    click.echo(open_store(workspace).list_runs().to_string(index=False))


@click.command()
@workspace_option
def pools(workspace: str | None) -> None:
    """List the pools in the workspace."""
    click.echo(open_store(workspace).list_pools().to_string(index=False))


@click.command()
@click.argument("run_id")
@apply([
    click.option("--out", "-o", type=click.Path(), required=True, help="File or folder to write."),
    click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                 help="Default: from the file extension, else csv."),
    click.option("--which", type=click.Choice(WHICH), default="selected", show_default=True,
                 help="selected: every pick not rejected; accepted: only accepted picks."),
    click.option("--batch-size", type=click.IntRange(1), default=None, help="Rows per file (annotation batches)."),
])
@workspace_option
def export(run_id: str, out: str, fmt: str | None, which: str, batch_size: int | None,
           workspace: str | None) -> None:
    """Export a run's picks for annotation, with a manifest that makes the run repeatable."""
    res = pipeline.export_run(open_store(workspace), run_id, out, fmt=fmt, which=which, batch_size=batch_size)
    config = f", labeling config {res.config_path}" if res.config_path else ""
    click.echo(f"{res.rows} rows -> " + ", ".join(str(f) for f in res.files) + f" (manifest {res.manifest_path}{config})")


@click.command()
@click.argument("name", required=False)
def prompts(name: str | None) -> None:
    """List the prompt presets, or print one (to copy into a template file)."""
    if name:
        if name not in PRESETS:
            raise ConfigError(f"No preset {name!r}; presets: {', '.join(PRESETS)}.")
        click.echo(PRESETS[name].template)
        return
    for p in PRESETS.values():
        click.echo(f"{p.name:14} {p.title}: {p.description}")
    click.echo("\nPlaceholders: " + ", ".join(f"{{{k}}}" for k in KNOWN))


@click.command()
@click.option("--model", default=None, help="GGUF file to check (default: the bundled SmolLM2-135M).")
def doctor(model: str | None) -> None:
    """Check that the local model answers, run in its own process (the install runs this right away)."""
    stamp = Path(sys.prefix) / "selectllm-llama-build.json"
    if stamp.is_file():
        built = json.loads(stamp.read_text())
        sets = ", ".join(o.removeprefix("GGML_").lower() for o in built.get("enabled", [])) or "baseline x86-64"
        click.echo(f"llama-cpp-python {built.get('version')} built for: {sets}")
    backend = LocalLlamaBackend(model, n_ctx=512)
    start = time.perf_counter()
    try:
        answer = backend.chat([{"role": "user", "content": "Reply with the single word OK."}], max_tokens=8)
    finally:
        stop_model_processes()
    if not answer.completion_tokens:
        raise click.ClickException("The local model loaded but generated nothing; reinstall with "
                                   "`bash scripts/install.sh`.")
    click.echo(f"local model {answer.model}: answered {answer.text.strip()[:40]!r} in "
               f"{time.perf_counter() - start:.1f} s, in a child process")


COMMANDS = (load, embed, plan, run, retry, check_orders, status, runs, pools, export, prompts, doctor)
