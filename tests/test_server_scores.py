"""The score aggregation through an OpenAI-compatible server: an id's probability read from a short answer's logprobs.

A chat server cannot be handed a begun answer, so a score pass lets the model write the answer's opening and
reads the alternatives the server lists at the first id slot. `slot_logprobs` is checked on token streams shaped
like real ones (multi-digit and digit-by-digit tokenizers, a code fence first, an id missing from the list); the
whole run goes through the fault-injecting fake server over HTTP. The real llama.cpp server is in
test_llama_server.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer

from selectllm_core.errors import AnswerError, CapabilityError, ConfigError
from selectllm_core.llm import OpenAICompatibleBackend, can_score
from selectllm_core.llm.cache import ResponseCache
from selectllm_core.llm.openai_compat import SCORE_TOP, slot_logprobs
from selectllm_core.methods.selectllm import estimate
from selectllm_core.pipeline import RunConfig
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.select.orders import run_consistency
from selectllm_core.select.prompts import score_prefill
from selectllm_core.select.scores import SCORE
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder
from tests.fakes import shown_instructions
from tests.test_methods import dolly_frame
from tests.test_scores import BIAS, best_by_content, digest_rank, explain

IDS = [str(i) for i in range(1, 11)]
JSON_OPENING = [["{\"", {}], ["picks", {}], ["\":", {}], [" [{\"", {}], ["id", {}], ["\":", {}]]


def opening(tokens: list) -> list[tuple[str, dict[str, float]]]:
    """Token stream of a JSON answer's opening (the listed alternatives do not matter before the slot)."""
    return [(text, alts or {text: -0.01}) for text, alts in tokens]


def normalised(values: dict[str, float]) -> dict[str, float]:
    norm = float(np.logaddexp.reduce(list(values.values())))
    return {k: v - norm for k, v in values.items()}


def test_the_slot_after_the_opening_gives_each_id_its_listed_probability() -> None:
    slot = {" 3": -0.4, "3": -2.0, " 7": -1.3, " 1": -2.2, " 10": -3.0, "}": -4.0}
    slot |= {f" {i}": -5.0 - i / 10 for i in (2, 4, 5, 6, 8, 9)}
    tokens = opening(JSON_OPENING) + [(" 3", slot), (",", {",": -0.1})]
    logprobs, mass, bounded = slot_logprobs(tokens, prefill=score_prefill("json"), ids=IDS)
    assert bounded == []
    three = float(np.logaddexp(-0.4, -2.0))  # " 3" and "3" are two tokens that both write id 3
    raw = {"3": three, "7": -1.3, "1": -2.2, "10": -3.0} | {str(i): -5.0 - i / 10 for i in (2, 4, 5, 6, 8, 9)}
    assert logprobs == pytest.approx(normalised(raw))
    assert mass == pytest.approx(sum(math.exp(v) for v in raw.values()))
    assert max(logprobs, key=logprobs.get) == "3" and sum(math.exp(v) for v in logprobs.values()) == pytest.approx(1)


def test_a_code_fence_before_the_answer_and_whitespace_tokens_are_read_past() -> None:
    slot = {"2": -0.2, "5": -1.8} | {f"x{i}": -9.0 for i in range(5)}
    tokens = [("```", {}), ("json", {}), ("\n", {}), ("[", {})]
    tokens = [(t, {t: -0.1}) for t, _ in tokens] + [(" ", {" ": -0.3}), ("2", slot), (",", {",": -0.1})]
    logprobs, _mass, bounded = slot_logprobs(tokens, prefill=score_prefill("ids"), ids=["1", "2", "3", "4", "5"])
    assert bounded == ["1", "3", "4"] and logprobs["2"] > logprobs["5"]
    assert logprobs["1"] == logprobs["3"] == logprobs["4"], "each at most the least listed alternative"
    assert logprobs["1"] - logprobs["2"] == pytest.approx(-9.0 + 0.2)


def test_digit_by_digit_ids_are_told_apart_by_the_token_after_the_written_one() -> None:
    # a digit-by-digit tokenizer: "10" is "1" then "0"; the model wrote "1", and after it "0" has 0.2
    slot = {"1": math.log(0.5), "4": math.log(0.3)} | {str(i): math.log(0.02) for i in (2, 3, 5, 6, 7, 8, 9)}
    slot |= {"\"": -9.0}  # ten alternatives: the ids 1..9 and one more
    after = {"0": math.log(0.2), ",": math.log(0.7), "]": math.log(0.1)}
    tokens = [("[", {"[": -0.01}), ("1", slot), ("0", after)]
    logprobs, _mass, bounded = slot_logprobs(tokens, prefill="[", ids=IDS)
    total = 0.5 + 0.3 + 7 * 0.02
    assert bounded == []
    assert math.exp(logprobs["10"]) == pytest.approx(0.5 * 0.2 / total)
    assert math.exp(logprobs["1"]) == pytest.approx(0.5 * 0.8 / total)
    assert math.exp(logprobs["4"]) == pytest.approx(0.3 / total)


