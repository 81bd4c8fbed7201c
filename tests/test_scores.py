"""SelectLLM's score aggregation: one-token score passes in P orders, the run's position prior, one reasoned call.

Scripted scorers stand in for the model's next-token probabilities: one gives a position bias only (what a
small model does with these prompts), one adds a content preference (the instructions with the smallest
digest) on top of the same bias. The worker's own scoring of a real GGUF is checked in test_model_process.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from selectllm_core.errors import ConfigError
from selectllm_core.llm import ScoreResult
from selectllm_core.methods.selectllm import estimate
from selectllm_core.pipeline import RunConfig, retry_failed
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.select.orders import run_consistency
from selectllm_core.select.prompts import score_prefill
from selectllm_core.select.scores import SCORE, calibrated, position_prior
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder
from tests.fakes import ScriptedBackend, shown_instructions
from tests.test_methods import dolly_frame

BIAS = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0, -0.5, -0.5, -1.0])  # logits by shown position


def digest_rank(shown: list[str]) -> list[float]:
    """Content preference: 0 for the worst-digest instruction up to 1 for the best, by rank among those shown."""
    order = sorted(range(len(shown)), key=lambda i: hashlib.sha256(shown[i].encode()).hexdigest())
    rank = {i: r for r, i in enumerate(order)}
    return [1.0 - rank[i] / max(1, len(shown) - 1) for i in range(len(shown))]


def explain(prompt: str, n: int, k: int, attempt: int) -> str:
    """The reasoned call's answer: a reason for each id the prompt says was selected."""
    named = [int(x) for x in re.findall(r"\[(\d+)\]", prompt.split("have been selected:")[1].split(".")[0])]
    shown = shown_instructions(prompt)
    return json.dumps({"picks": [{"id": i, "reason": f"about {shown[i - 1][:30]}"} for i in named]})


class Scorer(ScriptedBackend):
    """A scripted backend that also scores ids: logits = position bias + `content` x content preference."""

    def __init__(self, content: float, answer=explain) -> None:  # noqa: ANN001
        super().__init__(answer)
        self.content = content
        self.scored: list[tuple[str, list[str]]] = []
        self.stop_after: int | None = None
        self.cancel: threading.Event | None = None

    def score_ids(self, messages: list[dict], *, prefill: str, ids: list[str]) -> ScoreResult:
        prompt = messages[0]["content"]
        self.scored.append((prefill, list(ids)))
        if self.stop_after is not None and len(self.scored) >= self.stop_after and self.cancel is not None:
            self.cancel.set()
        shown = shown_instructions(prompt)
        z = BIAS[: len(shown)] + self.content * 4.0 * np.array(digest_rank(shown))
        lp = z - np.logaddexp.reduce(z)
        return ScoreResult({i: float(v) for i, v in zip(ids, lp)}, prompt_tokens=len(prompt.split()),
                           model=self.label, elapsed=0.0, mass=0.9)


@pytest.fixture
def pool(shared_data: Path):  # noqa: ANN201 - a Pool
    return load_pool(dolly_frame(shared_data, rows=60), name="dolly-60")


def _run(pool, backend, tmp_path: Path, cancel=None, **config):  # noqa: ANN001, ANN003, ANN202
    store = Store(tmp_path / "ws.sqlite")
    cfg = RunConfig(budget=12, subset_size=10, **config)  # 6 subsets of 10, 2 picks each
    res = run_selectllm(pool, cfg, store=store, backend=backend, embedder=FakeEmbedder(), responses=False,
                        cancel=cancel)
    return store, res, cfg


def best_by_content(store: Store, run_id: str, pool) -> set[str]:  # noqa: ANN001
    text = dict(zip(pool.frame["id"], pool.frame["instruction"]))
    out = set()
    for r in store.subset_results(run_id):
        members = r["members"]
        ranks = digest_rank([text[m].strip() for m in members])
        out |= {m for m, _ in sorted(zip(members, ranks), key=lambda x: -x[1])[:2]}
    return out


def test_a_content_reader_is_consistent_across_orders_and_its_picks_are_the_content_best(pool, tmp_path: Path) -> None:  # noqa: ANN001
    backend = Scorer(content=2.0)  # content outweighs the position bias
    store, res, _ = _run(pool, backend, tmp_path, orders=4, aggregation="scores")
    assert len(backend.scored) == 4 * 6 and len(backend.calls) == 6, "P score passes and one reasoned call a subset"
    assert {p for p, _ in backend.scored} == {score_prefill("json")}
    results = store.subset_results(res.run_id)
    assert all(r["status"] == "ok" and [o["role"] for o in r["orders"]] == [SCORE] * 4 for r in results)
    assert set(store.selection(res.run_id)["id"]) == best_by_content(store, res.run_id, pool)
    c = run_consistency(results)
    # each pass's own top two, against a prior from only 24 passes, swap a close third in now and then
    assert c.value >= 0.75 and c.clearly_above and "follow the content" in c.verdict()
    assert all(r["reasons"][p].startswith("about ") for r in results for p in r["picks"])
    # the ledger holds every pass and every reasoned call, and the subset totals count both
    assert store.count_calls(res.run_id) == 4 * 6 + 6
    assert all(r["attempts"] == 5 for r in results)


