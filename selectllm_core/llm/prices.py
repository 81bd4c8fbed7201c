"""What a call costs: a price per model, in money per million prompt and per million answer tokens.

The local model costs nothing. For remote models the price comes from the workspace's price table (set with
`selectllm prices set MODEL INPUT OUTPUT` or on the Prompt page), else from `LIST_PRICES` below: public list
prices in US dollars as published by OpenAI in 2025 for the models curators use most. They change; the table
in the workspace wins, and a model found in neither has no price: its cost is said to be unknown, never 0, and
a run with a spending cap refuses to start on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# model name prefix -> (USD per 1M prompt tokens, USD per 1M answer tokens). Longest matching prefix wins.
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o4-mini": (1.10, 4.40),
}


@dataclass(frozen=True)
class Price:
    """Money per million prompt tokens and per million answer tokens, and where the numbers come from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str  # "local model", "workspace price table", "list price (2025)"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


FREE = Price(0.0, 0.0, "local model")


def price_for(backend: Mapping, table: Mapping[str, tuple[float, float]] | None = None) -> Price | None:
    """The price of a backend's calls (from its `describe()`), or None when no price is known for its model.

    Args:
        backend: the backend's description (kind, model).
        table: the workspace's price table (exact model names), consulted before the list prices.
    """
    if backend.get("kind") == "local":
        return FREE
    model = str(backend.get("model") or "")
    if table and model in table:
        return Price(*table[model], "workspace price table")
    matches = [prefix for prefix in LIST_PRICES if model.startswith(prefix)]
    if matches:
        return Price(*LIST_PRICES[max(matches, key=len)], "list price (2025)")
    return None


def money(value: float | None) -> str:
    """A cost as the studio shows it: $0.0123, or "unknown" when no price is known."""
    if value is None:
        return "unknown (no price for this model)"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"
