"""Selection methods beside SelectLLM: each on a real pool, each formula on a hand-checked example."""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from selectllm_core import methods
from selectllm_core.errors import CapabilityError, ConfigError
from selectllm_core.llm.base import ChatResult
from selectllm_core.methods import alpagasus, selectit
from selectllm_core.methods.coreset import k_center_greedy
from selectllm_core.methods.deita import deita_filter
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store

BUDGET = 25


def dolly_frame(shared_data: Path, rows: int = 300) -> pd.DataFrame:
    """The first rows of the AlpaGasus-filtered Dolly file, as read from disk."""
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for _, line in zip(range(rows), f, strict=False)])


@pytest.fixture(scope="module")
def pool(shared_data: Path):  # noqa: ANN201 - a data.Pool
    return load_pool(dolly_frame(shared_data), name="dolly-300")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ws.sqlite")


def _instruction(messages: list[dict]) -> str:
    return re.search(r"### Instruction:\n(.*?)(?:\n\n|\n### Input|$)", messages[0]["content"], re.S).group(1)


def fake_rating(instruction: str) -> float:
    """A deterministic 0-5 rating in halves, spread over the pool."""
    return (zlib.crc32(instruction.encode()) % 11) / 2


class RatingBackend:
    """A deterministic chat backend at our seam: JSON ratings, and first-token log-probabilities of digits.

    The digit distribution of a row is P = normalise(0.5 ** |k - r|) for k = 1..5 around r = 1 + crc % 5,
    returned as tokens "k" and " k" (half the mass each) plus one non-digit token.
    """

    name = "fake"
    concurrency = 1

    def __init__(self, answer=None, *, label: str = "rating-fake", shift: int = 0) -> None:  # noqa: ANN001
        self.answer = answer
        self.label = label
        self.shift = shift
        self.chats = 0
        self.logprob_calls = 0

    def describe(self) -> dict:
        return {"kind": "fake", "model": self.label}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages, *, json_schema=None, max_tokens=512, temperature=0.0) -> ChatResult:  # noqa: ANN001
        self.chats += 1
        attempt = sum(1 for m in messages if m["role"] == "user")
        text = (self.answer(messages, attempt) if self.answer else
                json.dumps({"score": fake_rating(_instruction(messages)), "reason": "fake reason"}))
        return ChatResult(text=text, prompt_tokens=100, completion_tokens=10, model=self.label, elapsed=0.0)

    def digit_probs(self, instruction: str) -> np.ndarray:
        r = 1 + (zlib.crc32(instruction.encode()) + self.shift) % 5
        p = 0.5 ** np.abs(np.arange(1, 6) - r)
        return 0.9 * p / p.sum()

    def top_logprobs(self, messages: list[dict], *, n: int = 20) -> dict[str, float]:
        self.logprob_calls += 1
        p = self.digit_probs(_instruction(messages))
        out = {"The": math.log(0.1)}
        for k in range(5):
            out[str(k + 1)] = math.log(p[k] / 2)
            out[f" {k + 1}"] = math.log(p[k] / 2)
        return out


class ChatOnlyBackend:
    """A backend without token probabilities (no top_logprobs method)."""

    name = "fake"
    concurrency = 1

    def describe(self) -> dict:
        return {"kind": "fake", "model": "chat-only"}

    def count_tokens(self, text: str) -> int:
        return len(text.split())


# -- every method on a real pool ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [
    ("random", {"seed": 3}), ("length", {"order": "longest"}), ("length", {"order": "shortest"}),
    ("coreset", {"seed": 1}), ("deita", {"tau": 0.9}), ("alpagasus", {"threshold": 4.0}), ("selectit", {}),
])
def test_every_method_returns_exactly_the_budget(name: str, params: dict, pool, store: Store,  # noqa: ANN001
                                                 fake_embedder) -> None:  # noqa: ANN001
    kwargs = {"backend": RatingBackend()} if "llm" in methods.METHODS[name].needs else {}
    if "embeddings" in methods.METHODS[name].needs:
        kwargs["embedder"] = fake_embedder
    result = methods.run_method(name, pool, budget=BUDGET, store=store, **kwargs, **params)
    frame = result.frame()
    assert result.selected == BUDGET and result.short_by == 0
    assert len(frame) == BUDGET and frame["id"].is_unique and set(frame["id"]) <= set(pool.frame["id"])
    assert frame["rank"].tolist() == list(range(1, BUDGET + 1))
    assert frame["reason"].str.len().gt(0).all()
    run = store.get_run(result.run_id)
    assert run["method"] == name and run["status"] == "complete"
    assert all(run["params"][k] == v for k, v in params.items()) and run["params"]["budget"] == BUDGET
    assert len(store.plan(result.run_id)) == len(pool.frame)


