"""What the Data and Map pages show of near-duplicate groups: the words, a table of examples, each row's role.

The groups come from `selectllm_core.embed.neardup`; these are plain functions of them that tests call
directly, so the pages only read the τ control, call the core and render.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from selectllm_core.embed.neardup import DEFAULT_TAU, NearDuplicates
from selectllm_core.pool.load import Pool, PoolReport

TAU_MIN, TAU_MAX, TAU_STEP = 0.80, 1.00, 0.01
KEPT = "kept: first of a near-duplicate group"
NEAR = "near-duplicate of a kept row"
NONE = "no near-duplicate"
ROLES = (NONE, NEAR, KEPT)  # drawing order on the map: the groups on top, each kept row above its near-duplicates
TAU_HELP = ("Cosine similarity of two rows' embeddings, from 0 (unrelated) to 1 (the same meaning). Two rows at or "
            f"above τ count as near-duplicates. {DEFAULT_TAU} (the default) finds rewordings of one request; "
            "lower values also group rows that only share a topic.")


def explain(dups: NearDuplicates, report: PoolReport) -> str:
    """What a group is, what τ means and how the groups relate to the exact duplicates the loader dropped."""
    exact = report.duplicates_dropped
    dropped = (f"The {exact:,} exact duplicate{'s' if exact != 1 else ''} (same instruction and input) "
               f"{'were' if exact != 1 else 'was'} dropped when the pool was loaded" if exact
               else "The pool had no exact duplicates (same instruction and input)")
    return (f"Rows whose embeddings have cosine similarity ≥ τ = {dups.tau:g} ask for nearly the same thing in other "
            "words. Each group is one kept row (the first in pool order) and the rows at least τ similar to it. "
            f"{dropped}; the rows here all differ in their text, so the two counts add up.")


def counts(dups: NearDuplicates) -> list[tuple[str, str]]:
    """(label, value) of the figures shown above the examples."""
    return [("Near-duplicate groups", f"{dups.n_groups:,}"), ("Rows in groups", f"{dups.rows_in_groups:,}"),
            ("Rows 'keep one per group' drops", f"{dups.n_dropped:,}")]


def example_table(dups: NearDuplicates, pool: Pool, *, groups: int = 5) -> pd.DataFrame:
    """The first groups, one line per row: group, role, cosine to the kept row, instruction, input, id.

    Args:
        dups: the pool's groups.
        pool: the pool they were found in.
        groups: how many groups to show.

    Returns:
        A frame with columns group, role, similarity (None for the kept row), instruction, input, id.
    """
    shown = list(zip(dups.groups[:groups], dups.similarity, strict=False))
    lines = pd.DataFrame({
        "group": [g for g, (group, _) in enumerate(shown, start=1) for _ in group],
        "role": [r for group, _ in shown for r in ["kept"] + ["near-duplicate"] * (len(group) - 1)],
        "similarity": [s for _, sims in shown for s in (None, *sims)],
        "id": [rid for group, _ in shown for rid in group]})
    text = pool.frame[["instruction", "input"]].set_axis(pool.frame["id"].astype(str))
    lines[["instruction", "input"]] = text.loc[lines["id"]].to_numpy() if len(lines) else []
    return lines[["group", "role", "similarity", "instruction", "input", "id"]]


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The example table as the pages show it: similarity as text with three decimals, blank on the kept row."""
    return table.assign(similarity=[f"{v:.3f}" if pd.notna(v) else "" for v in table["similarity"]])


def roles(ids: Sequence[str], dups: NearDuplicates | None) -> tuple[list[str], list[str]]:
    """Each row's role (KEPT, NEAR or NONE) and a line for its hover ("" outside any group)."""
    where: dict[str, tuple[str, str]] = {}
    for g, (group, sims) in enumerate(zip(dups.groups, dups.similarity, strict=True) if dups else (), start=1):
        where[group[0]] = (KEPT, f"near-duplicate group {g}: kept ({len(group) - 1} more)")
        for rid, sim in zip(group[1:], sims, strict=True):
            where[rid] = (NEAR, f"near-duplicate group {g}: cosine {sim:.3f} to the kept row")
    found = [where.get(str(i), (NONE, "")) for i in ids]
    return [r for r, _ in found], [h for _, h in found]


def keep_label(dups: NearDuplicates) -> str:
    """The button's label: what pressing it makes."""
    return f"Keep one per group: save a pool of {dups.rows - dups.n_dropped:,} rows and open it"


def keep_help(dups: NearDuplicates, pool: Pool) -> str:
    """What the button does, in full, before it is pressed."""
    return (f"Saves a new pool, '{pool.name} (one per near-duplicate group, τ={dups.tau:g})', without the "
            f"{dups.n_dropped:,} rows listed as near-duplicates, and makes it the current pool; runs then select "
            "from it. This pool stays in the workspace unchanged, and the picker above opens it again.")


def not_embedded(pool: Pool, model_id: str) -> str:
    """Why no groups are shown yet, and what shows them."""
    return (f"This pool is not embedded with {model_id} yet, and near-duplicates are found from the embeddings. "
            "The Map page embeds it (and caches the vectors); or embed it here.")


def not_searched(rows: int) -> str:
    """Why a large pool's groups wait for a press."""
    return (f"Near-duplicates are not searched yet at this τ. The search compares every pair of the {rows:,} rows "
            "exactly; its time grows with the square of the rows (about a minute for 100,000 rows on two cores), "
            "and its result is cached.")
