"""The `selectllm` commands for money: the workspace's price table and the response cache."""

from __future__ import annotations

import click

from selectllm_core.cli.options import open_store, workspace_option
from selectllm_core.embed.cache import default_cache_dir
from selectllm_core.llm.cache import ResponseCache
from selectllm_core.llm.prices import LIST_PRICES


@click.group()
def prices() -> None:
    """The price per model that costs calls (money per million prompt and answer tokens)."""


@prices.command("list")
@workspace_option
def prices_list(workspace: str | None) -> None:
    """Show the workspace's prices, then the list prices used for models it does not name."""
    table = open_store(workspace).prices()
    click.echo("workspace price table (per million tokens: prompt, answer):")
    for model, (i, o) in table.items():
        click.echo(f"  {model}: ${i:g}, ${o:g}")
    if not table:
        click.echo("  (empty: set one with `selectllm prices set MODEL INPUT OUTPUT`)")
    click.echo("list prices (2025, by model name prefix; the workspace table wins):")
    for prefix, (i, o) in LIST_PRICES.items():
        click.echo(f"  {prefix}*: ${i:g}, ${o:g}")
    click.echo("The local model costs nothing; a model found in neither table has an unknown cost.")


@prices.command("set")
@click.argument("model")
@click.argument("input_per_mtok", type=click.FloatRange(0))
@click.argument("output_per_mtok", type=click.FloatRange(0))
@workspace_option
def prices_set(model: str, input_per_mtok: float, output_per_mtok: float, workspace: str | None) -> None:
    """Set MODEL's price: INPUT and OUTPUT dollars per million prompt and answer tokens (0 for a free server)."""
    open_store(workspace).set_price(model, input_per_mtok, output_per_mtok)
    click.echo(f"{model}: ${input_per_mtok:g} per million prompt tokens, ${output_per_mtok:g} per million answer "
               "tokens (calls recorded from now on use it)")


@prices.command("remove")
@click.argument("model")
@workspace_option
def prices_remove(model: str, workspace: str | None) -> None:
    """Forget MODEL's price in this workspace (its list price, if any, applies again)."""
    open_store(workspace).remove_price(model)
    click.echo(f"{model}: removed from the workspace price table")


@click.group()
def cache() -> None:
    """The response cache: stored answers that runs, previews and workspaces sharing the cache folder reuse."""


@cache.command("info")
def cache_info() -> None:
    """How many answers are stored, how often they were reused, and where."""
    info = ResponseCache(default_cache_dir()).info()
    click.echo(f"{info['answers']:,} answers stored, {info['hits']:,} reused; {info['bytes'] / 1e6:.1f} MB in "
               f"{info['path']}")


@cache.command("clear")
def cache_clear() -> None:
    """Forget every stored answer (the next runs ask the model again)."""
    n = ResponseCache(default_cache_dir()).clear()
    click.echo(f"{n:,} stored answers removed")


SPEND_COMMANDS = (prices, cache)
