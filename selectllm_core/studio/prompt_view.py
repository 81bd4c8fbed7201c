"""The Prompt page's numbers: every subset's prompt as the run will send it, and what the whole run costs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from selectllm_core.select.listwise import Candidate, PromptSpec, presentation_order
from selectllm_core.select.prompts import PRESETS, estimate_tokens, render

# Answer length per pick, for the cost estimate: an id, or an id with a one-sentence reason.
ANSWER_TOKENS_PER_PICK = {"ids": 3, "json": 40}
ANSWER_TOKENS_OVERHEAD = {"ids": 2, "json": 8}


def subset_candidates(pool: pd.DataFrame, members: Sequence[int], cluster_of: np.ndarray, *, subset: int,
                      seed: int, shuffle: bool) -> list[Candidate]:
    """One subset's rows in the order the run shows them (stored plan order, then the seeded shuffle)."""
    ordered = sorted(members, key=lambda p: (int(cluster_of[p]), int(p)))
    rows = [Candidate(str(pool["id"].iat[p]), str(pool["instruction"].iat[p]), str(pool["input"].iat[p]))
            for p in ordered]
    return presentation_order(rows, subset=subset, seed=seed, shuffle=shuffle)


def subset_prompts(pool: pd.DataFrame, subsets: Sequence[Sequence[int]], cluster_of: np.ndarray, *, template: str,
                   k: int, domain: str = "", seed: int = 0, shuffle: bool = True,
                   max_input_chars: int | None = None) -> list[str]:
    """Every subset's prompt exactly as the run will render it (the template must be valid)."""
    spec = PromptSpec(template, domain=domain, max_input_chars=max_input_chars)
    out = []
    for index, members in enumerate(subsets):
        shown = subset_candidates(pool, members, cluster_of, subset=index, seed=seed, shuffle=shuffle)
        k_here = min(k, len(shown) - 1)
        if k_here >= 1:
            rows = [(c.instruction, spec.shown_input(c.input)) for c in shown]
            out.append(render(template, rows, k=k_here, domain=domain))
    return out


@dataclass(frozen=True)
class CostEstimate:
    """Tokens and money for a whole run, before any repair retries."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    prompt_exact: bool
    cost: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_cost(prompts: Sequence[str], *, k: int, answer_format: str, price_per_1k: float,
                  count_tokens: Callable[[str], int | None] | None = None) -> CostEstimate:
    """Tokens and cost of sending these prompts once each.

    Args:
        prompts: every subset's prompt (from `subset_prompts`).
        k: picks per subset (sizes the answers).
        answer_format: "json" (picks with reasons) or "ids".
        price_per_1k: money per 1,000 tokens, prompt and answer alike.
        count_tokens: the backend's exact counter; None or a None answer means the 4-characters estimate.

    Returns:
        A CostEstimate; prompt_exact tells whether prompt tokens were counted by the model's tokenizer.
    """
    counts = [count_tokens(p) if count_tokens else None for p in prompts]
    exact = bool(prompts) and all(c is not None for c in counts)
    prompt_tokens = sum(c if c is not None else estimate_tokens(p) for c, p in zip(counts, prompts))
    per_answer = ANSWER_TOKENS_PER_PICK.get(answer_format, 40) * k + ANSWER_TOKENS_OVERHEAD.get(answer_format, 8)
    completion = per_answer * len(prompts)
    cost = (prompt_tokens + completion) / 1000 * price_per_1k
    return CostEstimate(len(prompts), prompt_tokens, completion, exact, cost)



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
