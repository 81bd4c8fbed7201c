"""The `selectllm` command: the whole pipeline in one subcommand, and one subcommand per step."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from selectllm_core.errors import SelectLLMError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _friendly(func: Callable) -> Callable:
    """Turn the core's errors into a one-paragraph message and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SelectLLMError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted. Run the same command again to resume: finished work is kept.", err=True)
            sys.exit(130)

    return wrapper


def _store(workspace: str | None) -> Any:
    from selectllm_core.store import Store

    return Store(workspace)


workspace_option = click.option(
    "--workspace", "-w", type=click.Path(dir_okay=False), default=None,
    help="Workspace file (SQLite). Default: $SELECTLLM_WORKSPACE or ./selectllm-workspace.sqlite.")


engine_option = click.option(
    "--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
    help="local: this process. ray: embedding and LLM calls on a Ray cluster ($RAY_ADDRESS, else a local Ray; "
         "pip install -r requirements-scale.txt). Results, cache and resume are the same.")


def backend_options(func: Callable) -> Callable:
    """Options choosing the chat backend."""
    for opt in reversed([
        click.option("--backend", type=click.Choice(["local", "openai"]), default="local", show_default=True,
                     help="local: the bundled SmolLM2-135M (offline, too small to judge quality; for trying the "
                          "studio). openai: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp)."),
        click.option("--model", default=None,
                     help="local: a GGUF file; openai: the model name (for example gpt-4o-mini)."),
        click.option("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Environment variable that holds the API key (the key itself is never stored)."),
        click.option("--concurrency", type=int, default=None, help="Calls in flight (openai backend)."),
        click.option("--context-window", type=int, default=None,
                     help="The model's context window in tokens; subsets are capped so each prompt fits "
                          "(default: the local model's n_ctx, else the published window of known models, else "
                          "8192)."),
    ]):
        func = opt(func)
    return func


def _backend(backend: str, model: str | None, base_url: str | None, api_key_env: str,
             concurrency: int | None, context_window: int | None = None) -> Any:
    from selectllm_core.llm import make_backend

    return make_backend(backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                        context_window=context_window)


def _pool(store: Any, source: str, columns: dict | None = None) -> Any:
    """A pool from a file (columns detected unless named; the run saves it), or from the workspace by pool id."""
    from selectllm_core.pipeline import column_map
    from selectllm_core.pool.load import load_pool

    if not Path(source).exists() and not any(c in source for c in "/\\."):
        return store.load_pool(source)
    return load_pool(source, columns=column_map(source, **(columns or {})))


