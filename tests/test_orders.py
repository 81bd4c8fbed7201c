"""Position-debiased SelectLLM: each subset in P orders, Borda over the answers, and order consistency as evidence.

Two scripted models: one picks the first k positions whatever they hold (a position picker, like SmolLM2 on
these prompts), one picks by content (the k instructions with the smallest digest, wherever they are shown).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from selectllm_core.methods.selectllm import estimate
from selectllm_core.pipeline import RunConfig
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.runs.compare import position_bias
from selectllm_core.select.orders import borda, check_sample, orders_of, pair_agreement, run_consistency
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder
from tests.fakes import ScriptedBackend, first_k_json, shown_instructions
from tests.test_methods import dolly_frame


def by_content(prompt: str, n: int, k: int, attempt: int) -> str:
    """The k instructions with the smallest digest, wherever they are shown, best first."""
    shown = shown_instructions(prompt)
    best = sorted(range(len(shown)), key=lambda i: hashlib.sha256(shown[i].encode()).hexdigest())[:k]
    return json.dumps({"picks": [{"id": i + 1, "reason": f"about {shown[i][:30]}"} for i in best]})


@pytest.fixture
def pool(shared_data: Path):  # noqa: ANN201 - a Pool
    return load_pool(dolly_frame(shared_data, rows=60), name="dolly-60")


def _run(pool, backend, tmp_path: Path, **config):  # noqa: ANN001, ANN003, ANN202
    store = Store(tmp_path / "ws.sqlite")
    cfg = RunConfig(budget=12, subset_size=10, **config)  # 6 subsets of 10, 2 picks each
    res = run_selectllm(pool, cfg, store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
    return store, res, cfg


def test_orders_are_the_shown_order_its_reverse_then_distinct_seeded_shuffles() -> None:
    views = orders_of(10, 4, seed=[0, 3])
    assert views[0] == list(range(10)) and views[1] == list(range(10))[::-1]
    assert len({tuple(v) for v in views}) == 4 and all(sorted(v) == list(range(10)) for v in views)
    assert views == orders_of(10, 4, seed=[0, 3]) and views != orders_of(10, 4, seed=[0, 4])


def test_borda_counts_ranks_and_breaks_ties_by_votes_then_rank() -> None:
    assert borda([["a", "b"], ["b", "c"]], k=2) == ["b", "a"]  # b 1 + 2 points, a 2, c 1
    assert borda([["a", "b"], ["c", "a"], ["c", "b"]], k=1) == ["c"]  # k=1: a 1, c 2
    assert borda([["x", "y"], ["y", "x"]], k=2) == ["x", "y"]  # a tie of points and votes: the best rank, then order
    assert pair_agreement([["a", "b"], ["b", "c"], ["a", "b"]]) == pytest.approx(((0.5 + 1.0 + 0.5) / 3, 3))


def test_a_content_reader_agrees_with_itself_in_every_order_and_keeps_its_picks(pool, tmp_path: Path) -> None:  # noqa: ANN001
    once_store, once, _ = _run(pool, ScriptedBackend(by_content), tmp_path / "p1")
    backend = ScriptedBackend(by_content)
    store, res, _ = _run(pool, backend, tmp_path / "p4", orders=4)
    assert len(backend.calls) == 4 * 6, "P orders cost P calls a subset"
    assert res.run_id != once.run_id
    assert set(store.selection(res.run_id)["id"]) == set(once_store.selection(once.run_id)["id"])
    results = store.subset_results(res.run_id)
    assert all(len(r["orders"]) == 4 and len({tuple(sorted(o["picks"])) for o in r["orders"]}) == 1 for r in results)
    assert all(r["reasons"][p].startswith("about ") for r in results for p in r["picks"])
    c = run_consistency(results)
    assert c.value == 1.0 and c.subsets == 6 and c.chance == pytest.approx(0.2) and c.clearly_above
    assert "follow the content" in c.verdict()


def test_a_position_picker_is_at_chance_and_says_so(pool, tmp_path: Path) -> None:  # noqa: ANN001
    backend = ScriptedBackend(first_k_json)
    store, res, _ = _run(pool, backend, tmp_path, orders=2)
    results = store.subset_results(res.run_id)
    c = run_consistency(results)
    # shown order and its reverse: the first two positions of one are the last two of the other
    assert c.value == 0.0 and c.at_chance
    assert "no better than random here" in c.verdict()
    assert len(store.selection(res.run_id)) == 12
    # in 4 orders (2 of them shuffles) its agreement is near chance, and still called no better than random
    four_store, four, _ = _run(pool, ScriptedBackend(first_k_json), tmp_path / "p4", orders=4)
    c4 = run_consistency(four_store.subset_results(four.run_id))
    assert c4.value < 0.4 and c4.at_chance and "no better than random here" in c4.verdict()
    # every order's picks count in the position-bias report: each order picked positions 1 and 2 only
    bias = position_bias(results)
    assert bias["picks"] == 2 * 2 * 6 and bias["observed"][:2].tolist() == [12, 12] and bias["p_value"] < 1e-6


def test_an_order_check_measures_consistency_and_leaves_the_papers_picks(pool, tmp_path: Path) -> None:  # noqa: ANN001
    plain_store, plain, _ = _run(pool, ScriptedBackend(first_k_json), tmp_path / "plain")
    backend = ScriptedBackend(first_k_json)
    store, res, cfg = _run(pool, backend, tmp_path / "check", check_orders=3)
    assert len(backend.calls) == 6 + 3
    assert store.selection(res.run_id)["id"].tolist() == plain_store.selection(plain.run_id)["id"].tolist()
    results = store.subset_results(res.run_id)
    checked = [r["subset"] for r in results if r["orders"]]
    assert sorted(checked) == sorted(check_sample(6, 3, seed=0)) and len(checked) == 3
    assert all([o["role"] for o in r["orders"]] == ["vote", "check"] for r in results if r["orders"])
    c = run_consistency(results)
    assert c.subsets == 3 and c.source == "check" and c.at_chance
    assert run_consistency(plain_store.subset_results(plain.run_id)).value is None  # not measured: it says how
    assert "--check-orders" in run_consistency([]).verdict()
    _plan, _split, spend = estimate(pool, cfg, backend=ScriptedBackend(), store=store, vectors=FakeEmbedder().encode(
        pool.frame["text"].tolist()), responses=False)
    assert spend.calls == 9, "the estimate counts the check's calls"


def test_the_estimate_counts_every_order_and_the_id_changes_only_when_orders_are_used(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.pipeline import run_id_of

    store, backend = Store(tmp_path / "ws.sqlite"), ScriptedBackend()
    cfg = RunConfig(budget=12, subset_size=10)
    vectors = FakeEmbedder().encode(pool.frame["text"].tolist())
    spends = [estimate(pool, replace(cfg, orders=p), backend=backend, store=store, vectors=vectors,
                       responses=False)[2] for p in (1, 2, 8)]
    assert [s.calls for s in spends] == [6, 12, 48]
    assert spends[2].prompt_tokens > 7 * spends[0].prompt_tokens
    ids = {run_id_of(pool, replace(cfg, orders=p, check_orders=c), backend) for p, c in ((1, 0), (2, 0), (1, 2))}
    assert len(ids) == 3


def test_a_failed_order_leaves_the_others_to_vote_and_says_so(pool, tmp_path: Path) -> None:  # noqa: ANN001
    prompts: dict[frozenset, list[str]] = {}  # each subset's distinct prompts, in the order they were asked

    def flaky(prompt: str, n: int, k: int, attempt: int) -> str:
        shown = shown_instructions(prompt)
        asked = prompts.setdefault(frozenset(shown), [])
        if prompt not in asked:
            asked.append(prompt)
        second_order_of_an_odd_subset = asked.index(prompt) == 1 and len(prompts) % 2 == 1
        return "I cannot choose." if second_order_of_an_odd_subset else by_content(prompt, n, k, attempt)

    store, res, _ = _run(pool, ScriptedBackend(flaky), tmp_path, orders=2)
    results = store.subset_results(res.run_id)
    assert all(r["status"] == "ok" and len(r["picks"]) == 2 for r in results)
    partial = [r for r in results if any(o["picks"] is None for o in r["orders"])]
    assert partial and all("1 of 2 orders gave usable answers" in (r["note"] or "") for r in partial)
    assert all(r["raw"] for r in partial), "the unusable answers are kept"


def test_the_cli_runs_two_orders_and_status_and_manifest_warn_at_chance(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from selectllm_core.cli import main
    from selectllm_core.runs.manifest import manifest
    from tests.fake_openai_server import FakeOpenAIServer
    from tests.test_spend import MODEL, PRICE, pool_file, priced_store

    def first_k(body: dict, index: int) -> dict:  # a position picker behind a real HTTP client
        k = int(re.search(r"select (\d+) instructions", body["messages"][-1]["content"]).group(1))
        return {"content": json.dumps({"picks": [{"id": i, "reason": "clear"} for i in range(1, k + 1)]})}

    path, ws = pool_file(tmp_path, 60), tmp_path / "ws.sqlite"
    priced_store(ws)
    with FakeOpenAIServer(responder=first_k, price_per_mtok=PRICE, lifetime=120.0, max_requests=100) as server:
        common = ["--budget", "12", "--subset-size", "10", "--orders", "2", "--backend", "openai", "--model", MODEL,
                  "--base-url", server.base_url, "--workspace", str(ws)]
        planned = CliRunner().invoke(main, ["plan", str(path), *common])
        assert planned.exit_code == 0, planned.output
        assert "LLM calls: 12 (0 answered by the response cache" in planned.output
        ran = CliRunner().invoke(main, ["run", str(path), *common, "--no-export", "--json"])
        assert ran.exit_code == 0, ran.output
        assert len(server.requests) == 12
    run_id = json.loads(ran.stdout)["run_id"]
    status = CliRunner().invoke(main, ["status", run_id, "--workspace", str(ws)])
    assert "  valid answers: 6 of 6 subsets (100%)" in status.output
    assert "Order consistency 0.00 over 6 subset(s) (chance 0.20" in status.output
    assert "WARNING: This model's picks are no better than random here" in status.output
    assert "position bias: 100% of picks at shown positions 1-2 (uniform: 20%" in status.output
    evidence = manifest(Store(ws), run_id)["evidence"]
    assert evidence["order_consistency"] == 0.0 and evidence["at_chance"] and evidence["valid"] == 6


def test_a_finished_run_is_checked_afterwards_at_a_stated_cost_and_keeps_its_picks(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from selectllm_core.cli import main
    from selectllm_core.errors import ConfigError
    from selectllm_core.pipeline import check_orders

    store, res, _ = _run(pool, ScriptedBackend(by_content), tmp_path)
    before = store.selection(res.run_id)[["id", "reason"]].to_dict("records")
    backend = ScriptedBackend(by_content)
    c = check_orders(store, res.run_id, backend=backend, subsets=2, responses=False)
    assert len(backend.calls) == 2 and c.subsets == 2 and c.value == 1.0 and c.source == "check"
    assert store.selection(res.run_id)[["id", "reason"]].to_dict("records") == before, "evidence only"
    assert store.usage(res.run_id)["calls"] == 6 + 2, "the check's calls are in the ledger"
    again = check_orders(store, res.run_id, backend=backend, subsets=10, responses=False)
    assert len(backend.calls) == 6 and again.subsets == 6, "only the unchecked subsets are asked"
    with pytest.raises(ConfigError, match="same backend"):
        check_orders(store, res.run_id, backend=ScriptedBackend(label="another model"), subsets=1)
    # through the command, a position picker's run warns
    ws = tmp_path / "cli.sqlite"
    picker_store = Store(ws)
    picked = run_selectllm(pool, RunConfig(budget=12, subset_size=10), store=picker_store, backend=ScriptedBackend(),
                           embedder=FakeEmbedder(), responses=False)
    from selectllm_core import cli

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.commands, "backend_from", lambda o: ScriptedBackend())
        out = CliRunner().invoke(main, ["check-orders", picked.run_id, "--subsets", "3", "--workspace", str(ws)])
    assert out.exit_code == 0, out.output
    assert "Order consistency 0.00 over 3 subset(s)" in out.output and "WARNING: This model's picks" in out.output


def test_compare_lists_each_runs_order_consistency_and_says_which_is_at_chance(pool, tmp_path: Path) -> None:  # noqa: ANN001
    import math

    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.runs.compare import compare_runs

    store = Store(tmp_path / "ws.sqlite")
    runs = [run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=p), store=store, backend=backend,
                          embedder=FakeEmbedder(), responses=False).run_id
            for p, backend in ((2, ScriptedBackend()), (1, ScriptedBackend(by_content, label="reader")))]
    c = compare_runs(store, runs, embedder=FakeEmbedder(), cache=EmbeddingCache(tmp_path / "cache"))
    bias = c.position_bias.set_index("run")
    assert bias.at[runs[0], "order_consistency"] == 0.0 and bias.at[runs[0], "orders"] == 2
    assert math.isnan(bias.at[runs[1], "order_consistency"])
    assert any(f"run {runs[0]}: this model's picks are no better than random here" in n for n in c.notes)
    assert any("check-orders" in n for n in c.notes)