def test_a_position_only_scorer_is_at_chance_and_says_so(pool, tmp_path: Path) -> None:  # noqa: ANN001
    store, res, _ = _run(pool, Scorer(content=0.0), tmp_path, orders=2, aggregation="scores")
    results = store.subset_results(res.run_id)
    prior = position_prior(results)
    assert np.argmax(prior[10]) == 0 and prior[10][0] > 0.3  # the run's prior is the bias it was given
    # once the prior is taken out, no candidate scores above another
    assert all(abs(v) < 1e-6 for r in results for v in calibrated(r["orders"], prior).values())
    c = run_consistency(results)
    assert c.at_chance and "no better than random here" in c.verdict()
    assert len(store.selection(res.run_id)) == 12


def test_without_calibration_the_bias_would_win_and_with_it_content_does(pool, tmp_path: Path) -> None:  # noqa: ANN001
    # a weak content preference under a strong position bias: a pass's own top two are mostly positions 1-2
    store, res, _ = _run(pool, Scorer(content=0.5), tmp_path, orders=8, aggregation="scores")
    results = store.subset_results(res.run_id)
    passes = [o for r in results for o in r["orders"]]
    top_two = [set(sorted(o["shown"], key=lambda rid: -o["logprobs"][o["shown"].index(rid)])[:2]) for o in passes]
    assert np.mean([t == set(o["shown"][:2]) for t, o in zip(top_two, passes)]) > 0.5  # chance: 1 in 45
    best = best_by_content(store, res.run_id, pool)
    uniform = {10: [0.1] * 10}  # no calibration: the mean log probability over the orders
    raw = {p for r in results for p in sorted(calibrated(r["orders"], uniform).items(), key=lambda x: -x[1])[:2]
           for p in [p[0]]}
    chosen = set(store.selection(res.run_id)["id"])
    assert len(chosen & best) > len(raw & best) and len(chosen & best) >= 9, (len(chosen & best), len(raw & best))


def test_an_unusable_reasoned_answer_leaves_the_picks_without_reasons_and_keeps_it(pool, tmp_path: Path) -> None:  # noqa: ANN001
    backend = Scorer(content=2.0, answer=lambda prompt, n, k, attempt: "I think they are all great")
    store, res, _ = _run(pool, backend, tmp_path, orders=4, aggregation="scores")
    results = store.subset_results(res.run_id)
    assert len(backend.calls) == 2 * 6, "one repair retry, then the picks stand"
    repair = backend.calls[1][2]["content"]
    assert "could not be used" in repair and "a one-sentence reason for each of [" in repair
    assert all(r["status"] == "ok" and len(r["picks"]) == 2 and not r["reasons"] for r in results)
    assert all("could not be used" in r["note"] and "I think they are all great" in r["raw"] for r in results)
    assert set(store.selection(res.run_id)["id"]) == best_by_content(store, res.run_id, pool)


def test_a_run_stopped_between_the_stages_resumes_without_scoring_again(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.errors import RunStopped

    backend, cancel = Scorer(content=2.0), threading.Event()
    backend.stop_after, backend.cancel = 4 * 6, cancel  # the last pass sets Stop: no reasoned call starts
    with pytest.raises(RunStopped):
        _run(pool, backend, tmp_path, cancel=cancel, orders=4, aggregation="scores")
    store = Store(tmp_path / "ws.sqlite")
    (run,) = store.list_runs().to_dict("records")
    assert {r["status"] for r in store.subset_results(run["run_id"])} == {"scored"}
    again = Scorer(content=2.0)
    store, res, _ = _run(pool, again, tmp_path, orders=4, aggregation="scores")
    assert res.run_id == run["run_id"] and not again.scored and len(again.calls) == 6
    assert set(store.selection(res.run_id)["id"]) == best_by_content(store, res.run_id, pool)
    # a retried subset is scored again, and its picks use the whole round's prior
    retried = Scorer(content=2.0)
    retry_failed(store, res.run_id, backend=retried, subsets=[0])
    assert len(retried.scored) == 4 and len(retried.calls) == 1
    assert set(store.selection(res.run_id)["id"]) == best_by_content(store, res.run_id, pool)


def test_scores_need_a_backend_that_scores_and_the_id_and_estimate_say_which_aggregation(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.pipeline import run_id_of

    with pytest.raises(ConfigError, match="--aggregation borda"):
        _run(pool, ScriptedBackend(), tmp_path, orders=2, aggregation="scores")
    backend, store = Scorer(content=1.0), Store(tmp_path / "est.sqlite")
    cfg = RunConfig(budget=12, subset_size=10, orders=4)
    scores_cfg = RunConfig(budget=12, subset_size=10, orders=4, aggregation="scores")
    assert run_id_of(pool, cfg, backend) != run_id_of(pool, scores_cfg, backend)
    assert run_id_of(pool, RunConfig(budget=12, subset_size=10, aggregation="borda"), backend) == run_id_of(
        pool, RunConfig(budget=12, subset_size=10), backend), "the default keeps earlier runs' ids"
    vectors = FakeEmbedder().encode(pool.frame["text"].tolist())
    _p, _s, borda = estimate(pool, cfg, backend=backend, store=store, vectors=vectors, responses=False)
    _p, _s, scores = estimate(pool, scores_cfg, backend=backend, store=store, vectors=vectors, responses=False)
    assert borda.calls == 4 * 6 and scores.calls == 4 * 6 + 6
    assert scores.completion_tokens < borda.completion_tokens / 3, "score passes generate nothing"
