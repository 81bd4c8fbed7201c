"""`selectllm method NAME POOL` and `selectllm compare RUN RUN...`: the other selection methods on the CLI.

cli.py calls `register(main)` after defining its own commands. The shared pieces (workspace and backend
options, error handling, progress bars, pool loading) are taken from cli.py at that moment, so these commands
behave exactly like `selectllm run`.
"""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import Any

import click

from selectllm_core.errors import ConfigError

SMALL_MODEL_NOTE = ("Note: the bundled SmolLM2-135M model runs offline but cannot judge instruction quality; "
                    "use --backend openai with a capable model for real ratings.")

_COMMON = [
    click.argument("pool"),
    click.option("--budget", "-b", type=int, required=True, help="Rows to select for annotation."),
    click.option("--out", "-o", type=click.Path(), default=None, help="Export the selection here (file or folder)."),
    click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet", "labelstudio"]), default=None,
                 help="Export format (default: from --out, else csv)."),
    click.option("--json", "as_json", is_flag=True, help="Print the result summary as JSON."),
]
_SEED = click.option("--seed", type=int, default=0, show_default=True, help="Seeds the draw.")
_EMBED = click.option("--embed-model", default=None,
                      help="sentence-transformers model name or folder (default: bundled all-MiniLM-L6-v2).")
_BATCH = click.option("--batch-size", type=int, default=20, show_default=True,
                      help="Rows rated per stored batch (a stopped run resumes batch by batch).")
_RETRY = click.option("--retry-failed", is_flag=True, help="Rate again the batches whose answers were unusable.")
_OPTIONS: dict[str, list] = {
    "random": [_SEED],
    "length": [click.option("--order", type=click.Choice(["longest", "shortest"]), default="longest",
                            show_default=True, help="Longest or shortest first (instruction + input characters).")],
    "coreset": [click.option("--seed", type=int, default=0, show_default=True, help="Seeds the first centre."),
                _EMBED],
    "deita": [click.option("--tau", type=float, default=0.9, show_default=True,
                           help="Skip a row whose cosine similarity to a chosen row is above this."),
              click.option("--score-run", default=None, help="Take scores from this run (same pool)."),
              click.option("--score-column", default=None, help="Take scores from this numeric pool column."),
              _EMBED],
    "alpagasus": [click.option("--threshold", type=float, default=4.5, show_default=True,
                               help="Keep rows rated at or above this (0-5)."),
                  _BATCH,
                  click.option("--max-tokens", type=int, default=256, show_default=True,
                               help="Longest rating answer allowed."),
                  _RETRY],
    "selectit": [click.option("--alpha", type=float, default=0.2, show_default=True,
                              help="Weight of the spread across prompts (sentence level)."),
                 click.option("--k", type=int, default=5, show_default=True, help="Rating prompts per row (1-5)."),
                 _BATCH,
                 click.option("--top-n", type=int, default=20, show_default=True,
                              help="Most likely first tokens read per rating (OpenAI allows up to 20)."),
                 click.option("--model-params", default="1", show_default=True,
                              help="Parameter count of --model (e.g. 7B), weighing it against --extra-model."),
                 click.option("--extra-model", multiple=True,
                              help="Another model for the model level: local:GGUF_PATH=PARAMS or openai:NAME=PARAMS "
                                   "(openai uses --base-url and --api-key-env). Repeatable."),
                 _RETRY],
}


def register(main: click.Group) -> None:
    """Add `method` (one subcommand per method) and `compare` to the `selectllm` group (once)."""
    from selectllm_core import cli
    from selectllm_core.methods import METHODS

    if "method" in main.commands:
        return
    group = click.Group("method", help="Select with another method (random, length, coreset, deita, alpagasus, "
                        "selectit); each run is stored and can be compared with `selectllm compare`.")
    for name in METHODS:
        group.add_command(_method_command(name, cli))
    main.add_command(group)
    main.add_command(_compare_command(cli))


def _method_command(name: str, cli: ModuleType) -> click.Command:
    """The `selectllm method NAME` command with that method's options."""
    from selectllm_core.methods import METHODS

    method = METHODS[name]

    def callback(pool: str, workspace: str | None, **opts: Any) -> None:
        cli._friendly(_run)(name, pool, workspace, opts, cli)

    func = callback
    if "llm" in method.needs:
        func = cli.backend_options(func)
    func = cli.workspace_option(func)
    for opt in reversed(_COMMON + _OPTIONS[name]):
        func = opt(func)
    help_text = f"{method.title}: {method.summary}" + (f"\n\n{method.note}" if method.note else "")
    return click.command(name, help=help_text)(func)


