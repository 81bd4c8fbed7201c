"""Reasons that match their picks: each reason against every candidate of its subset, by embedding.

The embedder here is a bag of words (hashed into 4,096 dimensions, unit length), so a reason shares a high cosine
with the candidate whose words it repeats, as MiniLM's vectors do for a reason that describes its row.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pipeline import RunConfig
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.runs.evidence import run_evidence
from selectllm_core.runs.manifest import manifest
from selectllm_core.select.alignment import check_reasons
from selectllm_core.store import Store
from selectllm_core.studio import curate, review
from selectllm_core.studio.run_view import evidence_metrics, subset_table
from tests.fakes import ScriptedBackend, shown_instructions

STOP = {"the", "a", "of", "to", "and", "in", "is", "it", "for", "this", "what", "how", "instruction", "input",
        "response"}


class WordsEmbedder:
    """Hashed bag of words: texts that share words are similar, others are not."""

    model_id = "test-bag-of-words"
    dim = 4096

    def encode(self, texts):  # noqa: ANN001, ANN201 - the Embedder protocol
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                if word not in STOP:
                    out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return out


TOPICS = ["volcanoes erupting lava magma", "mortgage interest fixed rate loans", "sourdough bread baking yeast",
          "chess openings gambit strategy", "glaciers melting ice sheets", "violin bowing technique strings",
          "tax deductions receipts filing", "orbit satellites rockets launch", "coral reefs fish ocean",
          "marathon training running pace", "watercolor painting brushes pigments", "beekeeping hives honey"]


@pytest.fixture
def pool():  # noqa: ANN201 - a Pool
    rows = [{"instruction": f"Explain {topic} in detail ({i})", "input": ""} for i, topic in enumerate(TOPICS * 5)]
    return load_pool(pd.DataFrame(rows), name="topics")


def off_by_one(prompt: str, n: int, k: int, attempt: int) -> str:
    """Picks the first k, each with a reason about the candidate shown after it (reasons describe another row)."""
    shown = shown_instructions(prompt)
    return json.dumps({"picks": [{"id": i, "reason": f"Worth annotating: {shown[i % n]}"} for i in range(1, k + 1)]})


def faithful(prompt: str, n: int, k: int, attempt: int) -> str:
    shown = shown_instructions(prompt)
    return json.dumps({"picks": [{"id": i, "reason": f"Worth annotating: {shown[i - 1]}"} for i in range(1, k + 1)]})


def test_a_reason_about_another_candidate_is_flagged_with_that_candidate() -> None:
    texts = {"a": "Explain volcanoes erupting lava", "b": "Explain mortgage fixed rate loans", "c": "Bake sourdough"}
    results = [{"subset": 0, "status": "ok", "members": ["a", "b", "c"], "picks": ["a", "c"],
                "reasons": {"a": "It covers mortgage loans with a fixed rate.", "c": "Sourdough baking is useful."}}]
    checks = check_reasons(results, texts, embedder=WordsEmbedder()).of(0)
    assert checks["a"].status == "misaligned" and checks["a"].better == "b" and checks["a"].best > checks["a"].own
    assert checks["c"].status == "aligned" and checks["c"].better is None
    generic = check_reasons([{**results[0], "reasons": {"a": "Clear, detailed, valuable.", "c": ""}}], texts,
                            embedder=WordsEmbedder())
    assert [c.status for c in generic.checks] == ["generic"] and generic.share is None  # empty reasons: unchecked


def test_a_run_counts_its_aligned_reasons_and_every_front_end_shows_them(pool, tmp_path: Path) -> None:  # noqa: ANN001
    cache = EmbeddingCache(tmp_path / "cache")
    shares = {}
    for name, answer in (("off by one", off_by_one), ("faithful", faithful)):
        store = Store(tmp_path / f"{name}.sqlite")
        res = run_selectllm(pool, RunConfig(budget=12, subset_size=10), store=store, backend=ScriptedBackend(answer),
                            embedder=WordsEmbedder(), cache=cache, responses=False)
        evidence = run_evidence(store, res.run_id, embedder=WordsEmbedder(), cache=cache)
        shares[name] = evidence.alignment.share
        record = manifest(store, res.run_id)["evidence"]  # the manifest checks nothing: no embedder there
        assert "reasons_aligned" not in record
        assert evidence.record()["reasons_judged"] == evidence.alignment.judged == 12
        labels = {label: value for label, value, _against, _help in evidence_metrics(evidence)}
        assert labels["Reasons that match their pick"] == f"{evidence.alignment.aligned} of 12"
        assert any(line.startswith("reasons that match their pick: ") for line in evidence.lines())
        result = store.subset_results(res.run_id)[0]
        table = subset_table(result, pool.frame.set_index("id"), reasons_checked=evidence.alignment.of(0))
        fits = table.loc[table["pick"].notna(), "fits"].tolist()
        assert fits == (["⚠ fits #2 better", "⚠ fits #3 better"] if name == "off by one" else ["✓ its pick"] * 2)
    assert shares == {"off by one": 0.0, "faithful": 1.0}


def test_review_flags_each_picks_reason_against_its_subset_and_leaves_curator_picks_blank(
        pool, tmp_path: Path) -> None:  # noqa: ANN001
    cache = EmbeddingCache(tmp_path / "cache")
    store = Store(tmp_path / "review.sqlite")
    res = run_selectllm(pool, RunConfig(budget=12, subset_size=10), store=store, backend=ScriptedBackend(off_by_one),
                        embedder=WordsEmbedder(), cache=cache, responses=False)
    picks = store.selection(res.run_id)
    results = {r["subset"]: r for r in store.subset_results(res.run_id)}
    wanted = [f"⚠ fits #{results[s]['members'].index(rid) + 2} better" for rid, s in zip(picks["id"], picks["subset"])]
    assert review.reason_fits(store, res.run_id, picks, embedder=WordsEmbedder(), cache=cache) == wanted
    # a page of rows is checked against its own subsets only, read by subset
    page = picks.iloc[3:5]
    assert [r["subset"] for r in store.subset_results(res.run_id, page["subset"])] == sorted(set(page["subset"]))
    assert review.reason_fits(store, res.run_id, page, embedder=WordsEmbedder(), cache=cache) == wanted[3:5]
    # a curator pick has no model reason to check
    first = picks.iloc[0]
    passed = next(m for m in results[int(first["subset"])]["members"] if m not in set(picks["id"]))
    curate.promote(store, res.run_id, passed, replace=first["id"])
    now = store.selection(res.run_id)
    fits = dict(zip(now["id"], review.reason_fits(store, res.run_id, now, embedder=WordsEmbedder(), cache=cache)))
    assert fits[passed] == "" and first["id"] not in fits
    assert sum(f.startswith("⚠") for f in fits.values()) == len(now) - 1