def column_options(func: Callable) -> Callable:
    """Options naming pool columns when detection is not enough."""
    for opt in reversed([
        click.option("--instruction-column", "instruction", default=None,
                     help="Column holding the instruction (default: detected: instruction, prompt or text)."),
        click.option("--input-column", "input", default=None,
                     help="Column holding the input/context (default: detected: input or context)."),
        click.option("--id-column", "id", default=None, help="Column holding a unique row id (default: id, "
                     "else a hash of the text)."),
    ]):
        func = opt(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["columns"] = {k: kwargs.pop(k) for k in ("instruction", "input", "id")}
        return func(*args, **kwargs)

    return wrapper


class _Bars:
    """tqdm bars, one per pipeline stage."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage not in self.bars:
            label = {"embed": "embedding", "cluster": "clustering", "select": "asking the model",
                     "rate": "rating rows"}.get(stage, stage)
            self.bars[stage] = tqdm(total=total, desc=label, unit="", file=sys.stderr, dynamic_ncols=True)
        bar = self.bars[stage]
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="selectllm-studio")
def main() -> None:
    """Choose which unlabeled instructions to annotate, the SelectLLM way.

    \b
    A pool of instructions is embedded, split with equal-size K-means into diverse
    subsets, and an LLM picks the best few of each subset, saying why.
    Everything is kept in a workspace file, so runs resume and decisions persist.

    \b
    Quick start (offline, bundled models):
      selectllm run pool.jsonl --budget 100 --out batch.csv
    Step by step:
      selectllm load pool.jsonl        # check and store the pool
      selectllm plan pool.jsonl --budget 100
      selectllm run pool.jsonl --budget 100
      selectllm export RUN_ID --out batch.csv
    """


@main.command()
@click.argument("pool")
@workspace_option
@column_options
def load(pool: str, workspace: str | None, columns: dict) -> None:
    """Check a pool file (CSV, TSV, JSONL, JSON, Parquet) and store it in the workspace."""
    _friendly(_load)(pool, workspace, columns)


def _load(pool: str, workspace: str | None, columns: dict) -> None:
    from selectllm_core.pipeline import column_map
    from selectllm_core.pool.load import load_pool

    p = load_pool(pool, columns=column_map(pool, **columns))  # always a file: `load` stores what it reads
    saved = _store(workspace).save_pool(p)
    r = p.report
    click.echo(f"pool {saved.pool_id} ({p.name}): {r.rows_kept} rows kept of {r.rows_read} read; schema {r.schema}")
    click.echo(f"  {saved.message}")
    click.echo(f"  dropped {r.duplicates_dropped} exact duplicates, {r.empty_dropped} empty rows, "
               f"{len(r.bad_rows)} bad rows")
    for row, message in r.bad_rows[:10]:
        click.echo(f"  row {row}: {message}")
    for note in getattr(r, "notes", []):
        click.echo(f"  note: {note}")


@main.command()
@click.argument("pool")
@click.option("--embed-model", default=None, help="model2vec (fast, approximate), or a sentence-transformers "
              "model name or folder (default: bundled all-MiniLM-L6-v2).")
@workspace_option
@column_options
@engine_option
def embed(pool: str, embed_model: str | None, workspace: str | None, columns: dict, engine: str) -> None:
    """Embed a pool (cached: a second call embeds nothing)."""
    _friendly(_embed)(pool, embed_model, workspace, columns, engine)


def _embed(pool: str, embed_model: str | None, workspace: str | None, columns: dict, engine: str = "local") -> None:
    from selectllm_core.pipeline import embed as embed_pool

    p = _pool(_store(workspace), pool, columns)
    res = embed_pool(p, embed_model=embed_model, progress=_Bars(), engine=engine)
    click.echo(f"{len(res.vectors)} vectors ({res.model_id}): {res.computed} computed, {res.cached} from cache")


budget_options = [
    click.option("--budget", "-b", type=int, required=True, help="Rows to select for annotation."),
    click.option("--subset-size", "-s", type=int, default=None,
                 help="Candidates per LLM query (default: ceil(pool / min(1000, budget)), as in the paper)."),
    click.option("--picks-per-subset", "-k", type=int, default=None, help="Picks per query (default: derived)."),
    click.option("--split", type=click.Choice(["diverse", "similar", "random"]), default="diverse",
                 show_default=True, help="diverse: one row of every cluster per subset (the paper's method)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seeds clustering and shuffling."),
]


def _with(options: list) -> Callable:
    def deco(func: Callable) -> Callable:
        for opt in reversed(options):
            func = opt(func)
        return func
    return deco


@main.command()
@click.argument("pool")
@_with(budget_options)
@click.option("--max-input-chars", type=int, default=None, help="Cut long inputs in the prompt to this many "
              "characters, as `run` would (more candidates then fit the context).")
@backend_options
@workspace_option
@column_options
def plan(pool: str, budget: int, subset_size: int | None, picks_per_subset: int | None, split: str, seed: int,
         workspace: str | None, columns: dict, max_input_chars: int | None, **b: Any) -> None:
    """Show how a budget is spread over subsets, and the cluster sizes (no LLM calls)."""
    _friendly(_plan)(pool, budget, subset_size, picks_per_subset, split, seed, workspace, columns,
                     max_input_chars, b)


def _plan(pool: str, budget: int, subset_size: int | None, picks_per_subset: int | None, split: str, seed: int,
          workspace: str | None, columns: dict, max_input_chars: int | None, b: dict) -> None:
    import numpy as np

    from selectllm_core.pipeline import RunConfig
    from selectllm_core.pipeline import embed as embed_pool
    from selectllm_core.pipeline import plan as plan_run
    from selectllm_core.split import make_subsets

    p = _pool(_store(workspace), pool, columns)
    backend = _backend(b["backend"], b["model"], b["base_url"], b["api_key_env"], b["concurrency"],
                       b["context_window"])
    config = RunConfig(budget=budget, subset_size=subset_size, picks_per_subset=picks_per_subset, split=split,
                       seed=seed, max_input_chars=max_input_chars)
    b = plan_run(p, config, backend=backend)
    click.echo(b.describe())
    vectors = embed_pool(p, progress=_Bars()).vectors
    sp = make_subsets(vectors, b, strategy=split, random_state=seed)
    sizes = np.bincount(sp.padded_clusters[sp.padded_clusters >= 0]) if sp.n_clusters else np.array([])
    shown = [len(s) for s in sp.subsets]
    click.echo(f"{split} split: {sp.n_clusters} clusters" + (f" of {sizes.min()}..{sizes.max()} rows (padded)"
               if len(sizes) else "") + f"; subsets hold {min(shown)}..{max(shown)} rows")


@main.command()
@click.argument("pool")
@_with(budget_options)
@click.option("--prompt", "-p", default="default", show_default=True,
              help="Preset (default, paper, low-toxicity, domain) or a template file. See `selectllm prompts`.")
@click.option("--domain", default="", help="Domain to prefer (for the domain preset or {domain} in a template).")
@click.option("--no-shuffle", is_flag=True, help="Show candidates in cluster order (for position-bias studies).")
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Longest answer allowed per query.")
@click.option("--sample", type=int, default=None,
              help="Select from a seeded random sample of this many rows (try settings cheaply before a full run).")
@click.option("--max-input-chars", type=int, default=None,
              help="Cut each input to this many characters in the prompt (saves tokens on long contexts).")
@click.option("--embed-model", default=None,
              help="model2vec (fast, approximate), or a sentence-transformers model name or folder.")
@engine_option
@backend_options
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Export the selection here (file or folder). Default: exports/RUN_ID.csv.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet", "labelstudio"]), default=None,
              help="Export format (default: from --out, else csv).")
@click.option("--no-export", is_flag=True, help="Only run the selection; export later with `selectllm export`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result summary as JSON.")
@workspace_option
@column_options
def run(pool: str, workspace: str | None, columns: dict, **opts: Any) -> None:
    """Run the whole pipeline: load, embed, split, ask the model, trim to the budget, export.

    Running the same command again resumes it: finished subsets are not called again.
    """
    _friendly(_run)(pool, workspace, columns, opts)


def _run(pool: str, workspace: str | None, columns: dict, o: dict) -> None:
    from selectllm_core.pipeline import RunConfig, export_run
    from selectllm_core.pipeline import run as run_pipeline

    store = _store(workspace)
    config = RunConfig(budget=o["budget"], subset_size=o["subset_size"], picks_per_subset=o["picks_per_subset"],
                       split=o["split"], seed=o["seed"], shuffle=not o["no_shuffle"], prompt=o["prompt"],
                       domain=o["domain"], max_tokens=o["max_tokens"], max_input_chars=o["max_input_chars"], sample=o["sample"],
                       embed_model=o["embed_model"])
    backend = _backend(o["backend"], o["model"], o["base_url"], o["api_key_env"], o["concurrency"],
                       o["context_window"])
    if o["backend"] == "local" and not o["as_json"]:
        click.echo("Note: the bundled SmolLM2-135M model runs offline but cannot judge instruction quality; "
                   "use --backend openai with a capable model for real selections.", err=True)
    p = _pool(store, pool, columns)
    result = run_pipeline(p, config, store=store, backend=backend, progress=_Bars(), engine=o["engine"])
    out = {"run_id": result.run_id, "pool_id": result.pool_id, "pool": result.pool_saved.message,
           "plan": result.plan.describe(), **result.summary, "stats": result.stats}
    if not o["no_export"] and result.summary["selected"]:
        target = o["out"] or f"exports/{result.run_id}.csv"
        exp = export_run(store, result.run_id, target, fmt=o["fmt"])
        out["export"] = [str(f) for f in exp.files] + [str(exp.manifest_path)]
    _report(out, o["as_json"])


def _report(out: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    s = out["stats"]
    click.echo(f"pool {out['pool_id']}: {out['pool']}")
    click.echo(f"run {out['run_id']}: {out['plan']}")
    click.echo(f"  embeddings: {s['embedded_new']} computed, {s['embedded_cached']} from cache; "
               f"LLM calls this time: {s['llm_calls_new']}")
    click.echo(f"  subsets: {out['subsets']}; selected {out['selected']} of {out['budget']}")
    if out["short_by"]:
        click.echo(f"  {out['short_by']} rows short: some subsets failed. See `selectllm status {out['run_id']}` "
                   f"and `selectllm retry {out['run_id']}`. No picks were invented.")
    for path in out.get("export", []):
        click.echo(f"  wrote {path}")


@main.command()
@click.argument("run_id")
@click.option("--subset", "subsets", type=int, multiple=True, help="Retry these subsets (default: all not ok).")
@backend_options
@workspace_option
def retry(run_id: str, subsets: tuple[int, ...], workspace: str | None, **b: Any) -> None:
    """Call the failed subsets of a run again (same backend settings as the run)."""
    _friendly(_retry)(run_id, subsets, workspace, b)


def _retry(run_id: str, subsets: tuple[int, ...], workspace: str | None, b: dict) -> None:
    from selectllm_core.pipeline import retry_failed

    backend = _backend(b["backend"], b["model"], b["base_url"], b["api_key_env"], b["concurrency"],
                       b["context_window"])
    out = retry_failed(_store(workspace), run_id, backend=backend, subsets=list(subsets) or None, progress=_Bars())
    click.echo(json.dumps(out, indent=2))


@main.command()
@click.argument("run_id")
@click.option("--failed", is_flag=True, help="Show only subsets that are not ok, with their raw answers.")
@workspace_option
def status(run_id: str, failed: bool, workspace: str | None) -> None:
    """Show a run: parameters, usage, and each subset's outcome."""
    _friendly(_status)(run_id, failed, workspace)


def _status(run_id: str, failed: bool, workspace: str | None) -> None:
    store = _store(workspace)
    run = store.get_run(run_id)
    click.echo(f"run {run_id} [{run['status']}] method {run['method']} backend {run['backend']}")
    click.echo(f"  usage: {store.usage(run_id)}")
    from selectllm_core.pipeline import degradations

    for line in degradations(store, run_id):
        click.echo(f"  degraded: {line}")
    for r in store.subset_results(run_id):
        if failed and r["status"] == "ok":
            continue
        click.echo(f"  subset {r['subset']}: {r['status']} picks={r['picks']}" +
                   (f" error={r['error']!r}" if r["error"] else "") + (f" note={r['note']!r}" if r["note"] else ""))
        if r["status"] != "ok":
            for i, raw in enumerate(r["raw"], start=1):
                click.echo(f"    answer {i}: {raw[:300]!r}")


@main.command()
@workspace_option
def runs(workspace: str | None) -> None:
    """List the runs in the workspace."""
    _friendly(lambda: click.echo(_store(workspace).list_runs().to_string(index=False)))()


@main.command()
@workspace_option
def pools(workspace: str | None) -> None:
    """List the pools in the workspace."""
    _friendly(lambda: click.echo(_store(workspace).list_pools().to_string(index=False)))()


@main.command()
@click.argument("run_id")
@click.option("--out", "-o", type=click.Path(), required=True, help="File or folder to write.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet", "labelstudio"]), default=None,
              help="Default: from the file extension, else csv.")
