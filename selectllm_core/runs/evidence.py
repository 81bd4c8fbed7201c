"""How far a listwise run's picks can be trusted, from the run alone: validity, order consistency, position bias.

- validity: the share of asked subsets whose answer named k distinct ids of the subset;
- order consistency (`select.orders.run_consistency`): agreement between orders of the same subset, against
  chance, from a run with P >= 2 orders or an order check;
- position bias (`runs.compare.position_bias`): the share of picks at the first two shown positions, against a
  uniform choice, with a chi-square test; every usable order counts, so one run is enough;
- reasons that match their pick (`select.alignment`), when an embedder is given: it embeds the reasons.

`selectllm status`, the Select page, the Compare table and the manifest all read `run_evidence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pool.load import format_text
from selectllm_core.runs.compare import position_bias
from selectllm_core.select.alignment import Alignment, check_reasons
from selectllm_core.select.orders import Consistency, run_consistency
from selectllm_core.store import Store


@dataclass(frozen=True)
class Evidence:
    """A listwise run's evidence (see the module docstring)."""

    asked: int  # subsets with a final answer (ok or failed)
    valid: int  # of those, usable (ok)
    consistency: Consistency
    front_share: float  # picks at shown positions 1-2, as a share of all picks (NaN: no picks)
    front_expected: float  # the same share under a uniform choice
    bias_p: float  # chi-square p-value of the positions against uniform (NaN: too few)
    unchecked: int = 0  # usable subsets shown in one order only (an order check can still ask them)
    alignment: Alignment | None = None  # None: not checked (no embedder given)

    @property
    def validity(self) -> float:
        return self.valid / self.asked if self.asked else math.nan

    @property
    def warning(self) -> str | None:
        """The plain warning a page shows when the picks look no better than random, else None."""
        if self.consistency.at_chance:
            return ("This model's picks are no better than random here: shown in another order, it picked other "
                    f"instructions (order consistency {self.consistency.value:.2f}, chance "
                    f"{self.consistency.chance:.2f}). Use a model that reads the candidates.")
        return None

    def lines(self) -> list[str]:
        """The evidence in sentences, for `selectllm status`."""
        out = [f"valid answers: {self.valid} of {self.asked} subsets" + (f" ({self.validity:.0%})" if self.asked
                                                                          else "")]
        out.append(self.consistency.verdict())
        if not math.isnan(self.front_share):
            test = f", chi-square p = {self.bias_p:.2g}" if not math.isnan(self.bias_p) else ""
            out.append(f"position bias: {self.front_share:.0%} of picks at shown positions 1-2 (uniform: "
                       f"{self.front_expected:.0%}{test})")
        if self.alignment is not None:
            out.append(self.alignment.sentence())
        return out

    def record(self) -> dict:
        """Plain values for the manifest."""
        c = self.consistency
        return {"valid": self.valid, "asked": self.asked, "order_consistency": c.value,
                "order_consistency_chance": None if math.isnan(c.chance) else c.chance,
                "order_consistency_subsets": c.subsets, "order_consistency_source": c.source or None,
                "at_chance": c.at_chance, "front_share": None if math.isnan(self.front_share) else self.front_share,
                "front_expected": None if math.isnan(self.front_expected) else self.front_expected,
                "position_bias_p": None if math.isnan(self.bias_p) else self.bias_p,
                **({"reasons_aligned": self.alignment.aligned, "reasons_judged": self.alignment.judged,
                    "reasons_misaligned": [{"subset": c.subset, "pick": c.pick, "fits_better": c.better}
                                           for c in self.alignment.checks if c.status == "misaligned"]}
                   if self.alignment is not None else {})}


def run_evidence(store: Store, run_id: str, *, embedder: Any = None,
                 cache: EmbeddingCache | None = None) -> Evidence:
    """The evidence of a stored listwise run (a rating method's run has no subsets: all counts are 0).

    With an embedder (the run's embedding model), the reasons are checked against their subsets too.
    """
    results = store.subset_results(run_id)
    alignment = None
    if embedder is not None:
        ids = list(dict.fromkeys(m for r in results if r["status"] == "ok" for m in r["members"]))
        rows = store.row_texts(run_id, ids)
        texts = {rid: format_text(row.instruction, row.input) for rid, row in rows.iterrows()}
        alignment = check_reasons(results, texts, embedder=embedder, cache=cache)
    answered = [r for r in results if r["status"] in ("ok", "failed")]
    bias = position_bias(results)
    observed, expected = bias["observed"], bias["expected"]
    total = observed.sum()
    front = float(observed[:2].sum() / total) if total else math.nan
    front_expected = float(expected[:2].sum() / expected.sum()) if total else math.nan
    return Evidence(len(answered), sum(r["status"] == "ok" for r in answered), run_consistency(results), front,
                    front_expected, bias["p_value"],
                    sum(r["status"] == "ok" and not r.get("orders") for r in answered), alignment)
