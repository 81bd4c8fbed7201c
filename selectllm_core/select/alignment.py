"""Do the model's reasons describe their picks? Each reason against every candidate of its subset, by embedding.

A small model can give pick 3 with a reason about candidate 5. A reason is embedded with the run's embedding
model (through the embedding cache) and compared by cosine similarity with each candidate's text as the run
embedded it. The reason is aligned when its own pick is the candidate it is most similar to; otherwise it is
flagged with the candidate it fits better. The run's share of aligned reasons sits beside validity and order
consistency (`runs.evidence`).

A reason like "clear and detailed" names no content: no candidate is similar to it (cosine about 0.2-0.3 with
MiniLM, against 0.5-0.9 for a reason that describes its row). A reason is judged only when some candidate is at
least `MIN_SIMILARITY` similar to it; the others are "generic", neither aligned nor flagged. A reason is flagged
only when another candidate beats its pick by `MARGIN` or more, so near ties are not called mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from selectllm_core.embed import EmbeddingCache, embed_texts
from selectllm_core.errors import ConfigError

MIN_SIMILARITY = 0.4  # a reason no candidate is this similar to names no candidate ("generic")
MARGIN = 0.05  # another candidate must beat the pick by this much for the reason to be flagged


@dataclass(frozen=True)
class ReasonCheck:
    """One pick's reason against its subset."""

    subset: int
    pick: str
    status: str  # "aligned", "misaligned" (fits `better` more) or "generic" (fits no candidate clearly)
    better: str | None  # the candidate the reason fits best, when that is not the pick
    own: float  # cosine of the reason to its pick
    best: float  # cosine of the reason to the candidate it fits best


@dataclass(frozen=True)
class Alignment:
    """Every checked reason of a run."""

    checks: tuple[ReasonCheck, ...]

    @property
    def judged(self) -> int:
        return sum(c.status != "generic" for c in self.checks)

    @property
    def aligned(self) -> int:
        return sum(c.status == "aligned" for c in self.checks)

    @property
    def share(self) -> float | None:
        """Aligned reasons over the reasons that name a candidate (None: none does)."""
        return self.aligned / self.judged if self.judged else None

    def of(self, subset: int) -> dict[str, ReasonCheck]:
        return {c.pick: c for c in self.checks if c.subset == subset}

    def sentence(self) -> str:
        if not self.checks:
            return "reasons: none to check (ids-only answers, or no usable subset)"
        generic = len(self.checks) - self.judged
        tail = f"; {generic} {'names' if generic == 1 else 'name'} no candidate clearly" if generic else ""
        if not self.judged:
            return f"reasons: none of {len(self.checks)} names a candidate clearly enough to check"
        return (f"reasons that match their pick: {self.aligned} of {self.judged} ({self.share:.0%}){tail}; a "
                "mismatched reason describes another candidate of its subset better than its pick")


def check_reasons(results: Sequence[Mapping], texts: Mapping[str, str], *, embedder: object,
                  cache: EmbeddingCache | None = None) -> Alignment:
    """Check every reason of the usable subsets against the subset's candidates.

    Args:
        results: stored subset outcomes (`Store.subset_results`).
        texts: each candidate's embedded text (the pool's `text` column) by row id.
        embedder: the run's embedding model (its vectors of the candidates come from the cache).
        cache: the embedding cache.
    """
    todo = [(r, pick, reason) for r in results if r["status"] == "ok"
            for pick, reason in (r.get("reasons") or {}).items() if reason and reason.strip() and pick in r["picks"]]
    if not todo:
        return Alignment(())
    members = list(dict.fromkeys(m for r, _, _ in todo for m in r["members"]))
    reasons = list(dict.fromkeys(reason for _, _, reason in todo))
    rows = embed_texts([texts[m] for m in members], embedder=embedder, cache=cache).vectors
    told = embed_texts(reasons, embedder=embedder, cache=cache).vectors
    if rows.shape[1] != told.shape[1]:
        raise ConfigError(
            f"The candidates' cached vectors have {rows.shape[1]} dimensions but {embedder.model_id} gives "
            f"{told.shape[1]}: the embedding cache holds vectors of another model under its id. Clear the cache "
            "folder's vectors of that model, or check the reasons with the model that made them.")
    row = {m: rows[i] for i, m in enumerate(members)}
    said = {reason: told[i] for i, reason in enumerate(reasons)}
    out = []
    for r, pick, reason in todo:
        sims = np.array([float(row[m] @ said[reason]) for m in r["members"]])
        best = int(np.argmax(sims))
        own = float(sims[r["members"].index(pick)])
        if sims[best] < MIN_SIMILARITY:
            status, better = "generic", None
        elif r["members"][best] == pick or sims[best] - own < MARGIN:
            status, better = "aligned", None
        else:
            status, better = "misaligned", r["members"][best]
        out.append(ReasonCheck(r["subset"], pick, status, better, own, float(sims[best])))
    return Alignment(tuple(out))