@click.option("--which", type=click.Choice(["selected", "accepted", "all"]), default="selected", show_default=True,
              help="selected: every pick not rejected; accepted: only accepted picks.")
@click.option("--batch-size", type=int, default=None, help="Rows per file (annotation batches).")
@workspace_option
def export(run_id: str, out: str, fmt: str | None, which: str, batch_size: int | None,
           workspace: str | None) -> None:
    """Export a run's picks for annotation, with a manifest that makes the run repeatable."""
    _friendly(_export)(run_id, out, fmt, which, batch_size, workspace)


def _export(run_id: str, out: str, fmt: str | None, which: str, batch_size: int | None,
            workspace: str | None) -> None:
    from selectllm_core.pipeline import export_run

    res = export_run(_store(workspace), run_id, out, fmt=fmt, which=which, batch_size=batch_size)
    click.echo(f"{res.rows} rows -> " + ", ".join(str(f) for f in res.files) + f" (manifest {res.manifest_path})")


@main.command()
@click.argument("run_id")
@click.option("--accept", multiple=True, help="Row id to accept (repeatable).")
@click.option("--reject", multiple=True, help="Row id to reject (repeatable).")
@click.option("--accept-all", is_flag=True, help="Accept every pick that has no decision yet.")
@click.option("--note", default="", help="Note stored with these decisions.")
@workspace_option
def decide(run_id: str, accept: tuple[str, ...], reject: tuple[str, ...], accept_all: bool, note: str,
           workspace: str | None) -> None:
    """Record curator decisions on picks without the app."""
    _friendly(_decide)(run_id, accept, reject, accept_all, note, workspace)