def test_digit_by_digit_ids_the_answer_does_not_tell_apart_get_the_first_digit_as_a_bound() -> None:
    slot = {"4": math.log(0.5), "1": math.log(0.3), "2": math.log(0.1)} | {f"x{i}": -9.0 - i for i in range(10)}
    tokens = [("[", {"[": -0.01}), ("4", slot), (",", {",": -0.1})]
    logprobs, mass, bounded = slot_logprobs(tokens, prefill="[", ids=IDS)
    assert "1" in bounded and "10" in bounded and "4" not in bounded and "2" not in bounded
    assert logprobs["1"] == logprobs["10"] > logprobs["3"], "each at most the probability of the digit 1"
    assert mass == pytest.approx(0.5 + 0.1), "only the measured ids count as the ids' mass"
    # with at most 9 ids nothing is ambiguous
    logprobs, _m, bounded = slot_logprobs(tokens, prefill="[", ids=IDS[:9])
    assert "1" not in bounded and math.exp(logprobs["1"] - logprobs["4"]) == pytest.approx(0.3 / 0.5)


def test_a_number_token_anywhere_in_the_answer_shows_ids_are_whole_tokens() -> None:
    # "10" written later as one token: this tokenizer does not split numbers, so "1" at the slot is id 1
    slot = {" 4": math.log(0.5), " 1": math.log(0.3)} | {f"x{i}": -9.0 - i for i in range(10)}
    tokens = [("[", {"[": -0.01}), (" 4", slot), (",", {",": -0.1}), (" 10", {" 10": -0.2}), ("]", {"]": -0.1})]
    logprobs, _mass, bounded = slot_logprobs(tokens, prefill="[", ids=IDS)
    assert "1" not in bounded and "10" in bounded
    assert math.exp(logprobs["1"] - logprobs["4"]) == pytest.approx(0.3 / 0.5)


def test_a_continuation_the_server_did_not_list_makes_both_ids_bounds_and_a_space_is_no_continuation() -> None:
    slot = {"1": math.log(0.6), "4": math.log(0.3)} | {f"x{i}": -9.0 - i for i in range(10)}
    after = {" 0": math.log(0.3), ",": math.log(0.5), "]": math.log(0.1)}  # " 0" writes "1 0", not 10
    tokens = [("[", {"[": -0.01}), ("1", slot), (",", after)]
    logprobs, _mass, bounded = slot_logprobs(tokens, prefill="[", ids=IDS)
    assert set(bounded) >= {"1", "10"} and "4" not in bounded
    assert math.exp(logprobs["1"] - logprobs["4"]) == pytest.approx(0.6 / 0.3), "no listed continuation: 1 keeps all"
    assert math.exp(logprobs["10"] - logprobs["4"]) == pytest.approx(0.6 * 0.1 / 0.3), "at most the least listed"


def test_a_server_that_lists_too_few_alternatives_is_refused_for_the_whole_run() -> None:
    tokens = [("[", {"[": -0.01}), ("4", {"4": -0.5, "1": -1.2})]
    with pytest.raises(AnswerError, match="listed 2 alternatives") as err:
        slot_logprobs(tokens, prefill="[", ids=IDS)
    assert err.value.halts


def test_an_opening_followed_by_no_digit_is_not_the_slot() -> None:
    tokens = [("See", {}), (" [", {}), ("below", {}), ("]:", {}), (" [", {})]
    tokens = [(t, {t: -0.1}) for t, _ in tokens]
    slot = {"4": -0.3, "2": -1.5} | {f"x{i}": -9.0 - i for i in range(10)}
    logprobs, _mass, _bounded = slot_logprobs(tokens + [("4", slot), ("]", {"]": -0.1})], prefill="[",
                                              ids=IDS[:5])
    assert max(logprobs, key=logprobs.get) == "4" and logprobs["2"] > logprobs["1"]


