"""A retry never drops a pick the curator decided or exported: retried subsets fill only what is still open.

Subsets × picks exceed the budget, so the run is trimmed (every subset's first pick, then second picks...).
A retried subset's first pick ranks ahead of earlier second picks; before the fix it pushed a decided second
pick out of the selection, leaving its decision orphaned and the row missing from Review and the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import FakeEmbedder
from fakes import ScriptedBackend, first_k_json

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pipeline import RunConfig, export_run, retry_failed, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent


class FailOnce:
    """Garbage for every call until `healed`, for prompts holding one chosen instruction; else first-k JSON."""

    def __init__(self, marker: str) -> None:
        self.marker, self.healed = marker, False

    def __call__(self, prompt: str, n: int, k: int, attempt: int) -> str:
        if self.marker in prompt and not self.healed:
            return "I cannot choose."
        return first_k_json(prompt, n, k, attempt)


def setup_run(tmp_path: Path) -> tuple[Store, str, FailOnce, ScriptedBackend, int]:
    """60 Dolly rows, 6 subsets of 10 with 2 picks each (12 picks) for a budget of 9: one subset fails."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(60)
    pool = load_pool(frame, name="dolly 60")
    script = FailOnce(frame["instruction"][7])
    backend = ScriptedBackend(script)
    store = Store(tmp_path / "ws.sqlite")
    config = RunConfig(budget=9, subset_size=10, picks_per_subset=2)
    result = run(pool, config, store=store, backend=backend, embedder=FakeEmbedder(), cache=EmbeddingCache())
    assert result.summary["subsets"] == {"ok": 5, "failed": 1} and result.summary["selected"] == 9
    failed = [r["subset"] for r in store.subset_results(result.run_id) if r["status"] == "failed"][0]
    return store, result.run_id, script, backend, failed


def test_accepted_second_picks_survive_a_retry_and_are_exported(tmp_path: Path) -> None:
    store, run_id, script, backend, failed = setup_run(tmp_path)
    before = store.selection(run_id)
    # accept every pick, including the second picks that a retried subset's first pick would push out
    store.set_decisions(run_id, {rid: ("accepted", "") for rid in before["id"]})
    script.healed = True
    out = retry_failed(store, run_id, backend=backend)
    assert out["retried"]["ok"] == 1 and out["selected"] == 9
    after = store.selection(run_id)
    assert set(before["id"]) <= set(after["id"])
    decided = set(store.decisions(run_id)["id"])
    assert decided <= set(after["id"]), "a decision was left without its pick"
    export_run(store, run_id, tmp_path / "accepted.csv", which="accepted")
    exported = pd.read_csv(tmp_path / "accepted.csv", encoding="utf-8-sig", dtype=str)
    assert set(exported["id"]) == set(before["id"])


def test_a_retry_fills_only_the_open_places(tmp_path: Path) -> None:
    store, run_id, script, backend, failed = setup_run(tmp_path)
    before = store.selection(run_id)
    keep = before["id"].tolist()[2:]  # decide the last 7 of 9 (the second picks among them): two stay open
    store.set_decisions(run_id, {rid: ("rejected" if i % 2 else "accepted", "") for i, rid in enumerate(keep)})
    script.healed = True
    retry_failed(store, run_id, backend=backend)
    after = store.selection(run_id)
    assert len(after) == 9 and set(keep) <= set(after["id"])
    results = store.subset_results(run_id)
    order = [r["picks"][0] for r in results] + [r["picks"][1] for r in results]
    fill = [rid for rid in order if rid not in keep][:2]  # the open places go in round-robin order
    assert set(after["id"]) == set(keep) | set(fill)
    assert results[failed]["picks"][0] in order[:6]


def test_exported_picks_stay_selected_after_a_retry(tmp_path: Path) -> None:
    store, run_id, script, backend, failed = setup_run(tmp_path)
    first = export_run(store, run_id, tmp_path / "batch.jsonl")
    sent = [json.loads(line)["id"] for line in first.files[0].read_text().splitlines()]
    script.healed = True
    retry_failed(store, run_id, backend=backend)
    assert set(sent) <= set(store.selection(run_id)["id"])


def test_without_decisions_a_retry_retrims_in_round_robin_order(tmp_path: Path) -> None:
    store, run_id, script, backend, failed = setup_run(tmp_path)
    script.healed = True
    retry_failed(store, run_id, backend=backend)
    results = store.subset_results(run_id)
    expected = [r["picks"][0] for r in results] + [r["picks"][1] for r in results][:3]
    assert store.selection(run_id)["id"].tolist() == expected
