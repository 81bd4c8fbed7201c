"""`selectllm method NAME POOL` and `selectllm compare RUN RUN...`: the other selection methods on the CLI.

One subcommand per registered method, its options made from the method's Params (the registry in
methods/registry.py); SelectLLM itself is `selectllm run`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

import selectllm_core.cli.options as opt
from selectllm_core.embed import embedder_for
from selectllm_core.errors import ConfigError
from selectllm_core.llm import make_backend
from selectllm_core.methods import METHODS, Method, run_method
from selectllm_core.plain import plain
from selectllm_core.runs.compare import compare_runs, to_markdown
from selectllm_core.runs.export import export_run
from selectllm_core.runs.picks import WHICH

RETRY_OPTION = click.option("--retry-failed", is_flag=True, help="Rate again the batches whose answers were unusable.")
MODEL_LEVEL = opt.apply([
    click.option("--model-params", default="1", show_default=True,
                 help="Parameter count of --model (e.g. 7B), weighing it against --extra-model."),
    click.option("--extra-model", multiple=True,
                 help="Another model for the model level: local:GGUF_PATH=PARAMS or openai:NAME=PARAMS "
                      "(openai uses --base-url and --api-key-env). Repeatable."),
])


def method_group() -> click.Group:
    """`selectllm method`, one subcommand per registered method that has no command of its own."""
    listed = [m for m in METHODS.values() if not m.command]
    group = click.Group("method", help=f"Select with another method ({', '.join(m.name for m in listed)}); each run "
                        "is stored and can be compared with `selectllm compare`. SelectLLM is `selectllm run`.")
    for method in listed:
        group.add_command(_method_command(method))
    return group


def _method_command(method: Method) -> click.Command:
    """The `selectllm method NAME` command with that method's opt."""

    def callback(pool: str, budget: int, workspace: str | None, out: str | None, fmt: str | None, as_json: bool,
                 **o: Any) -> None:
        _run(method, pool, budget, workspace, out, fmt, as_json, o)

    options = [click.argument("pool"), opt.budget_option, opt.param_options(method.params), opt.export_options, opt.json_option]
    if "embeddings" in method.needs:
        options.append(opt.embed_model_option)
    if "llm" in method.needs:
        options += [opt.backend_options, RETRY_OPTION] + ([MODEL_LEVEL] if method.max_models > 1 else [])
    options.append(opt.workspace_option)
    help_text = f"{method.title}: {method.summary}" + (f"\n\n{method.note}" if method.note else "")
    return click.command(method.name, help=help_text)(opt.apply(options)(callback))


def _run(method: Method, pool: str, budget: int, workspace: str | None, out: str | None, fmt: str | None,
         as_json: bool, o: dict) -> None:
    store = opt.open_store(workspace)
    kwargs: dict[str, Any] = {p.name: o.pop(p.name) for p in method.params}
    if "embeddings" in method.needs:
        kwargs["embedder"] = embedder_for(o.pop("embed_model"))
    if "llm" in method.needs:
        local = o["backend"] == "local"
        kwargs.update(_models(o), retry_failed=o.pop("retry_failed"))
        if not as_json:
            if local:
                click.echo(opt.LOCAL_NOTE.format(what="ratings"), err=True)
            click.echo(f"Note: {method.note}", err=True)
    result = run_method(method.name, opt.pool_from(store, pool), budget=budget, store=store, progress=opt.Bars(), **kwargs)
    report = {"run_id": result.run_id, "method": method.name, "pool_id": result.pool_id, "budget": result.budget,
              "selected": result.selected, "short_by": result.short_by, "flags": result.flags, "stats": result.stats}
    if out and result.selected:
        exp = export_run(store, result.run_id, out, fmt=fmt)
        report["export"] = [str(f) for f in exp.files] + [str(exp.manifest_path)]
    _report(report, as_json)


def _models(o: dict) -> dict:
    """backend=..., or backends=[(backend, parameters), ...] when extra models are given."""
    base_url, api_key_env = o["base_url"], o["api_key_env"]
    extra, weight = o.pop("extra_model", ()) or (), o.pop("model_params", "1")
    main = opt.backend_from({k: o[k] for k in opt.BACKEND_KEYS})
    if not extra:
        return {"backend": main}
    models = [(main, parse_count(weight))]
    for spec in extra:
        match = re.fullmatch(r"(local|openai):(.+)=([^=]+)", spec)
        if not match:
            raise ConfigError(f"--extra-model {spec!r}: write local:GGUF_PATH=PARAMS or openai:NAME=PARAMS, "
                              "for example openai:llama-3-8b=8B.")
        kind, model, count = match.groups()
        backend = make_backend(kind, model=model, base_url=base_url if kind == "openai" else None,
                               api_key_env=api_key_env)
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


@click.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@opt.apply([
    click.option("--clusters", default="auto", show_default=True,
                 help="auto (a SelectLLM run's clusters, else k-means), kmeans, or a run id whose plan to use."),
    click.option("--n-clusters", type=click.IntRange(1), default=20, show_default=True,
                 help="Clusters of the shared k-means."),
    opt.embed_model_option,
    click.option("--which", type=click.Choice(WHICH), default="all", show_default=True,
                 help="Picks compared: all, not rejected, or accepted only."),
    opt.json_option,
])
@opt.workspace_option
def compare(run_ids: tuple[str, ...], clusters: str, n_clusters: int, embed_model: str | None,
            which: str, as_json: bool, workspace: str | None) -> None:
    """Compare runs of one pool: overlap, coverage, cluster balance, length, LLM usage and cost, and position
    bias of listwise runs."""
    c = compare_runs(opt.open_store(workspace), list(run_ids), embedder=embedder_for(embed_model),
                     clusters=clusters, n_clusters=n_clusters, which=which)
    if as_json:
        click.echo(json.dumps(plain({
            "pool_id": c.pool_id, "clusters": c.cluster_source, "table": c.table.to_dict("records"),
            "overlap": c.overlap.to_dict(), "position_bias": c.position_bias.to_dict("records"),
            "position_counts": {k: v.to_dict("records") for k, v in c.position_counts.items()},
            "notes": c.notes}), indent=2))
        return
    click.echo(to_markdown(c))
