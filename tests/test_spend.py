"""Money: the response cache, each call's cost in the ledger, and the spending cap, against a fake paid server.

The fake OpenAI-compatible server counts the requests it gets and bills each one by its own tokens, so these
tests compare what the studio says it spent with what a server would have charged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import FakeEmbedder
from fake_openai_server import FakeOpenAIServer

from selectllm_core.cli import main
from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import ConfigError, SpendCapReached
from selectllm_core.llm import OpenAICompatibleBackend
from selectllm_core.llm.cache import ResponseCache
from selectllm_core.pipeline import RunConfig, manifest, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent
PRICE = (2.0, 8.0)  # dollars per million prompt and answer tokens
MODEL = "paid-model"


@pytest.fixture
def server():
    reply = '{"picks": [{"id": 1, "reason": "clear and useful"}, {"id": 2, "reason": "a distinct task"}]}'
    with FakeOpenAIServer(reply=reply, price_per_mtok=PRICE, lifetime=120.0, max_requests=500) as s:
        yield s


def backend_for(server: FakeOpenAIServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(base_url=server.base_url, model=MODEL, api_key="sk-test-spend-0123", max_retries=0, concurrency=1)


def pool_file(tmp_path: Path, rows: int = 30) -> Path:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(rows)
    path = tmp_path / "pool.jsonl"
    frame.to_json(path, orient="records", lines=True)
    return path


def priced_store(path: Path) -> Store:
    store = Store(path)
    store.set_price(MODEL, *PRICE)
    return store


def select(pool, store: Store, server: FakeOpenAIServer, *, budget: int = 6, **kw):
    config = RunConfig(budget=budget, subset_size=10, picks_per_subset=2)
    return run(pool, config, store=store, backend=backend_for(server), embedder=FakeEmbedder(),
               cache=EmbeddingCache(), **kw)


def test_a_run_that_differs_only_in_budget_asks_nothing_again(tmp_path: Path, server: FakeOpenAIServer) -> None:
    pool = load_pool(pool_file(tmp_path))
    store = priced_store(tmp_path / "ws.sqlite")
    first = select(pool, store, server, budget=6)
    sent = len(server.requests)
    assert sent == 3 and first.stats["llm_calls_sent"] == 3 and first.stats["llm_answers_cached"] == 0
    second = select(pool, store, server, budget=5)  # another budget: another run, the same three prompts
    assert second.run_id != first.run_id
    assert len(server.requests) == sent, "a request answered before was sent again"
    assert second.stats["llm_answers_cached"] == 3 and second.stats["cost"] == 0
    usage = store.usage(second.run_id)
    assert usage["cached"] == 3 and usage["sent"] == 0 and usage["cost"] == 0
    # the cached answers are the answers: the same picks, trimmed to the other budget
    picks = store.selection(first.run_id)["id"].tolist()
    assert store.selection(second.run_id)["id"].tolist() == picks[:5]


def test_workspaces_sharing_the_cache_folder_share_answers_and_off_means_off(tmp_path: Path,
                                                                             server: FakeOpenAIServer) -> None:
    pool = load_pool(pool_file(tmp_path))
    select(pool, priced_store(tmp_path / "a.sqlite"), server)
    assert len(server.requests) == 3
    other = select(pool, priced_store(tmp_path / "b.sqlite"), server)
    assert len(server.requests) == 3 and other.stats["llm_answers_cached"] == 3
    off = select(pool, priced_store(tmp_path / "c.sqlite"), server, responses=False)
    assert len(server.requests) == 6 and off.stats["response_cache"] == "off" and off.stats["llm_calls_sent"] == 3
    assert ResponseCache(tmp_path / "cache").clear() == 3
    select(pool, priced_store(tmp_path / "d.sqlite"), server)
    assert len(server.requests) == 9, "a cleared cache still answered"


def test_every_call_is_stored_with_what_the_server_bills(tmp_path: Path, server: FakeOpenAIServer) -> None:
    store = priced_store(tmp_path / "ws.sqlite")
    result = select(load_pool(pool_file(tmp_path)), store, server)
    calls = store.calls(result.run_id)
    assert calls["cost"].notna().all() and (calls["cost"] > 0).all()
    assert store.usage(result.run_id)["cost"] == pytest.approx(server.billed, rel=1e-6)
    assert result.stats["cost"] == pytest.approx(server.billed, rel=1e-6)
    assert manifest(store, result.run_id)["usage"]["cost"] == pytest.approx(server.billed, rel=1e-6)


def test_a_model_without_a_price_has_an_unknown_cost_never_zero(tmp_path: Path, server: FakeOpenAIServer) -> None:
    store = Store(tmp_path / "ws.sqlite")  # no price for paid-model, and it is not a list-priced model
    result = select(load_pool(pool_file(tmp_path)), store, server)
    assert result.stats["cost"] is None and result.stats["price_source"] == "no price known"
    assert store.usage(result.run_id)["unpriced"] == 3
    with pytest.raises(ConfigError, match="No price is known for the model 'paid-model'.*prices set"):
        select(load_pool(pool_file(tmp_path, 20)), store, server, max_cost=1.0)


def cap_after(server: FakeOpenAIServer, store: Store, run_id: str, n: int) -> float:
    """A cap that lets exactly n calls of an uncapped reference run through, the way the meter reserves a call:
    its prompt at 3 characters a token plus the full answer length (512 tokens)."""
    costs = store.calls(run_id)["cost"].tolist()
    text = server.requests[n]["body"]["messages"][0]["content"]
    next_bound = (math.ceil(len(text) / 3) * PRICE[0] + 512 * PRICE[1]) / 1e6
    return sum(costs[:n]) + next_bound - 1e-9


def reference(tmp_path: Path, pool, **kw) -> float:
    """The cap for two calls, measured on the same run in a workspace of its own (its own server)."""
    reply = '{"picks": [{"id": 1, "reason": "clear and useful"}, {"id": 2, "reason": "a distinct task"}]}'
    with FakeOpenAIServer(reply=reply, price_per_mtok=PRICE, lifetime=120.0) as ref_server:
        ref = priced_store(tmp_path / "ref.sqlite")
        result = run(pool, RunConfig(budget=kw.get("budget", 12), subset_size=10, picks_per_subset=2), store=ref,
                     backend=backend_for(ref_server), embedder=FakeEmbedder(), cache=EmbeddingCache(),
                     responses=False)
        return cap_after(ref_server, ref, result.run_id, 2)


def test_the_cap_stops_before_the_call_that_would_pass_it_and_a_higher_cap_resumes(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    pool = load_pool(pool_file(tmp_path, 60))
    store = priced_store(tmp_path / "ws.sqlite")
    cap = reference(tmp_path, pool)
    with pytest.raises(SpendCapReached, match="Stopped before a call that could pass the cost cap.*2 of 6 subsets "
                                              "are done, 4 left.*higher --max-cost"):
        select(pool, store, server, budget=12, responses=False, max_cost=cap)
    assert len(server.requests) == 2, "the capped call was sent"
    run_id = store.list_runs()["run_id"].iloc[-1]
    assert store.get_run(run_id)["status"] == "interrupted"
    assert store.usage(run_id)["cost"] <= cap
    resumed = select(pool, store, server, budget=12, responses=False, max_cost=1.0)
    assert resumed.run_id == run_id and len(server.requests) == 6, "finished subsets were asked again"
    assert resumed.summary["selected"] == 12 and store.get_run(run_id)["status"] == "complete"
    assert store.usage(run_id)["cost"] == pytest.approx(server.billed, rel=1e-6)


def test_plan_prints_calls_tokens_and_cost_before_anything_is_sent(tmp_path: Path, server: FakeOpenAIServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, ws = pool_file(tmp_path), tmp_path / "ws.sqlite"
    priced_store(ws)
    args = ["plan", str(path), "--budget", "6", "--subset-size", "10", "-k", "2", "--backend", "openai",
            "--model", MODEL, "--base-url", server.base_url, "--workspace", str(ws)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "LLM calls: 3 (0 answered by the response cache, 3 to send" in out.output
    assert "cost: $" in out.output and "workspace price table" in out.output
    assert len(server.requests) == 0, "plan sent a request"
    ran = CliRunner().invoke(main, ["run", str(path), "--budget", "6", "--subset-size", "10", "-k", "2",
                                    "--backend", "openai", "--model", MODEL, "--base-url", server.base_url,
                                    "--workspace", str(ws), "--no-export", "--json"])
    assert ran.exit_code == 0, ran.output
    again = CliRunner().invoke(main, args)
    assert "LLM calls: 3 (3 answered by the response cache, 0 to send" in again.output
    assert "cost: $0.0000 estimated" in again.output


def test_the_cli_cap_status_and_cache_commands(tmp_path: Path, server: FakeOpenAIServer) -> None:
    path, ws = pool_file(tmp_path, 60), tmp_path / "ws.sqlite"
    priced_store(ws)
    def command(url: str, workspace: Path) -> list[str]:
        return ["run", str(path), "--budget", "12", "--subset-size", "10", "-k", "2", "--backend", "openai",
                "--model", MODEL, "--base-url", url, "--concurrency", "1", "--workspace", str(workspace),
                "--no-export", "--json"]

    reply = '{"picks": [{"id": 1, "reason": "clear and useful"}, {"id": 2, "reason": "a distinct task"}]}'
    with FakeOpenAIServer(reply=reply, price_per_mtok=PRICE, lifetime=120.0) as ref_server:  # the same run, uncapped
        ref_ws = tmp_path / "ref.sqlite"
        priced_store(ref_ws)
        ref = CliRunner().invoke(main, [*command(ref_server.base_url, ref_ws), "--no-response-cache"])
        cap = cap_after(ref_server, Store(ref_ws), json.loads(ref.stdout)["run_id"], 2)
    base = command(server.base_url, ws)
    capped = CliRunner().invoke(main, [*base, "--max-cost", f"{cap:.9f}"])
    assert capped.exit_code != 0
    assert "Stopped before a call that could pass the cost cap" in capped.output and "--max-cost" in capped.output
    assert len(server.requests) == 2
    done = CliRunner().invoke(main, [*base, "--max-cost", "5"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["stats"]["llm_calls_sent"] == 4 and len(server.requests) == 6
    status = CliRunner().invoke(main, ["status", report["run_id"], "--workspace", str(ws)])
    assert f"spent ${server.billed:,.4f}" in status.output and "6 sent, 0 from the response cache" in status.output
    info = CliRunner().invoke(main, ["cache", "info"])
    assert "6 answers stored" in info.output
    assert "6 stored answers removed" in CliRunner().invoke(main, ["cache", "clear"]).output
