"""The Prompt page's helpers: every subset's prompt as the run will send it, presets and template files."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from selectllm_core.select.listwise import PromptSpec
from selectllm_core.select.prompts import PRESETS
from selectllm_core.select.spend import subset_requests


def subset_prompts(pool: pd.DataFrame, subsets: Sequence[Sequence[int]], cluster_of: np.ndarray, *, template: str,
                   k: int, domain: str = "", seed: int = 0, shuffle: bool = True,
                   max_input_chars: int | None = None) -> list[str]:
    """Every subset's prompt exactly as the run will render it (the template must be valid)."""
    spec = PromptSpec(template, domain=domain, max_input_chars=max_input_chars)
    return [r.text for r in subset_requests(pool, subsets, cluster_of, prompt=spec, k=k, seed=seed, shuffle=shuffle)]


def preset_name(template: str) -> str:
    """The preset whose text this template is, else "custom"."""
    return next((name for name, preset in PRESETS.items() if preset.template == template), "custom")


def template_ref(template: str, *, folder: Path) -> str:
    """What RunConfig.prompt takes: a preset's name when the text is a preset, else a saved template file."""
    name = preset_name(template)
    if name != "custom":
        return name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"template-{hashlib.sha256(template.encode()).hexdigest()[:12]}.txt"
    if not path.exists():
        path.write_text(template, encoding="utf-8")
    return str(path)