@pytest.mark.parametrize("tokens, match", [
    ([("Sure", {"Sure": -0.1}), ("!", {"!": -0.1}), (" The", {" The": -0.2})], "wrote no id"),
    ([("[", {"[": -0.1}), ("\"", {"\"": -0.1, "'": -2.0}), ("a", {"a": -0.1})], "wrote no id"),
    ([("[", {"[": -0.1}), ("7", {"7": -0.1} | {f"x{i}": -5.0 for i in range(20)})], "listed none of the ids"),
])
def test_an_answer_without_a_usable_id_slot_is_refused(tokens: list, match: str) -> None:
    with pytest.raises(AnswerError, match=match) as err:
        slot_logprobs(tokens, prefill="[", ids=IDS[:5])
    assert not err.value.halts and "--aggregation borda" in str(err.value)


@pytest.fixture
def pool(shared_data: Path):  # noqa: ANN201 - a Pool
    return load_pool(dolly_frame(shared_data, rows=60), name="dolly-60")


def content_reader(content: float, unlisted: int | None = None):  # noqa: ANN201 - a FakeOpenAIServer responder
    """A server whose model prefers instructions by digest over a position bias; multi-digit id tokens.

    `unlisted`: an id the server leaves out of the listed alternatives (a junk token takes its place).
    """

    def respond(body: dict, index: int) -> dict:
        prompt = body["messages"][0]["content"]
        if not body.get("logprobs"):  # the reasoned call
            return {"content": explain(prompt, 10, 2, 0)}
        shown = shown_instructions(prompt)
        z = BIAS[: len(shown)] + content * 4.0 * np.array(digest_rank(shown))
        lp = z - np.logaddexp.reduce(z)
        slot = {f" {i}": float(v) for i, v in enumerate(lp, 1) if i != unlisted} | {"}": float(lp.min()) - 1.0}
        best = max(slot, key=slot.get)
        return {"tokens": opening(JSON_OPENING) + [(best, slot), (",", {",": -0.1})]}

    return respond


def test_a_run_through_a_server_scores_every_order_and_picks_by_content(pool, tmp_path: Path) -> None:  # noqa: ANN001
    with FakeOpenAIServer(responder=content_reader(2.0), lifetime=60.0) as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", timeout=5, max_retries=0)
        store = Store(tmp_path / "ws.sqlite")
        res = run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=4, aggregation="scores"),
                            store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
        bodies = [r["body"] for r in server.requests]
    passes = [b for b in bodies if b.get("logprobs")]
    assert len(passes) == 4 * 6 and len(bodies) == 4 * 6 + 6, "P score passes and one reasoned call a subset"
    assert all(b["top_logprobs"] == SCORE_TOP and "response_format" not in b for b in passes), "no grammar"
    assert all(b["max_tokens"] == backend.score_answer_tokens(score_prefill("json")) for b in passes)
    results = store.subset_results(res.run_id)
    assert all(r["status"] == "ok" and [o["role"] for o in r["orders"]] == [SCORE] * 4 for r in results)
    assert set(store.selection(res.run_id)["id"]) == best_by_content(store, res.run_id, pool)
    assert run_consistency(results).clearly_above
    assert all(r["reasons"][p].startswith("about ") for r in results for p in r["picks"])
    assert all(not r["note"] for r in results), "every id was listed: nothing bounded"
    calls = store.calls(res.run_id)
    scored = calls[calls["answer_format"] == "scores"]
    assert len(scored) == 24 and (scored["completion_tokens"] > 0).all(), "a server's pass writes tokens"
    # the plan counts a server's pass at its most answer tokens, as the spending cap reserves them
    cfg = RunConfig(budget=12, subset_size=10, orders=4, aggregation="scores")
    vectors = FakeEmbedder().encode(pool.frame["text"].tolist())
    _p, _s, spend = estimate(pool, cfg, backend=backend, store=Store(tmp_path / "est.sqlite"), vectors=vectors,
                             responses=False)
    _p, _s, borda = estimate(pool, RunConfig(budget=12, subset_size=10, orders=4), backend=backend,
                             store=Store(tmp_path / "est.sqlite"), vectors=vectors, responses=False)
    per_pass = backend.score_answer_tokens(score_prefill("json"))
    assert spend.calls == 4 * 6 + 6 and spend.completion_tokens > 24 * per_pass
    assert spend.completion_tokens - 24 * per_pass < borda.completion_tokens / 3, "the reasoned calls"


