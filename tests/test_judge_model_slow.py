"""The capable local model, for real: Qwen2.5-Coder-1.5B-Instruct judging real Dolly subsets (slow: minutes).

It runs only where the model is installed (`bash scripts/install.sh --judge-model`); elsewhere it skips with
that command. Each subset is asked as a run asks it (the default preset, its JSON schema, the parser), in its
order and reversed. SmolLM2-135M fails these checks: it answers positions 1 and 2 whatever they hold.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from selectllm_core.cli import main
from selectllm_core.llm import make_backend
from selectllm_core.llm import models as registry
from selectllm_core.llm.local import stop_model_processes
from selectllm_core.select.listwise import Candidate, PromptSpec, select_subset
from selectllm_core.select.prompts import PRESETS

pytestmark = pytest.mark.slow

QWEN = registry.local_model("qwen2.5-coder-1.5b")
# Read at import, before the autouse fixtures point the cache folder at an empty temporary one.
INSTALLED = registry.model_path(QWEN).resolve() if registry.is_installed(QWEN) else None
SUBSETS, N, K = 3, 10, 2


@pytest.fixture
def real_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache folder that holds the installed model (skip, with the install command, when there is none)."""
    if INSTALLED is None:
        pytest.skip(f"{QWEN.name} is not installed: {QWEN.install_command()}")
    monkeypatch.setenv("SELECTLLM_CACHE_DIR", str(INSTALLED.parent.parent))
    return INSTALLED.parent.parent


def dolly_subsets(folder: Path) -> list[list[Candidate]]:
    with gzip.open(folder / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    order = np.random.default_rng(7).permutation(len(rows))[: SUBSETS * N]
    shown = [Candidate(f"dolly-{i}", rows[i]["instruction"], rows[i]["input"]) for i in order]
    return [shown[s * N:(s + 1) * N] for s in range(SUBSETS)]


def test_the_installed_file_is_the_pinned_one(real_cache: Path) -> None:
    digest = hashlib.sha256()
    with INSTALLED.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    assert digest.hexdigest() == QWEN.sha256


def test_the_install_command_checks_that_it_answers_in_a_child_process(real_cache: Path) -> None:
    out = CliRunner().invoke(main, ["models", "install", QWEN.name])
    assert out.exit_code == 0, out.output
    assert "verified" in out.output and "in a child process" in out.output


def test_it_judges_content_not_positions(real_cache: Path, shared_data: Path) -> None:
    backend = make_backend("local", model=QWEN.name)
    assert backend.describe()["model"] == QWEN.file
    spec = PromptSpec(PRESETS["default"].template, PRESETS["default"].answer_format)
    agree, first_two, picks = 0, 0, 0
    try:
        for s, members in enumerate(dolly_subsets(shared_data)):
            answers = []
            for shown in (members, members[::-1]):
                out = select_subset(backend, shown, subset=s, k=K, prompt=spec, shuffle=False)
                assert out.status == "ok", (out.error, out.raw)
                assert all(out.reasons.get(rid, "").strip() for rid in out.picks), "a reason for every pick"
                first_two += sum(out.members.index(rid) < 2 for rid in out.picks)
                picks += len(out.picks)
                answers.append(set(out.picks))
            agree += len(answers[0] & answers[1])
    finally:
        stop_model_processes()
    assert first_two / picks < 0.75, "a position picker takes the first two shown (SmolLM2: 1.00)"
    assert agree >= 1, "some pick survives reversing the order (random picks share 0.2 per subset on average)"


def test_its_score_passes_are_probabilities_and_the_reasoned_call_explains_exactly_the_picks(
        real_cache: Path, shared_data: Path) -> None:
    from selectllm_core.select.scores import SCORED, position_prior, reason_subset, score_subset

    backend = make_backend("local", model=QWEN.name)
    spec = PromptSpec(PRESETS["default"].template, PRESETS["default"].answer_format)
    subsets = dolly_subsets(shared_data)[:2]
    try:
        scored = [score_subset(backend, members, subset=s, k=K, prompt=spec, orders=2)
                  for s, members in enumerate(subsets)]
        assert all(out.status == SCORED for out in scored), [(o.error, o.raw) for o in scored]
        for out in scored:
            for o in out.orders:
                # every id of the subset gets a probability, and most of the model's mass is on the ids
                assert len(o["logprobs"]) == N and sum(np.exp(o["logprobs"])) == pytest.approx(1.0, abs=1e-4)
                assert o["mass"] > 0.5, o["mass"]
        prior = position_prior([{"orders": out.orders} for out in scored])
        for s, out in enumerate(scored):
            stored = {"members": out.members, "orders": out.orders, "raw": out.raw}
            done = reason_subset(backend, stored, subset=s, k=K, prompt=spec, prior=prior, candidates=subsets[s])
            assert len(done.picks) == K and set(done.picks) <= set(out.members)
            # the reasons are for the picks, and only for them (or the note says why there are none)
            assert set(done.reasons) == set(done.picks) or done.note, (done.reasons, done.raw)
            assert all(r.strip() for r in done.reasons.values())
    finally:
        stop_model_processes()