def test_random_is_seeded(pool, store: Store) -> None:  # noqa: ANN001
    ids = [methods.run_method("random", pool, budget=BUDGET, store=store, seed=s).frame()["id"].tolist()
           for s in (0, 0, 1)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_length_takes_the_longest_or_shortest(pool, store: Store) -> None:  # noqa: ANN001
    lengths = pd.Series(methods.row_lengths(pool.frame), index=pool.frame["id"])
    longest = methods.run_method("length", pool, budget=BUDGET, store=store).frame()
    assert longest["score"].tolist() == sorted(longest["score"], reverse=True)
    assert longest["score"].min() >= lengths.drop(longest["id"]).max()
    shortest = methods.run_method("length", pool, budget=BUDGET, store=store, order="shortest").frame()
    assert shortest["score"].max() <= lengths.drop(shortest["id"]).min()


def test_k_center_greedy_on_a_hand_checked_circle() -> None:
    # unit vectors at 0, 90, 180 and 200 degrees; start at 0 degrees.
    angles = np.radians([0, 90, 180, 200])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    order, radius = k_center_greedy(x, 3, first=0)
    # from 0: distances 1 - cos = [0, 1, 2, 1.9397] -> 180 degrees (2.0); then nearest-centre distances are
    # 90: min(1, 1) = 1; 200: min(1.9397, 1 - cos 20 = 0.0603) -> 90 degrees at distance 1.
    assert order.tolist() == [0, 2, 1]
    assert np.isnan(radius[0]) and radius[1:] == pytest.approx([2.0, 1.0])


def test_deita_filter_skips_near_duplicates_of_better_rows() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near_a = np.array([0.95, math.sqrt(1 - 0.95**2)])  # cosine 0.95 to a
    x = np.stack([b, near_a, a])
    scores = np.array([1.0, 2.0, 3.0])
    assert deita_filter(x, scores, 2, tau=0.9)[0] == [2, 0]  # a, then near_a skipped (0.95 > 0.9), then b
    assert deita_filter(x, scores, 2, tau=0.99)[0] == [2, 1]
    assert deita_filter(x, np.array([np.nan, 2.0, 3.0]), 2, tau=0.9)[0] == [2]  # NaN scores are never taken


def test_deita_uses_a_pool_column_or_another_runs_scores(shared_data: Path, store: Store, fake_embedder) -> None:  # noqa: ANN001
    frame = dolly_frame(shared_data, 120)
    frame["quality"] = np.arange(len(frame)) % 7
    pool = load_pool(frame)
    by_col = methods.run_method("deita", pool, budget=10, store=store, embedder=fake_embedder,
                                score_column="quality").frame()
    assert (by_col["score"] == 6).all()
    rated = methods.run_method("alpagasus", pool, budget=10, store=store, backend=RatingBackend(), threshold=0.0)
    by_run = methods.run_method("deita", pool, budget=10, store=store, embedder=fake_embedder,
                                score_run=rated.run_id)
    every = methods.run_scores(store, rated.run_id)
    assert len(every) == len(pool.frame)  # all rated rows, not only the rating run's selection
    assert by_run.frame()["score"].tolist() == sorted(every, reverse=True)[:10]
    with pytest.raises(ConfigError, match="holds no numbers"):
        methods.run_method("deita", pool, budget=10, store=store, embedder=fake_embedder, score_column="category")
    with pytest.raises(ConfigError, match="Raise --tau"):
        methods.run_method("deita", pool, budget=10, store=store, embedder=fake_embedder, tau=0.01)


# -- AlpaGasus ------------------------------------------------------------------------------------------------
def test_parse_rating_accepts_only_a_number_from_0_to_5() -> None:
    assert alpagasus.parse_rating('{"score": 4.5, "reason": "clear"}') == (4.5, "clear")
    assert alpagasus.parse_rating('Sure!\n```json\n{"score": "3", "reason": "ok"}\n```') == (3.0, "ok")
    for bad in ('{"score": 7, "reason": "x"}', '{"score": true}', '{"reason": "no score"}', "4.5", "{bad json}"):
        with pytest.raises(alpagasus.UnusableRating):
            alpagasus.parse_rating(bad)


def test_alpagasus_keeps_only_rows_at_or_above_the_threshold(pool, store: Store) -> None:  # noqa: ANN001
    expected = pool.frame["instruction"].map(fake_rating)
    passing = int((expected >= 4.5).sum())
    assert 0 < passing < 60
    budget = passing + 10  # more than pass: the selection holds only the passing rows, flagged
    result = methods.run_method("alpagasus", pool, budget=budget, store=store, backend=RatingBackend())
    frame = result.frame()
    assert result.selected == passing and result.short_by == 10
    assert result.flags["short_by_threshold"] == 10 and result.flags["passed_threshold"] == passing
    assert (frame["score"] >= 4.5).all() and frame["score"].tolist() == sorted(frame["score"], reverse=True)
    assert store.get_run(result.run_id)["status"] == "complete"
    assert frame["reason"].str.startswith("rated ").all() and frame["reason"].str.contains("fake reason").all()
    assert store.usage(result.run_id)["calls"] == len(pool.frame)  # one call per row, each counted


def test_alpagasus_repairs_once_fails_honestly_and_resumes_without_calls(pool, store: Store) -> None:  # noqa: ANN001
    bad_rows = set(pool.frame["instruction"][:3])

    def answer(messages: list[dict], attempt: int) -> str:
        instruction = _instruction(messages)
        if instruction in bad_rows:
            return "I would rate it highly."  # never usable
        if attempt == 1 and fake_rating(instruction) == 5.0:
            return '{"score": 9}'  # usable after the repair message
        return json.dumps({"score": fake_rating(instruction), "reason": "ok"})

    backend = RatingBackend(answer)
    first = methods.run_method("alpagasus", pool, budget=5, store=store, backend=backend, threshold=0.0)
    assert first.flags["unrated"] == 3 and first.selected == 5
    assert store.get_run(first.run_id)["status"] == "incomplete"
    assert set(first.frame()["id"]).isdisjoint(pool.frame["id"][:3])
    [batch0] = [r for r in store.subset_results(first.run_id) if r["subset"] == 0]
    assert batch0["status"] == "failed" and batch0["picks"] == []
    assert all(rid in batch0["error"] for rid in pool.frame["id"][:3])
    calls = backend.chats
    again = methods.run_method("alpagasus", pool, budget=5, store=store, backend=backend, threshold=0.0)
    assert again.run_id == first.run_id and backend.chats == calls  # resumed: nothing called again
    assert again.frame()["id"].tolist() == first.frame()["id"].tolist()
    methods.run_method("alpagasus", pool, budget=5, store=store, backend=backend, threshold=0.0, retry_failed=True)
    # only batch 0 (rows 0-19) is rated again: 3 unusable rows x 2 calls, 17 rows x 1 call, +1 per repaired row
    repaired = sum(fake_rating(i) == 5.0 for i in pool.frame["instruction"][3:20])
    assert backend.chats - calls == 3 * 2 + 17 + repaired


# -- SelectIT ---------------------------------------------------------------------------------------------------
def test_digit_tokens_are_found_by_text_for_any_tokenizer() -> None:
    top = {"1": math.log(0.1), " 1": math.log(0.05), "▁4": math.log(0.3), "Ġ4": math.log(0.1),
           "4": math.log(0.2), "10": math.log(0.2), "five": math.log(0.05)}
    # P1 = 0.1 + 0.05; P4 = 0.3 + 0.1 + 0.2; "10" and "five" are not digits 1-5
    assert selectit.digit_probabilities(top) == pytest.approx([0.15, 0, 0, 0.6, 0])
    # P' = [0.2, 0, 0, 0.8, 0]; S_base = 4; (|0.2-0.8| + 0.8 + 0.8 + 0 + 0.8) / 4 = 0.75; S_token = 4 * 0.75 = 3
    assert selectit.token_score(selectit.digit_probabilities(top)) == pytest.approx(3.0)


def test_token_score_on_hand_computed_probability_vectors() -> None:
    # certain 5: P' = [0,0,0,0,1]; uncertainty = (1+1+1+1+0)/4 = 1; S = 5 * 1 = 5
    assert selectit.token_score(np.array([0, 0, 0, 0, 1.0])) == pytest.approx(5.0)
    # P' = [.1,.1,.2,.4,.2]; S_base = 4; (0.3+0.3+0.2+0+0.2)/4 = 0.25; S = 4 * 0.25 = 1.0
    assert selectit.token_score(np.array([0.1, 0.1, 0.2, 0.4, 0.2])) == pytest.approx(1.0)
    # the same vector at half the mass is renormalised first: P' as above, S = 1.0
    assert selectit.token_score(np.array([0.05, 0.05, 0.1, 0.2, 0.1])) == pytest.approx(1.0)
    # uniform: every |P'_k - P'_base| = 0, S = 0 whatever the rating
    assert selectit.token_score(np.full(5, 0.2)) == pytest.approx(0.0)
    # P' = [.1,.4,.1,.4,0]: a tie between 2 and 4 goes to the lower rating, 2 (as numpy's argmax);
    # (0.3 + 0 + 0.3 + 0 + 0.4) / 4 = 0.25; S = 2 * 0.25 = 0.5 (taking 4 would give 1.0)
    assert selectit.token_score(np.array([0.1, 0.4, 0.1, 0.4, 0])) == pytest.approx(0.5)
    assert selectit.token_score(np.zeros(5)) is None


def test_sentence_and_model_scores_on_hand_computed_values() -> None:
    # mean 2.0; population std = sqrt((1 + 0 + 1 + 0 + 0) / 5) = 0.6324555; 2 / 1.1264911 = 1.7754246
    assert selectit.sentence_score([1.0, 2.0, 3.0, 2.0, 2.0], alpha=0.2) == pytest.approx(1.7754246, abs=1e-6)
    assert selectit.sentence_score([3.0] * 5, alpha=0.2) == pytest.approx(3.0)
    # (7 * 1.0 + 13 * 2.0) / 20 = 1.65
    assert selectit.model_score([1.0, 2.0], [7e9, 13e9]) == pytest.approx(1.65)


def test_selectit_scores_rows_from_each_models_digit_probabilities(pool, store: Store) -> None:  # noqa: ANN001
    small, large = RatingBackend(label="small"), RatingBackend(label="large", shift=2)
    result = methods.run_method("selectit", pool, budget=BUDGET, store=store, backends=[(small, 7e9), (large, 13e9)],
                                phrasings=3, batch_size=50)
    assert result.selected == BUDGET and small.logprob_calls == large.logprob_calls == 3 * len(pool.frame)
    frame = result.frame().merge(pool.frame[["id", "instruction"]], on="id", suffixes=("", "_pool"))
    for row in frame.itertuples():
        # the fakes give every prompt the same distribution: std = 0, so S_sent = S_token
        s_small = selectit.token_score(small.digit_probs(row.instruction))
        s_large = selectit.token_score(large.digit_probs(row.instruction))
        assert row.score == pytest.approx((7 * s_small + 13 * s_large) / 20)
    every = methods.run_scores(store, result.run_id)
    assert frame["score"].min() >= every.drop(frame["id"]).max()
    run = store.get_run(result.run_id)
    assert run["backend"]["kind"] == "ensemble" and run["params"]["model_parameters"] == [7e9, 13e9]
    assert store.usage(result.run_id)["calls"] == 2 * 3 * len(pool.frame)


def test_selectit_says_when_a_backend_has_no_token_probabilities(pool, store: Store) -> None:  # noqa: ANN001
    with pytest.raises(CapabilityError, match="does not expose token probabilities"):
        methods.run_method("selectit", pool, budget=BUDGET, store=store, backend=ChatOnlyBackend())
    assert store.list_runs()["status"].tolist() == ["interrupted"]


def test_selectit_never_scores_a_row_without_digit_probabilities(pool, store: Store) -> None:  # noqa: ANN001
    silent = pool.frame["instruction"].iloc[0]

    class NoDigitForOneRow(RatingBackend):
        def top_logprobs(self, messages: list[dict], *, n: int = 20) -> dict[str, float]:
            return {"Sure": -0.1} if _instruction(messages) == silent else super().top_logprobs(messages, n=n)

    result = methods.run_method("selectit", pool, budget=BUDGET, store=store, backend=NoDigitForOneRow(), phrasings=2)
    assert result.selected == BUDGET and result.flags["unscored"] == 1
    assert pool.frame["id"].iloc[0] not in set(result.frame()["id"])
    assert store.get_run(result.run_id)["status"] == "incomplete"
    assert store.subset_results(result.run_id)[0]["status"] == "failed"


def test_rating_stops_when_the_backend_is_unreachable_and_resumes_the_rest(pool, store: Store) -> None:  # noqa: ANN001
    from selectllm_core.errors import BackendError

    class Down(RatingBackend):
        def chat(self, messages, **kwargs):  # noqa: ANN001, ANN003, ANN201
            raise BackendError("cannot reach the server")

    with pytest.raises(BackendError, match="3 batches in a row"):
        methods.run_method("alpagasus", pool, budget=5, store=store, backend=Down(label="same"), threshold=0.0)
    [run_id] = store.list_runs()["run_id"]
    assert [r["status"] for r in store.subset_results(run_id)] == ["error"] * 3
    up = RatingBackend(label="same")
    result = methods.run_method("alpagasus", pool, budget=5, store=store, backend=up, threshold=0.0)
    assert result.run_id == run_id and result.selected == 5 and up.chats == len(pool.frame)


@pytest.mark.slow
def test_selectit_with_the_bundled_local_model(pool, store: Store) -> None:  # noqa: ANN001
    from selectllm_core.llm import make_backend

    small = load_pool(pool.frame[["id", "instruction", "input"]].head(5))
    result = methods.run_method("selectit", small, budget=2, store=store, backend=make_backend("local"), phrasings=2)
    assert result.selected == 2 and result.flags["scored"] == 5
    assert result.flags["mean_digit_mass"] > 0.01  # the digits are among the model's likely first tokens
    assert store.usage(result.run_id)["calls"] == 5 * 2


# -- runner, CLI and export -----------------------------------------------------------------------------------
def test_runner_validates_at_the_boundary(pool, store: Store) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="covers the whole pool"):
        methods.run_method("random", pool, budget=len(pool.frame), store=store)
    with pytest.raises(ConfigError, match="no parameter"):
        methods.run_method("random", pool, budget=5, store=store, tau=0.5)
    with pytest.raises(ConfigError, match="uses no language model"):
        methods.run_method("length", pool, budget=5, store=store, backend=RatingBackend())
    with pytest.raises(ConfigError, match="Unknown method"):
        methods.get("magic")


def test_cli_runs_a_method_and_exports_with_a_repeatable_manifest(shared_data: Path, tmp_path: Path) -> None:
    from selectllm_core.cli import main

    path = tmp_path / "pool.jsonl"
    dolly_frame(shared_data, 80).to_json(path, orient="records", lines=True)
    out = tmp_path / "picks.csv"
    res = CliRunner().invoke(main, ["method", "length", str(path), "-b", "7", "--order", "shortest",
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["selected"] == 7 and summary["method"] == "length"
    assert len(pd.read_csv(out)) == 7
    manifest = json.loads(Path(summary["export"][-1]).read_text())
    assert manifest["repeat"] == "selectllm method length POOL --budget 7 --order shortest"
    bad = CliRunner().invoke(main, ["method", "length", str(path), "-b", "500"])
    assert bad.exit_code != 0 and "covers the whole pool" in bad.output
