"""Which of a run's picks a step works on: every pick not rejected, the accepted ones, or all."""

from __future__ import annotations

import pandas as pd

from selectllm_core.errors import ExportError
from selectllm_core.store import Store

WHICH = ("selected", "accepted", "all")


def which_picks(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of a selection (`Store.selection`) that `which` names: "selected", "accepted" or "all"."""
    if which == "accepted":
        return frame[frame["decision"] == "accepted"]
    if which == "selected":
        return frame[frame["decision"] != "rejected"]
    if which == "all":
        return frame
    raise ExportError(f"Unknown choice {which!r}: export 'selected', 'accepted' or 'all'.")


def selection_frame(store: Store, run_id: str, *, which: str = "selected") -> pd.DataFrame:
    """A run's picks for export: "selected" (all not rejected), "accepted" or "all"."""
    return which_picks(store.selection(run_id), which)
