"""The studio's current settings as the session keeps them (plain dicts), and the RunConfig they describe.

The app keeps `run_config` (the plan fields), `prompt` and `backend` in st.session_state; these functions say
what a newly opened pool or run sets them to, so the pages and the tests agree on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selectllm_core.methods.selectllm import SELECTLLM
from selectllm_core.pipeline import RunConfig
from selectllm_core.select.prompts import PRESETS
from selectllm_core.studio.prompt_view import template_ref
from selectllm_core.studio.run_view import default_budget

PLAN_FIELDS = ("budget", "subset_size", "picks_per_subset", "split", "seed", "shuffle", "max_tokens",
               "max_input_chars", "sample", "orders", "check_orders", "aggregation")


def default_settings(pool_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan and prompt a newly opened pool starts with (a tenth of it as the budget, the default prompt)."""
    plan = {"budget": default_budget(pool_size), **{k: SELECTLLM.defaults[k] for k in PLAN_FIELDS if k != "budget"}}
    prompt = {"preset": "default", "template": PRESETS["default"].template, "domain": ""}
    return plan, prompt


def run_settings(run: Mapping[str, Any], plan: Mapping[str, Any],
                 prompt: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str] | None]:
    """A stored SelectLLM run's plan, prompt and model as the current settings.

    Args:
        run: the run as `Store.get_run` returns it.
        plan: the current plan settings (they fill fields the run did not record).
        prompt: the current prompt settings (the price is kept).

    Returns:
        (plan, prompt, backend); backend is None when the run used the local model (the current one stays).
    """
    params = run["params"]
    plan = {k: params.get(k, plan.get(k)) for k in PLAN_FIELDS}
    preset = params.get("prompt") if params.get("prompt") in PRESETS else "custom"
    prompt = {**prompt, "preset": preset, "template": run["prompt"], "domain": params.get("domain", "")}
    backend = None
    if run["backend"].get("kind") == "openai":
        backend = {"kind": "openai", "model": run["backend"].get("model", ""),
                   "base_url": run["backend"].get("base_url", "")}
    return plan, prompt, backend


def templates_folder(workspace: Path) -> Path:
    """Where custom templates are saved: beside the workspace file, named after it."""
    path = workspace.resolve()
    return path.with_name(path.name + ".templates")


def run_config(plan: Mapping[str, Any], prompt: Mapping[str, Any], *, workspace: Path) -> RunConfig:
    """The RunConfig these settings describe (a custom template is saved beside the workspace)."""
    ref = template_ref(prompt["template"], folder=templates_folder(workspace))
    return RunConfig(**{k: plan[k] for k in PLAN_FIELDS}, prompt=ref, domain=prompt["domain"])


def secrets_message(exc: Exception) -> str:
    """What is wrong with Streamlit's secrets file and how to go on (a TOML parse error quotes no file content)."""
    found = getattr(exc, "exec_kwargs", {})
    where = f" {found['path']}" if found.get("path") else ""
    return (f"Cannot read the API key from the secrets file{where}: {found.get('error', exc)}. Fix the TOML there "
            "(a quoted string: openai_api_key = \"sk-...\"), or type the key in the API key box on the Select page, "
            "which needs no file and keeps the key in this session's memory only.")