def _run(name: str, pool: str, workspace: str | None, o: dict, cli: ModuleType) -> None:
    from selectllm_core.embed import SentenceTransformerEmbedder
    from selectllm_core.methods import METHODS, export_run, run_method

    method = METHODS[name]
    store = cli._store(workspace)
    p = cli._pool(store, pool)
    kwargs: dict[str, Any] = {k: o[k] for k in method.defaults if k in o}
    if "embeddings" in method.needs:
        kwargs["embedder"] = SentenceTransformerEmbedder(o.get("embed_model"))
    if "llm" in method.needs:
        kwargs.update(_models(o, cli), retry_failed=o["retry_failed"])
        if not o["as_json"]:
            if o["backend"] == "local":
                click.echo(SMALL_MODEL_NOTE, err=True)
            click.echo(f"Note: {method.note}", err=True)
    result = run_method(name, p, budget=o["budget"], store=store, progress=cli._Bars(), **kwargs)
    out = {"run_id": result.run_id, "method": name, "pool_id": result.pool_id, "budget": result.budget,
           "selected": result.selected, "short_by": result.short_by, "flags": result.flags, "stats": result.stats}
    if o["out"] and result.selected:
        exp = export_run(store, result.run_id, o["out"], fmt=o["fmt"])
        out["export"] = [str(f) for f in exp.files] + [str(exp.manifest_path)]
    _report(out, o["as_json"])


def _models(o: dict, cli: ModuleType) -> dict:
    """backend=..., or backends=[(backend, parameters), ...] when extra models are given."""
    main = cli._backend(o["backend"], o["model"], o["base_url"], o["api_key_env"], o["concurrency"])
    extra = o.get("extra_model") or ()
    if not extra:
        return {"backend": main}
    from selectllm_core.llm import make_backend

    models = [(main, parse_count(o["model_params"]))]
    for spec in extra:
        match = re.fullmatch(r"(local|openai):(.+)=([^=]+)", spec)
        if not match:
            raise ConfigError(f"--extra-model {spec!r}: write local:GGUF_PATH=PARAMS or openai:NAME=PARAMS, "
                              "for example openai:llama-3-8b=8B.")
        kind, model, count = match.groups()
        backend = make_backend(kind, model=model, base_url=o["base_url"] if kind == "openai" else None,
                               api_key_env=o["api_key_env"])
        models.append((backend, parse_count(count)))
    return {"backends": models}


def parse_count(text: str) -> float:
    """A parameter count from '7e9', '7B', '135M' or '1'."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not match:
        raise ConfigError(f"Cannot read {text!r} as a parameter count: write it like 7B, 135M or 7e9.")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[match.group(2).lower()]
    return float(match.group(1)) * scale


def _report(out: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"run {out['run_id']} ({out['method']}): selected {out['selected']} of {out['budget']}")
    flags = out["flags"]
    if flags:
        click.echo("  " + ", ".join(f"{k}={v}" for k, v in flags.items() if k != "note"))
    if flags.get("short_by_threshold"):
        click.echo(f"  Only {flags['passed_threshold']} rows were rated at or above {flags['threshold']}: rows "
                   "below the threshold are never added. Lower --threshold to fill the budget.")
    if flags.get("unrated") or flags.get("unscored"):
        click.echo(f"  Some rows could not be rated. See `selectllm status {out['run_id']}`; run the same command "
                   "again (unreachable batches) or add --retry-failed (unusable answers). Nothing was invented.")
    for path in out.get("export", []):
        click.echo(f"  wrote {path}")


def _compare_command(cli: ModuleType) -> click.Command:
    """The `selectllm compare RUN RUN...` command."""

    def callback(run_ids: tuple[str, ...], workspace: str | None, **o: Any) -> None:
        cli._friendly(_compare)(list(run_ids), workspace, o, cli)

    func = cli.workspace_option(callback)
    for opt in reversed([
        click.argument("run_ids", nargs=-1, required=True),
        click.option("--price-per-1k", type=float, default=0.0, show_default=True,
                     help="Price per 1,000 tokens (prompt + completion) for the cost column."),
        click.option("--clusters", default="auto", show_default=True,
                     help="auto (a SelectLLM run's clusters, else k-means), kmeans, or a run id whose plan to use."),
        click.option("--n-clusters", type=int, default=20, show_default=True, help="Clusters of the shared k-means."),
        click.option("--embed-model", default=None, help="Embedding model for coverage (default: bundled)."),
        click.option("--which", type=click.Choice(["all", "selected", "accepted"]), default="all",
                     show_default=True, help="Picks compared: all, not rejected, or accepted only."),
        click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON."),
    ]):
        func = opt(func)
    return click.command("compare", help="Compare runs of one pool: overlap, coverage, cluster balance, length, "
                         "LLM usage and cost, and position bias of listwise runs.")(func)


def _compare(run_ids: list[str], workspace: str | None, o: dict, cli: ModuleType) -> None:
    from selectllm_core.embed import SentenceTransformerEmbedder
    from selectllm_core.runs.compare import compare_runs, to_markdown

    c = compare_runs(cli._store(workspace), run_ids, embedder=SentenceTransformerEmbedder(o["embed_model"]),
                     clusters=o["clusters"], n_clusters=o["n_clusters"], price_per_1k=o["price_per_1k"],
                     which=o["which"])
    if o["as_json"]:
        click.echo(json.dumps(_plain({
            "pool_id": c.pool_id, "clusters": c.cluster_source, "table": c.table.to_dict("records"),
            "overlap": c.overlap.to_dict(), "position_bias": c.position_bias.to_dict("records"),
            "position_counts": {k: v.to_dict("records") for k, v in c.position_counts.items()},
            "notes": c.notes}), indent=2))
        return
    click.echo(to_markdown(c))


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars as Python numbers, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