def _decide(run_id: str, accept: tuple[str, ...], reject: tuple[str, ...], accept_all: bool, note: str,
            workspace: str | None) -> None:
    store = _store(workspace)
    sel = store.selection(run_id)
    known = set(sel["id"])
    unknown = [r for r in (*accept, *reject) if r not in known]
    if unknown:
        raise click.ClickException(f"Not picks of {run_id}: {', '.join(unknown[:5])}. See `selectllm status`.")
    decisions = {r: ("accepted", note) for r in accept} | {r: ("rejected", note) for r in reject}
    store.set_decisions(run_id, decisions)
    accepted = store.accept_pending(run_id, note) if accept_all else 0
    click.echo(f"{len(decisions) + accepted} decisions saved.")


@main.command()
@click.argument("name", required=False)
def prompts(name: str | None) -> None:
    """List the prompt presets, or print one (to copy into a template file)."""
    from selectllm_core.select.prompts import KNOWN, PRESETS

    if name:
        if name not in PRESETS:
            raise click.ClickException(f"No preset {name!r}; presets: {', '.join(PRESETS)}.")
        click.echo(PRESETS[name].template)
        return
    for p in PRESETS.values():
        click.echo(f"{p.name:14} {p.title}: {p.description}")
    click.echo("\nPlaceholders: " + ", ".join(f"{{{k}}}" for k in KNOWN))


@main.command()
@click.option("--model", default=None, help="GGUF file to check (default: the bundled SmolLM2-135M).")
def doctor(model: str | None) -> None:
    """Check that the local model answers, run in its own process (the install runs this right away)."""
    _friendly(_doctor)(model)


def _doctor(model: str | None) -> None:
    import time

    from selectllm_core.llm.local import LocalLlamaBackend, stop_model_processes

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


# `selectllm method NAME POOL` and `selectllm compare RUN RUN...` (they reuse the helpers above).
from selectllm_core.cli.methods import register as _register_methods  # noqa: E402

_register_methods(main)


if __name__ == "__main__":
    main()
