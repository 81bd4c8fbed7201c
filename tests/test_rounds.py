"""Rounds (a tournament): when capped subsets outnumber the budget, the winners are asked again, linearly in N."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selectllm_core.errors import BackendError
from selectllm_core.llm.base import ChatResult
from selectllm_core.pipeline import RunConfig, retry_failed
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.runs.manifest import manifest
from selectllm_core.select.spend import SubsetRequest, estimate_spend
from selectllm_core.split import budget
from selectllm_core.split.budget import plan_budget
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder
from tests.fakes import ScriptedBackend
from tests.test_methods import dolly_frame


def test_one_round_when_subsets_fit_the_budget() -> None:
    plan = plan_budget(10_000, 2_000)  # the paper's arithmetic: 1000 subsets of 10, 2 picks each
    assert plan.rounds == (plan,) and plan.total_subsets == 1000 and "round" not in plan.describe()


def test_a_capped_plan_plays_rounds_over_the_winners() -> None:
    # 10,000 rows, budget 50, at most 20 candidates a prompt: 500 subsets of 20 (1 pick each) > 50 places, so the
    # 500 winners play again: min(1000, 50) = 50 subsets of 10, 1 pick each = 50 = the budget.
    plan = plan_budget(10_000, 50, max_subset_size=20, cap_reason="the context holds 20")
    assert [(r.pool_size, r.n_subsets, r.subset_size, r.picks_per_subset) for r in plan.rounds] == [
        (10_000, 500, 20, 1), (500, 50, 10, 1)]
    assert plan.total_subsets == 550 and plan.rounds[1].next_rounds == ()
    text = plan.describe()
    assert text.startswith("2 rounds (550 subsets in all), because 500 subsets are more than the budget of 50")
    assert "round 2: 500 rows -> 50 subsets of 10" in text
    # a cap of 5: 200 -> 40 -> 10 subsets (every round's subsets hold at most 5)
    deep = plan_budget(1_000, 10, max_subset_size=5)
    assert [r.n_subsets for r in deep.rounds] == [200, 40, 10] and max(r.subset_size for r in deep.rounds) <= 5


@pytest.mark.parametrize("cap", [10, 40])
def test_calls_grow_linearly_in_the_pool(cap: int) -> None:
    budget = 1_000
    calls = {n: plan_budget(n, budget, max_subset_size=cap).total_subsets for n in (10_000, 100_000, 1_000_000)}
    # each round keeps at most 1 / cap of the rows: calls <= N / cap * (1 + 1/cap + ...) + the last round
    for n, c in calls.items():  # between two straight lines in N
        assert n / cap <= c <= n / (cap - 1) + budget


def test_the_last_round_possible_says_its_picks_are_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "MAX_ROUNDS", 2)  # the cap of 5 needs 3 rounds (above)
    plan = plan_budget(1_000, 10, max_subset_size=5)
    assert [r.n_subsets for r in plan.rounds] == [200, 40]
    assert "stops after 2 rounds, so the 40 picks of the last are trimmed" in plan.describe()
    monkeypatch.undo()
    # winners too few to split again (24 rows for 20 places in subsets of at most 2): that round is the last
    small = plan_budget(1_500, 20, max_subset_size=2)
    assert small.rounds[-1].n_subsets > 20 and "cannot be split again" in small.rounds[-1].rounds_note


def test_estimate_counts_every_round() -> None:
    plan = plan_budget(400, 5, subset_size=10)  # 40 subsets > 5: round 2 over 40 winners, 4 subsets of 10
    assert [r.n_subsets for r in plan.rounds] == [40, 4]
    text = "Choose the best. " + " ".join(["word"] * 97)  # 100 words: the fake tokenizer counts words
    requests = [SubsetRequest(i, 1, [{"role": "user", "content": text}], {}) for i in range(40)]
    est = estimate_spend(requests, backend=ScriptedBackend(), price=None, answer_format="json", max_tokens=512,
                         rounds=plan.rounds)
    # round 2: 4 calls of 10 rows at round 1's 100 tokens per 10 rows; answers 40 * k + 8 tokens each
    assert est.by_round == ((40, 4_000, 40 * 48), (4, 400, 4 * (40 * 2 + 8)))
    assert est.calls == 44 and est.prompt_tokens == 4_400
    assert any(line.startswith("  round 2: 4 calls") for line in est.lines())


@pytest.fixture
def pool(shared_data: Path):  # noqa: ANN201 - a Pool
    return load_pool(dolly_frame(shared_data, rows=120), name="dolly-120")


def _config() -> RunConfig:
    # 120 rows in subsets of 10: 12 subsets for a budget of 5, so round 2 asks among the 12 winners
    return RunConfig(budget=5, subset_size=10)


def test_run_plays_the_rounds_and_records_each(pool, tmp_path: Path) -> None:  # noqa: ANN001
    store, backend = Store(tmp_path / "ws.sqlite"), ScriptedBackend()
    res = run_selectllm(pool, _config(), store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
    rounds = store.rounds(res.run_id)
    assert [(r["round"], r["first_subset"], r["n_subsets"], r["n_rows"]) for r in rounds] == [
        (1, 0, 12, 120), (2, 12, 2, 12)]
    results = {r["subset"]: r for r in store.subset_results(res.run_id)}
    first = [m for s in range(12) for m in results[s]["members"]]
    assert sorted(first) == sorted(pool.frame["id"])  # round 1 shows every row exactly once
    winners = [p for s in range(12) for p in results[s]["picks"]]
    assert len(winners) == 12 and sorted(m for s in (12, 13) for m in results[s]["members"]) == sorted(winners)
    final = {p for s in (12, 13) for p in results[s]["picks"]}
    selection = store.selection(res.run_id)
    assert len(selection) == 5 and set(selection["id"]) <= final  # only the last round's picks are selected
    for pick in selection.itertuples():  # each pick names the last round's subset that chose it, and its reason
        assert pick.subset in (12, 13) and pick.id in results[pick.subset]["picks"]
        assert pick.reason == results[pick.subset]["reasons"][pick.id]
    assert len(backend.calls) == 14 and res.stats["rounds"] == 2
    usage = store.round_usage(res.run_id)
    assert usage["calls"].tolist() == [12, 2] and (usage["prompt_tokens"] > 0).all()
    assert usage["prompt_tokens"].sum() == store.usage(res.run_id)["prompt_tokens"]
    assert [r["round"] for r in manifest(store, res.run_id)["rounds"]] == [1, 2]
    # the same run again asks nothing
    again = run_selectllm(pool, _config(), store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
    assert again.run_id == res.run_id and len(backend.calls) == 14


class _Flaky(ScriptedBackend):
    """Cannot reach the model on its 3rd call, once."""

    def chat(self, messages, **kwargs) -> ChatResult:  # noqa: ANN001, ANN003
        if len(self.calls) == 2 and not getattr(self, "failed", False):
            self.failed = True
            self.calls.append(messages)
            raise BackendError("connection refused")
        return super().chat(messages, **kwargs)


def test_a_round_with_an_unreached_subset_stops_and_resumes(pool, tmp_path: Path) -> None:  # noqa: ANN001
    store, backend = Store(tmp_path / "ws.sqlite"), _Flaky()
    with pytest.raises(BackendError, match="Round 1 has 1 subset"):
        run_selectllm(pool, _config(), store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
    run_id = store.list_runs()["run_id"].iat[0]
    assert store.get_run(run_id)["status"] == "interrupted" and len(store.rounds(run_id)) == 1
    res = run_selectllm(pool, _config(), store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
    # 12 round-1 calls (one unreached), then the unreached subset again and round 2's two subsets
    assert len(backend.calls) == 12 + 1 + 2 and len(store.selection(res.run_id)) == 5


def test_retrying_a_first_round_subset_plays_the_later_rounds_again(pool, tmp_path: Path) -> None:  # noqa: ANN001
    store, backend = Store(tmp_path / "ws.sqlite"), ScriptedBackend()
    res = run_selectllm(pool, _config(), store=store, backend=backend, embedder=FakeEmbedder())
    sent = store.usage(res.run_id)["sent"]
    out = retry_failed(store, res.run_id, backend=backend, subsets=[0], embedder=FakeEmbedder())
    # subset 0 is asked again (a retry does not read the cache); it picks the same, so round 2's requests are
    # the same as before and come from the response cache
    assert store.usage(res.run_id)["sent"] == sent + 1 and out["selected"] == 5
    assert len(store.rounds(res.run_id)) == 2 and store.usage(res.run_id)["cached"] == 2


def test_the_cli_plans_runs_and_reports_the_rounds(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from selectllm_core.cli import main
    from tests.fake_openai_server import FakeOpenAIServer
    from tests.test_spend import MODEL, PRICE, pool_file, priced_store

    def first_k(body: dict, index: int) -> dict:  # the first k candidates, k read from the prompt
        k = int(re.search(r"select (\d+) instructions", body["messages"][-1]["content"]).group(1))
        return {"content": json.dumps({"picks": [{"id": i, "reason": "clear"} for i in range(1, k + 1)]})}

    path, ws = pool_file(tmp_path, 120), tmp_path / "ws.sqlite"
    priced_store(ws)
    with FakeOpenAIServer(responder=first_k, price_per_mtok=PRICE, lifetime=120.0, max_requests=100) as server:
        common = ["--budget", "5", "--subset-size", "10", "--backend", "openai", "--model", MODEL,
                  "--base-url", server.base_url, "--workspace", str(ws)]
        planned = CliRunner().invoke(main, ["plan", str(path), *common])
        assert planned.exit_code == 0, planned.output
        assert "2 rounds (14 subsets in all), because 12 subsets are more than the budget of 5" in planned.output
        assert "LLM calls: 14 (0 answered by the response cache" in planned.output
        assert "  round 2: 2 calls" in planned.output and not server.requests
        ran = CliRunner().invoke(main, ["run", str(path), *common, "--no-export", "--json"])
        assert ran.exit_code == 0, ran.output
        run_id = json.loads(ran.stdout)["run_id"]
        assert len(server.requests) == 14
    status = CliRunner().invoke(main, ["status", run_id, "--workspace", str(ws)])
    assert "  round 1: 120 rows in 12 subsets, 1 pick(s) each; 12 answers (0 from the cache)" in status.output
    assert "  round 2: 12 rows in 2 subsets, 3 pick(s) each; 2 answers" in status.output
    billed = sum(r["cost"] for r in manifest(Store(ws), run_id)["rounds"])
    assert billed == pytest.approx(server.billed, rel=1e-6)  # each round's money adds up to what the server charged


def test_the_pages_rounds_tables(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.studio import rounds_view

    plan = plan_budget(10_000, 50, max_subset_size=20)
    assert rounds_view.plan_summary(plan) == ("2 rounds: 10,000 → 500 rows, then the last round's picks are trimmed "
                                              "to the budget of 50; 550 subsets in all")
    table = rounds_view.plan_table(plan)
    assert table["subsets"].tolist() == [500, 50] and table["passes on"].tolist() == [500, 50]
    store = Store(tmp_path / "ws.sqlite")
    res = run_selectllm(pool, _config(), store=store, backend=ScriptedBackend(), embedder=FakeEmbedder(),
                        responses=False)
    ran = rounds_view.run_table(store, res.run_id)
    assert ran["subsets answered"].tolist() == ["12 / 12", "2 / 2"] and ran["calls"].tolist() == [12, 2]
    assert ran["cost"].tolist() == ["unknown (no price for this model)"] * 2  # the fake model has no price
    one = run_selectllm(pool, RunConfig(budget=20, subset_size=10), store=store, backend=ScriptedBackend(),
                        embedder=FakeEmbedder(), responses=False)
    assert rounds_view.run_table(store, one.run_id).empty  # one round: the run panel shows no rounds table