def test_a_server_that_gives_no_logprobs_stops_the_run_at_once_and_picks_nothing(pool, tmp_path: Path) -> None:  # noqa: ANN001
    with FakeOpenAIServer(lifetime=60.0, responder=lambda body, index: {"logprobs": False}) as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", timeout=5, max_retries=0,
                                          concurrency=1)
        assert can_score(backend)  # unknown until tried
        store = Store(tmp_path / "ws.sqlite")
        with pytest.raises(CapabilityError, match=r"^Stopped: .*answered without token probabilities.*borda"):
            run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=2, aggregation="scores"),
                          store=store, backend=backend, embedder=FakeEmbedder(), responses=False)
        asked = len(server.requests)
    (run,) = store.list_runs().to_dict("records")
    results = store.subset_results(run["run_id"])
    stopped = [r for r in results if r["status"] == "error"]
    assert asked == 1 and len(stopped) == 1, "one answer shows the server lists no probabilities: the run stops"
    assert stopped[0]["raw"] == ['{"picks": [{"id": 2, "reason": "fake"}]}'] and not stopped[0]["picks"]
    assert store.selection(run["run_id"]).empty and store.usage(run["run_id"])["calls"] == 1
    assert not can_score(backend)
    with pytest.raises(ConfigError, match="server that returns logprobs"):
        run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=2, aggregation="scores"),
                      store=store, backend=backend, embedder=FakeEmbedder(), responses=False)


def test_a_server_answer_with_no_id_to_read_fails_its_subset_is_kept_and_is_paid_for(pool, tmp_path: Path) -> None:  # noqa: ANN001
    chatty = [["Sure", {"Sure": -0.1}], ["!", {"!": -0.2}], [" Here", {" Here": -0.3}]]
    with FakeOpenAIServer(responder=lambda body, index: {"tokens": chatty}, lifetime=60.0,
                          price_per_mtok=(2.0, 8.0)) as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="paid-model", timeout=5, max_retries=0)
        store = Store(tmp_path / "ws.sqlite")
        store.set_price("paid-model", 2.0, 8.0)
        res = run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=2, aggregation="scores"),
                            store=store, backend=backend, embedder=FakeEmbedder(), responses=False, max_cost=1.0)
        asked, billed = len(server.requests), server.billed
    results = store.subset_results(res.run_id)
    assert asked == 6, "each subset stops at its first pass, whose answer could not be read"
    assert all(r["status"] == "failed" and "wrote no id" in r["error"] and "Sure! Here" in r["error"]
               for r in results)
    assert all(r["raw"] == ["Sure! Here"] and not r["picks"] for r in results)
    assert store.selection(res.run_id).empty
    usage = store.usage(res.run_id)
    assert usage["calls"] == 6 and usage["cost"] == pytest.approx(billed) and billed > 0, "answered: paid for"


def test_a_score_answer_that_echoes_the_key_is_kept_without_it() -> None:
    echo = [["My", {"My": -0.1}], [" key", {" key": -0.1}], [" is {api_key}", {" is": -0.1}]]
    with FakeOpenAIServer(responder=lambda body, index: {"tokens": echo}, lifetime=60.0) as server:
        key = "sk-canary-2b7e151628aed2a6"
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", api_key=key, timeout=5,
                                          max_retries=0)
        result = backend.score_ids([{"role": "user", "content": "Pick."}], prefill="[", ids=["1", "2"])
    assert result.unusable and key not in result.unusable and result.raw == "My key is ***"


def test_server_passes_come_back_from_the_response_cache_with_their_bounds(pool, tmp_path: Path) -> None:  # noqa: ANN001
    cache = ResponseCache(tmp_path / "responses")
    runs = []
    with FakeOpenAIServer(responder=content_reader(2.0, unlisted=10), lifetime=60.0) as server:
        for attempt in range(2):  # the same server (its URL is part of the cache key), a new workspace
            backend = OpenAICompatibleBackend(base_url=server.base_url, model="fake-model", timeout=5,
                                              max_retries=0)
            store, before = Store(tmp_path / f"ws{attempt}.sqlite"), len(server.requests)
            res = run_selectllm(pool, RunConfig(budget=12, subset_size=10, orders=2, aggregation="scores"),
                                store=store, backend=backend, embedder=FakeEmbedder(), responses=cache)
            runs.append((store, res, len(server.requests) - before))
    (first, res1, asked1), (again, res2, asked2) = runs
    assert asked1 == 2 * 6 + 6 and asked2 == 0, "the second run reads every pass and reasoned call from the cache"
    passes = [[o for o in r["orders"]] for r in again.subset_results(res2.run_id)]
    # 10 unlisted and no number of two digits anywhere: "1" may begin "10", so both are upper bounds
    assert all(o["bounded"] == ["1", "10"] for ps in passes for o in ps), "the bounds survive the cache"
    assert set(again.selection(res2.run_id)["id"]) == set(first.selection(res1.run_id)["id"])
    calls = again.calls(res2.run_id)
    assert calls["cached"].all() and (calls[calls["answer_format"] == "scores"]["completion_tokens"] > 0).all()
