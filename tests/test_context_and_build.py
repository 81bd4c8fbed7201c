"""Prompts fit the model's context; what differs from the plan is said; the llama.cpp build asks the machine.

The plan caps the subset size by the backend's context window (more, smaller subsets; every row still shown
once), a subset given fewer picks than planned says so, a prompt too long for the model is named as that
(never "could not reach the model"), and the install enables an instruction set only when a program using it
ran here, so a CPU that reports a set it cannot execute gets a build that runs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import FakeEmbedder
from fakes import ScriptedBackend

from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import ConfigError, PromptTooLong
from selectllm_core.llm import LocalLlamaBackend, OpenAICompatibleBackend
from selectllm_core.pipeline import RunConfig, degradations, plan, run
from selectllm_core.pool.load import load_pool
from selectllm_core.select.context import ASSUMED_WINDOW, context_window, subset_cap
from selectllm_core.select.listwise import Candidate, PromptSpec, execute, select_subset
from selectllm_core.select.prompts import load_template
from selectllm_core.split import plan_budget
from selectllm_core.store import Store

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("build_llama", REPO / "scripts" / "build_llama.py")
build_llama = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_llama)


class WindowedBackend(ScriptedBackend):
    """A scripted backend with a declared context window."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.context_window = window


def dolly(n: int) -> pd.DataFrame:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True)
    reps = -(-n // len(frame))
    out = pd.concat([frame] * reps, ignore_index=True).head(n)
    out["instruction"] = [f"{t} (variant {i})" for i, t in enumerate(out["instruction"])]
    return out


def test_context_windows_come_from_n_ctx_the_setting_the_table_or_a_stated_assumption() -> None:
    assert context_window(LocalLlamaBackend("x.gguf", n_ctx=4096)).tokens == 4096
    remote = OpenAICompatibleBackend(model="gpt-4o-mini", api_key="k")
    assert context_window(remote).tokens == 128_000
    remote.context_window = 32_000
    assert context_window(remote).source == "set with --context-window"
    unknown = context_window(OpenAICompatibleBackend(model="my-finetune", api_key="k"))
    assert unknown.tokens == ASSUMED_WINDOW and "--context-window" in unknown.source


def test_a_derived_subset_size_is_capped_by_the_context_and_the_plan_says_so() -> None:
    free = plan_budget(1_000_000, 1000)
    assert free.subset_size == 1000 and not free.cap_note  # the paper's arithmetic: 1,000 candidates a prompt
    capped = plan_budget(1_000_000, 1000, max_subset_size=40, cap_reason="the context holds 40")
    assert capped.subset_size == 40 and capped.n_subsets == 25_000
    assert capped.n_subsets * capped.picks_per_subset >= 1000
    assert "capped: the context holds 40 (the paper's arithmetic gives 1000)" in capped.describe()
    with pytest.raises(ConfigError, match="--subset-size 40 or less"):
        plan_budget(10_000, 100, subset_size=200, max_subset_size=40, cap_reason="the context holds 40")


def test_a_run_on_a_small_context_shows_every_row_once_in_prompts_that_fit(tmp_path: Path) -> None:
    pool = load_pool(dolly(1500), name="dolly 1500")
    backend = WindowedBackend(2048)
    uncut = plan(pool, RunConfig(budget=20, max_tokens=256), backend=backend)
    assert "too long for any prompt of this model on their own: cut them with --max-input-chars" in uncut.cap_note
    config = RunConfig(budget=20, max_tokens=256, max_input_chars=1000)
    budget = plan(pool, config, backend=backend)
    assert budget.cap_note and budget.subset_size < 75  # without the cap: 1500 / 20 = 75 per prompt
    assert "too long" not in budget.cap_note
    result = run(pool, config, store=Store(tmp_path / "ws.sqlite"), backend=backend, embedder=FakeEmbedder(),
                 cache=EmbeddingCache(tmp_path / "cache"))
    first = result.store.rounds(result.run_id)[0]["n_subsets"]  # later rounds ask again among the winners
    members = [m for r in result.store.subset_results(result.run_id) if r["subset"] < first for m in r["members"]]
    assert sorted(members) == sorted(pool.frame["id"]) and len(members) == len(set(members))
    assert len(result.store.rounds(result.run_id)) == len(budget.rounds) > 1
    longest = max(len(call[0]["content"]) for call in backend.calls)
    assert longest / 4 + config.max_tokens < 2048  # at the cap's own 4 characters a token
    assert result.summary["selected"] == 20


def test_the_cap_counts_with_the_tokenizer_when_the_backend_has_one() -> None:
    class Counting(WindowedBackend):
        def count_tokens_many(self, texts: list[str]) -> list[int]:
            return [100 for _ in texts]  # long rows: every candidate takes 100 tokens

    template, _ = load_template("default")
    cap = subset_cap(dolly(50), Counting(4096), template=template, max_tokens=512)
    assert cap.tokens_per_candidate == pytest.approx(100 + 14) and cap.spread == 0
    assert cap.size == (4096 - cap.fixed_tokens) // cap.tokens_per_candidate


PROMPT = PromptSpec(load_template("default")[0])


def test_a_subset_with_fewer_rows_than_planned_picks_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws.sqlite")
    members = [Candidate("a", "Name a river.", ""), Candidate("b", "Name a sea.", "")]
    out = select_subset(ScriptedBackend(), members, subset=0, k=2, prompt=PROMPT)
    assert out.status == "ok" and len(out.picks) == 1
    assert "2 picks were planned, but this subset holds only 2 rows" in out.note
    store.create_run("run-n", pool_id="p", method="selectllm", params={}, prompt="", backend={"kind": "fake"})
    execute(store, "run-n", {0: members}, backend=ScriptedBackend(), k=2, prompt=PROMPT)
    assert store.subset_results("run-n")[0]["note"] == out.note
    assert any("fewer picks than planned" in line for line in degradations(store, "run-n"))


def test_a_prompt_too_long_for_the_model_is_said_to_be_one(tmp_path: Path) -> None:
    class TooLong(ScriptedBackend):
        def chat(self, messages, **kwargs):  # noqa: ANN001, ANN201
            raise PromptTooLong("the prompt does not fit the local model's context of 512 tokens; use smaller "
                                "subsets (--subset-size) or shorter inputs (--max-input-chars)")

    store = Store(tmp_path / "ws.sqlite")
    members = [Candidate(str(i), f"Instruction {i}", "") for i in range(5)]
    counts = execute(store, "run-t", {0: members, 1: members}, backend=TooLong(), k=1, prompt=PROMPT)
    results = store.subset_results("run-t")
    assert counts["failed"] == 2 and counts["error"] == 0
    assert all("too long" in r["error"] and "--subset-size" in r["error"] for r in results)
    assert not any("could not reach" in r["error"] for r in results)


def test_the_build_enables_only_instruction_sets_whose_program_ran(tmp_path: Path) -> None:
    assert build_llama.runs("nop", tmp_path)
    assert not build_llama.runs("ud2", tmp_path)  # raises SIGILL: a set the CPU reports but cannot execute
    args, enabled = build_llama.cmake_args()
    if not args.startswith("-DGGML_NATIVE=OFF"):
        pytest.skip("not an x86-64 machine")
    assert "-DGGML_AMX_TILE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AMX_BF16=OFF" in args
    for option, asm, _needs in build_llama.PROBES:
        assert (f"-D{option}=ON" in args) == (option in enabled)
        if option in enabled:
            assert build_llama.runs(asm, tmp_path)


def test_the_build_skips_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.touch()
    args, _enabled = build_llama.cmake_args()
    key = build_llama.build_key(build_llama.llama_version(), args)
    (venv / build_llama.STAMP).write_text(json.dumps({"key": key}))
    monkeypatch.setattr(build_llama, "pip", lambda *a, **k: pytest.fail("rebuilt although nothing changed"))
    assert build_llama.main(str(python)) == 0
    assert build_llama.build_key(build_llama.llama_version(), args + " -DGGML_AVX512=ON") != key
    assert len(key) == 16
