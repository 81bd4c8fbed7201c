"""End to end through the `selectllm` command on real Dolly data with the bundled models.

One module-scoped run of the full pipeline on the AlpaGasus Dolly 3k file (a seeded sample of 400 of its rows,
so the bundled SmolLM2 reads about 15k prompt tokens, not 100k), then the same command again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectllm_core.embed import BUNDLED_MODEL, EmbeddingCache, text_key
from selectllm_core.pipeline import sample_pool
from selectllm_core.pool.load import load_pool
from selectllm_core.split import make_subsets, plan_budget
from selectllm_core.store import Store
from tests.test_subsets import check_diverse_invariants

pytestmark = pytest.mark.slow
BUDGET, SUBSET_SIZE, MAX_INPUT, SAMPLE = 12, 20, 200, 400


def selectllm(args: list[str], env: dict, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selectllm_core", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "SELECTLLM_WORKSPACE": str(root / "ws.sqlite"), "SELECTLLM_CACHE_DIR": str(root / "cache"),
           "HF_HUB_OFFLINE": "1"}
    pool = shared_data / "dolly_alpagasus_3k.jsonl.gz"
    args = ["run", str(pool), "--budget", str(BUDGET), "--subset-size", str(SUBSET_SIZE),
            "--max-input-chars", str(MAX_INPUT), "--sample", str(SAMPLE), "--json"]
    first = selectllm([*args, "--out", str(root / "first.csv")], env)
    assert first.returncode == 0, first.stderr[-3000:]
    calls_after_first = Store(root / "ws.sqlite").count_calls()
    second = selectllm([*args, "--out", str(root / "second.csv")], env)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"root": root, "pool": pool, "first": json.loads(first.stdout), "second": json.loads(second.stdout),
            "calls_after_first": calls_after_first, "store": Store(root / "ws.sqlite")}


def test_exports_exactly_the_budget_each_row_from_a_valid_subset_with_a_reason(e2e: dict) -> None:
    out = e2e["first"]
    assert out["selected"] == BUDGET and out["short_by"] == 0
    exported = pd.read_csv(e2e["root"] / "first.csv", keep_default_na=False, dtype=str)
    assert len(exported) == BUDGET
    assert list(exported.columns[:8]) == ["id", "instruction", "input", "cluster", "subset", "reason", "origin",
                                         "run_id"]
    assert "category" in exported.columns  # an extra column of the pool, kept to the end
    results = {r["subset"]: r for r in e2e["store"].subset_results(out["run_id"])}
    for row in exported.itertuples():
        subset = results[int(row.subset)]
        assert subset["status"] == "ok" and row.id in subset["picks"]
        assert row.reason.strip() and row.reason == subset["reasons"][row.id]
    manifest = json.loads((e2e["root"] / "first.manifest.json").read_text())
    assert manifest["run_id"] == out["run_id"] and manifest["params"]["budget"] == BUDGET


def test_the_same_command_again_embeds_nothing_and_calls_nothing(e2e: dict) -> None:
    first, second = e2e["first"], e2e["second"]
    assert first["stats"]["embedded_new"] == SAMPLE and first["stats"]["llm_calls_new"] >= SAMPLE // SUBSET_SIZE
    assert second["run_id"] == first["run_id"]
    assert second["stats"]["embedded_new"] == 0 and second["stats"]["embedded_cached"] == first["stats"]["embedded_new"]
    assert second["stats"]["llm_calls_new"] == 0
    assert e2e["store"].count_calls() == e2e["calls_after_first"]
    a = pd.read_csv(e2e["root"] / "first.csv", dtype=str)
    b = pd.read_csv(e2e["root"] / "second.csv", dtype=str)
    pd.testing.assert_frame_equal(a, b)


def test_diverse_split_invariants_on_real_embeddings(e2e: dict) -> None:
    pool = sample_pool(load_pool(e2e["pool"]), SAMPLE, seed=0)
    cache = EmbeddingCache(e2e["root"] / "cache")
    keys = [text_key(t) for t in pool.frame["text"]]
    found = cache.get_many(BUNDLED_MODEL, keys)
    assert len(found) == len(set(keys))  # every vector came from the run's cache: nothing recomputed here
    vectors = np.stack([found[k] for k in keys])
    budget = plan_budget(len(pool.frame), BUDGET, subset_size=SUBSET_SIZE)
    plan = make_subsets(vectors, budget, strategy="diverse", random_state=0)
    check_diverse_invariants(plan)
    stored = e2e["store"].plan(e2e["first"]["run_id"])
    assert stored["subset"].tolist() == plan.subset_of().tolist()
    assert stored["cluster"].tolist() == plan.cluster_of.tolist()
