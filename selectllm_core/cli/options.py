"""What the `selectllm` commands share: options made from the method registry's Params, the backend and
workspace options, pool loading, and progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from selectllm_core.engines import ENGINES
from selectllm_core.llm import DEFAULT_LOCAL_MODEL, LOCAL_MODELS, ChatBackend, make_backend
from selectllm_core.llm.models import for_file
from selectllm_core.methods import Param
from selectllm_core.pool.load import Pool, column_map, load_pool
from selectllm_core.runs.export import FORMATS
from selectllm_core.store import Store

LOCAL_NOTE = ("Note: the bundled SmolLM2-135M model runs offline but cannot judge instruction quality; "
              "use --model qwen2.5-coder-1.5b (measured: `selectllm models`) or --backend openai with a capable "
              "model for real {what}.")


def apply(options: Iterable[Callable]) -> Callable:
    """A decorator adding the options in the order given (the first is listed first in --help)."""
    def deco(func: Callable) -> Callable:
        for opt in reversed(list(options)):
            func = opt(func)
        return func
    return deco


def param_option(p: Param) -> Callable:
    """The click option of a method parameter: its flag, type, bounds, choices, default and help."""
    if p.type is bool:
        return click.option(p.flag, p.name, is_flag=True, flag_value=not p.default, default=p.default, help=p.help)
    if p.choices:
        kind: Any = click.Choice([str(c) for c in p.choices])
    elif p.type in (int, float) and (p.min is not None or p.max is not None):
        kind = (click.IntRange if p.type is int else click.FloatRange)(p.min, p.max)
    else:
        kind = p.type
    names = [p.flag, *([p.short] if p.short else [])]
    return click.option(*names, p.name, type=kind, default=p.default, show_default=p.default not in (None, ""),
                        help=p.help)


def param_options(params: Iterable[Param]) -> Callable:
    return apply(param_option(p) for p in params)


budget_option = click.option("--budget", "-b", type=click.IntRange(1), required=True,
                             help="Rows to select for annotation.")

workspace_option = click.option(
    "--workspace", "-w", type=click.Path(dir_okay=False), default=None,
    help="Workspace file (SQLite). Default: $SELECTLLM_WORKSPACE or ./selectllm-workspace.sqlite.")

engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default="local", show_default=True,
    help="local: this process. ray: embedding and LLM calls on a Ray cluster ($RAY_ADDRESS, else a local Ray; "
         "pip install -r requirements-scale.txt). Results, cache and resume are the same.")

embed_model_option = click.option(
    "--embed-model", default=None,
    help="minilm-int8 (MiniLM in int8: about 2.4x faster, near-exact), model2vec (fastest, approximate), or a "
         "sentence-transformers model name or folder (default: bundled all-MiniLM-L6-v2).")

export_options = apply([
    click.option("--out", "-o", type=click.Path(), default=None, help="Export the selection here (file or folder)."),
    click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                 help="Export format (default: from --out, else csv)."),
])

spend_options = apply([
    click.option("--max-cost", type=click.FloatRange(0), default=None,
                 help="Stop before the call that could take this run's spending past this (dollars, from the price "
                      "table: `selectllm prices`); the same command with a higher cap resumes the run."),
    click.option("--no-response-cache", "no_response_cache", is_flag=True,
                 help="Send every request, even one answered before (default: a request answered before, by any "
                      "run or workspace sharing the cache folder, is answered from the response cache for free)."),
])

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result summary as JSON.")

backend_options = apply([
    click.option("--backend", type=click.Choice(["local", "openai"]), default="local", show_default=True,
                 help="local: a GGUF model run offline (default: the bundled SmolLM2-135M, too small to judge "
                      "quality; for trying the studio). openai: any OpenAI-compatible server (OpenAI, vLLM, "
                      "Ollama, llama.cpp)."),
    click.option("--model", default=None,
                 help="local: a model name from `selectllm models` (smollm2-135m, the default; qwen2.5-coder-1.5b "
                      "after `bash scripts/install.sh --judge-model`) or a GGUF file; openai: the model name (for "
                      "example gpt-4o-mini)."),
    click.option("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
    click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                 help="Environment variable that holds the API key (the key itself is never stored)."),
    click.option("--concurrency", type=click.IntRange(1), default=None, help="Calls in flight (openai backend)."),
    click.option("--context-window", type=click.IntRange(64), default=None,
                 help="The model's context window in tokens; subsets are capped so each prompt fits (default: the "
                      "local model's n_ctx, else the published window of known models, else 8192)."),
])

BACKEND_KEYS = ("backend", "model", "base_url", "api_key_env", "concurrency", "context_window")


def local_note(o: dict, what: str) -> str | None:
    """The warning for a local model too small to judge instructions, or None (another model, or a server)."""
    if o.get("backend") != "local":
        return None
    model = o.get("model") or DEFAULT_LOCAL_MODEL
    entry = LOCAL_MODELS.get(model) or for_file(Path(model).name)
    return LOCAL_NOTE.format(what=what) if entry is not None and entry.too_small else None


def backend_from(o: dict) -> ChatBackend:
    """The chat backend the backend options name (popped from the command's options)."""
    b = {k: o.pop(k) for k in BACKEND_KEYS}
    return make_backend(b["backend"], model=b["model"], base_url=b["base_url"], api_key_env=b["api_key_env"],
                        concurrency=b["concurrency"], context_window=b["context_window"])


def column_options(func: Callable) -> Callable:
    """Options naming pool columns when detection is not enough; the command gets them as `columns`."""
    func_with = apply([
        click.option("--instruction-column", "instruction", default=None,
                     help="Column holding the instruction (default: detected: instruction, prompt or text)."),
        click.option("--input-column", "input", default=None,
                     help="Column holding the input/context (default: detected: input or context)."),
        click.option("--id-column", "id", default=None, help="Column holding a unique row id (default: id, "
                     "else a hash of the text)."),
    ])

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["columns"] = {k: kwargs.pop(k) for k in ("instruction", "input", "id")}
        return func(*args, **kwargs)

    return func_with(wrapper)


def open_store(workspace: str | None) -> Store:
    return Store(workspace)


def pool_from(store: Store, source: str, columns: dict | None = None) -> Pool:
    """A pool from a file (columns detected unless named; the run saves it), or from the workspace by pool id."""
    if not Path(source).exists() and not any(c in source for c in "/\\."):
        return store.load_pool(source)
    return load_pool(source, columns=column_map(source, **(columns or {})))


class Bars:
    """tqdm bars, one per stage: a StageProgress for the CLI."""

    LABELS = {"embed": "embedding", "cluster": "clustering", "select": "asking the model", "rate": "rating rows"}
    UNITS = {"embed": " rows", "rate": " rows"}  # tqdm then shows "152 rows/s" and the time left

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            label = self.LABELS.get(stage) or stage.replace("select round", "asking the model, round")
            unit = self.UNITS.get(stage, " subsets" if stage.startswith("select") else "")
            self.bars[stage] = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar = self.bars[stage]
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

