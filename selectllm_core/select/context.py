"""How many candidates fit one prompt: the backend's context window, and the largest subset it holds.

The paper keeps Q = 1000 queries, so subsets grow with the pool: at 1M rows a budget of 1,000 would put 1,000
candidates in one prompt, far past any small model's context. The plan therefore caps the subset size by the
backend's context window, and says so; every row is still shown exactly once (more, smaller subsets).

Context windows: the local model's is its n_ctx. A remote model's comes from `--context-window` when given,
else from the table below (prefix match on the model name), else 8,192 tokens, stated as an assumption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from selectllm_core.llm import ChatBackend

# Published context windows (tokens) of common models served behind OpenAI-compatible APIs. Longest prefix wins.
CONTEXT_WINDOWS = {
    "gpt-4.1": 1_047_576, "gpt-4o": 128_000, "gpt-4-turbo": 128_000, "gpt-4": 8_192, "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000, "o1": 200_000, "o3": 200_000, "o4-mini": 200_000,
    "claude": 200_000, "gemini": 1_000_000, "llama3.1": 131_072, "llama3.2": 131_072, "llama3": 8_192,
    "qwen2.5": 32_768, "mistral": 32_768, "smollm2": 8_192,
}
ASSUMED_WINDOW = 8_192
CHARS_PER_TOKEN = 4.0  # a conservative English average when the tokenizer is not at hand
PER_CANDIDATE_TOKENS = 14  # "[i]", "### Instruction:", "### Input:" and blank lines around each candidate
# Row lengths are heavy-tailed (a few long contexts), so a subset's total is planned at its mean plus Z standard
# deviations (about 1 prompt in 1,000 longer, under a normal approximation of the sum of S rows).
Z = 3.0
SAMPLE_ROWS = 2_000


@dataclass(frozen=True)
class Window:
    """A backend's context window in tokens and where the number comes from."""

    tokens: int
    source: str


def context_window(backend: ChatBackend) -> Window:
    """The context window of a chat backend: local n_ctx, an explicit setting, the table, or the assumption."""
    explicit = getattr(backend, "context_window", None)
    if explicit:
        return Window(int(explicit), "set with --context-window")
    n_ctx = getattr(backend, "n_ctx", None)
    if n_ctx:
        return Window(int(n_ctx), "the local model's n_ctx")
    model = str(getattr(backend, "model", "") or "").lower().rsplit("/", 1)[-1]
    for prefix in sorted(CONTEXT_WINDOWS, key=len, reverse=True):
        if model.startswith(prefix):
            return Window(CONTEXT_WINDOWS[prefix], f"the published window of {prefix}")
    return Window(ASSUMED_WINDOW, f"assumed for {model or 'this model'}; set --context-window if it holds more")


@dataclass(frozen=True)
class SubsetCap:
    """The largest subset whose prompt fits the window, with the numbers behind it."""

    size: int
    window: Window
    tokens_per_candidate: float
    fixed_tokens: int
    spread: float = 0.0  # standard deviation of a candidate's tokens
    too_long: tuple[int, int] = (0, 0)  # rows measured that cannot fit any prompt alone, of rows measured

    def reason(self) -> str:
        text = (f"subsets hold at most {self.size} candidates so a prompt fits the context of "
                f"{self.window.tokens:,} tokens ({self.window.source}): about {self.tokens_per_candidate:.0f} "
                f"± {self.spread:.0f} tokens per candidate, {self.fixed_tokens:,} for the instructions and the "
                "answer")
        if self.too_long[0]:
            text += (f"; {self.too_long[0]:,} of {self.too_long[1]:,} rows measured are too long for any prompt "
                     "of this model on their own: cut them with --max-input-chars")
        return text


def subset_cap(frame: pd.DataFrame, backend: ChatBackend, *, template: str, max_tokens: int,
               max_input_chars: int | None = None, seed: int = 0) -> SubsetCap:
    """The largest subset size whose prompt fits the backend's context window.

    Args:
        frame: the pool's rows (instruction, input).
        backend: the chat backend (its context window, and its tokenizer when it has one).
        template: the prompt template (its text around the candidates counts too).
        max_tokens: tokens kept free for the answer.
        max_input_chars: the run's cut of long inputs, as the prompt will show them.
        seed: seeds the sample of rows measured on large pools.

    Returns:
        A SubsetCap (at least 2).
    """
    window = context_window(backend)
    rows = frame if len(frame) <= SAMPLE_ROWS else frame.sample(n=SAMPLE_ROWS, random_state=seed)
    inputs = rows["input"].astype(str)
    if max_input_chars is not None:
        inputs = inputs.str.slice(0, max_input_chars)
    texts = (rows["instruction"].astype(str) + "\n" + inputs).tolist()
    counts = _token_counts(backend, texts)
    mean, spread = float(np.mean(counts)) + PER_CANDIDATE_TOKENS, float(np.std(counts))
    fixed = math.ceil(len(template) / CHARS_PER_TOKEN) + max_tokens + 64
    room = max(1.0, window.tokens - fixed)
    # the largest S with S * mean + Z * sqrt(S) * spread <= room (a quadratic in sqrt(S))
    root = (-Z * spread + math.sqrt((Z * spread) ** 2 + 4 * mean * room)) / (2 * mean)
    alone = sum(1 for c in counts if c + PER_CANDIDATE_TOKENS > room)
    return SubsetCap(size=max(2, math.floor(root * root)), window=window, tokens_per_candidate=mean,
                     fixed_tokens=fixed, spread=spread, too_long=(alone, len(counts)))


def _token_counts(backend: ChatBackend, texts: list[str]) -> list[float]:
    """Tokens per text: exact with the backend's tokenizer when it has one, else by characters."""
    many = getattr(backend, "count_tokens_many", None)
    counts = many(texts) if many else None
    if counts is None:
        counts = [len(t) / CHARS_PER_TOKEN for t in texts]
    return [float(c) for c in counts] or [1.0]
