"""The local model runs in a child process: killing it mid-call is an error message and a resumable run.

A llama.cpp build for instructions the CPU cannot run dies with SIGILL on its first call, and an out-of-memory
kill is SIGKILL. Both used to end the process holding the app or the run. Here the real bundled model is killed
with real signals while it answers, through the Python API, the `selectllm` command and the studio's run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import FakeEmbedder
from streamlit.testing.v1 import AppTest

from selectllm_core.errors import ModelCrashed
from selectllm_core.llm import LocalLlamaBackend, bundled_model_path
from selectllm_core.llm.local import model_process, stop_model_processes
from selectllm_core.pipeline import RunConfig
from selectllm_core.store import Store
from selectllm_core.studio import jobs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "dolly_demo.jsonl"
LONG = [{"role": "user", "content": "Summarise these instructions in one line.\n" +
         "\n".join(pd.read_json(DEMO, lines=True)["instruction"].head(120))}]


@pytest.fixture
def local() -> LocalLlamaBackend:
    try:
        path = bundled_model_path()
    except Exception as exc:  # noqa: BLE001 - the bundled model is an installed package
        pytest.skip(f"bundled model missing: {exc}")
    yield LocalLlamaBackend(path, n_ctx=4096)
    stop_model_processes()


def kill_during_call(backend: LocalLlamaBackend, sig: int) -> BaseException | None:
    """Start a long call, send `sig` to the model process while it answers, return what the call raised."""
    backend.chat([{"role": "user", "content": "Say OK."}], max_tokens=2)  # the process is up and loaded
    proc = model_process(backend.model_path, n_ctx=backend.n_ctx, n_threads=backend.n_threads, seed=backend.seed)
    pid, caught = proc.pid, []

    def call() -> None:
        try:
            backend.chat(LONG, max_tokens=64)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            caught.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(1.0)  # reading a 2k-token prompt takes several seconds on two cores
    assert worker.is_alive(), "the call ended before the kill: make the prompt longer"
    os.kill(pid, sig)
    worker.join(60)
    return caught[0] if caught else None


def test_sigill_in_the_model_process_is_an_error_that_names_the_cpu_problem(local: LocalLlamaBackend) -> None:
    exc = kill_during_call(local, signal.SIGILL)
    assert isinstance(exc, ModelCrashed)
    message = str(exc)
    assert "SIGILL" in message and "CPU instructions" in message and "bash scripts/install.sh" in message
    assert "SELECTLLM_LLAMA_CMAKE_ARGS" in message
    # the next call starts a fresh process and answers
    assert local.chat([{"role": "user", "content": "Say OK."}], max_tokens=4).completion_tokens > 0


def test_sigkill_mid_call_is_an_error_and_the_next_call_answers(local: LocalLlamaBackend) -> None:
    exc = kill_during_call(local, signal.SIGKILL)
    assert isinstance(exc, ModelCrashed) and "SIGKILL" in str(exc)
    assert local.count_tokens("one two three") > 0
    assert local.chat([{"role": "user", "content": "Say OK."}], max_tokens=4).completion_tokens > 0


def model_children(parent: int) -> list[int]:
    """Pids of the chat-model processes (not the tokenizer) that `parent` started."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and "selectllm_core.llm.worker" in cmd and '"vocab_only": false' in cmd:
            out.append(int(entry.name))
    return out


def test_the_cli_run_survives_a_killed_model_and_the_same_command_resumes(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pd.read_json(DEMO, lines=True).head(60).to_json(pool, orient="records", lines=True)
    env = {**os.environ, "SELECTLLM_WORKSPACE": str(tmp_path / "ws.sqlite"),
           "SELECTLLM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "selectllm_core", "run", str(pool), "--budget", "3", "--subset-size", "20",
            "--no-export", "--json"]
    cli = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 300, None
    while killed is None and time.monotonic() < deadline and cli.poll() is None:
        children = model_children(cli.pid)
        if children:
            time.sleep(1.5)  # inside the first selection call
            os.kill(children[0], signal.SIGKILL)
            killed = children[0]
        time.sleep(0.1)
    out, err = cli.communicate(timeout=600)
    assert killed, f"no model process appeared: {err[-2000:]}"
    assert cli.returncode == 0, err[-2000:]
    first = json.loads(out)
    assert first["short_by"] >= 1 and first["subsets"].get("error") == 1
    status = subprocess.run([sys.executable, "-m", "selectllm_core", "status", first["run_id"], "--failed"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert "SIGKILL" in status.stdout and "run again" in status.stdout.lower()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout)
    assert second["run_id"] == first["run_id"] and second["short_by"] == 0
    assert second["stats"]["llm_calls_new"] in (1, 2)  # only the crashed subset (plus a repair retry)


def test_the_studio_keeps_serving_and_shows_the_crash(local: LocalLlamaBackend, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    from selectllm_core.pool.load import load_pool

    st.cache_data.clear()
    st.cache_resource.clear()
    store = Store()
    saved = store.save_pool(load_pool(pd.read_json(DEMO, lines=True).head(40), name="demo 40"))
    config = RunConfig(budget=2, subset_size=20)
    job = jobs.start_run(workspace=store.path, pool_id=saved.pool_id, config=config, backend=local,
                         embedder=FakeEmbedder(), cache_root=tmp_path / "cache")
    deadline = time.monotonic() + 120
    proc = model_process(local.model_path, n_ctx=local.n_ctx, n_threads=local.n_threads, seed=local.seed)
    while proc.pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    job.thread.join(300)
    results = store.subset_results(job.run_id)
    assert [r["status"] for r in results].count("error") == 1
    from app_pages import _shared

    monkeypatch.setattr(_shared, "embedder", lambda: FakeEmbedder())
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    monkeypatch.setattr(_shared, "local_backend", lambda: local)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("app_pages/select.py").run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "SIGKILL" in errors, errors
    at.run()  # the studio keeps serving: the page draws again, and the run can be retried from it
    assert not at.exception and any(b.key == "select_retry_failed" for b in at.button)


def test_a_local_call_reports_llama_cpps_own_time_and_reuses_the_prompt_it_has_read(local: LocalLlamaBackend) -> None:
    messages = [{"role": "user", "content": "List three colours of the rainbow, comma-separated."}]
    first = local.chat(messages, max_tokens=12)
    assert first.engine_seconds is not None and 0 < first.engine_seconds <= first.elapsed
    again = local.chat(messages + [{"role": "assistant", "content": first.text},
                                   {"role": "user", "content": "And two more."}], max_tokens=12)
    assert 0 < again.engine_seconds <= again.elapsed
    # the conversation so far is in llama.cpp's cache: only the new turn is read again
    timings = local._process().request("chat", messages=messages, kwargs={"max_tokens": 1, "temperature": 0.0})
    assert timings["timings"]["prompt_n"] < first.prompt_tokens, timings["timings"]


def test_a_score_pass_gives_every_id_a_probability_from_one_read_of_the_prompt(local: LocalLlamaBackend) -> None:
    from selectllm_core.select.prompts import PRESETS, render, score_prefill

    rows = [(f"Explain how {topic} works.", "") for topic in (
        "a bicycle", "rain", "a vaccine", "a loan", "a compiler", "tides", "a refrigerator", "an election",
        "photosynthesis", "a bridge", "a market")]
    messages = [{"role": "user", "content": render(PRESETS["default"].template, rows, k=2)}]
    ids = [str(i) for i in range(1, 12)]
    first = local.score_ids(messages, prefill=score_prefill("json"), ids=ids)
    assert set(first.logprobs) == set(ids)
    assert sum(math.exp(v) for v in first.logprobs.values()) == pytest.approx(1.0, abs=1e-6)
    # "1" of "10" and "11": the id 1 keeps only the answers that stop after it, so 10 and 11 are scored apart
    assert first.logprobs["10"] != first.logprobs["11"] and 0 < first.mass <= 1
    assert first.completion_tokens == 0 and 0 < first.engine_seconds <= first.elapsed
    again = local.score_ids(messages, prefill=score_prefill("json"), ids=ids)
    # the cached prompt's last token is read again on its own, so the quantised kernels round a little differently
    assert again.logprobs == pytest.approx(first.logprobs, abs=0.2)
    # the prompt it has read is not read again: llama.cpp counts the tokens it read (seconds depend on the load)
    raw = local._process().request("score_ids", messages=messages, prefill=score_prefill("json"), ids=ids)
    assert raw["timings"]["prompt_n"] <= 2 < first.prompt_tokens, raw["timings"]


def test_the_lazy_grammar_gives_the_answers_of_the_full_grammar_and_masks_the_vocabulary_rarely(
        local: LocalLlamaBackend) -> None:
    from selectllm_core.select.listwise import Candidate, PromptSpec, first_request
    from selectllm_core.select.parsing import parse_answer
    from selectllm_core.select.prompts import PRESETS

    full = LocalLlamaBackend(local.model_path, n_ctx=local.n_ctx, grammar="full")
    rows = pd.read_json(DEMO, lines=True).head(30)
    preset = PRESETS["default"]
    spec = PromptSpec(preset.template, preset.answer_format)
    for start in (0, 10, 20):
        members = [Candidate(f"r{i}", rows["instruction"][i], rows["input"][i] or "") for i in range(start, start + 10)]
        messages, schema = first_request(members, k=2, prompt=spec)
        kwargs = {"max_tokens": spec.max_tokens, "temperature": 0.0,
                  "response_format": {"type": "json_object", "schema": schema}}
        lazy = local._process().request("chat", messages=messages, kwargs=kwargs)
        plain = full._process().request("chat", messages=messages, kwargs=kwargs)
        text = lazy["choices"][0]["message"]["content"]
        # greedy under a grammar: the most likely allowed token, whichever way the grammar is asked
        assert text == plain["choices"][0]["message"]["content"]
        assert "grammar_sampling" not in plain
        steps = lazy["grammar_sampling"]
        # one check per answer token, and one for the end token the answer stopped with
        ended = lazy["choices"][0]["finish_reason"] == "stop"
        assert steps["checked"] == lazy["usage"]["completion_tokens"] + ended, steps
        assert steps["masked"] < steps["checked"] / 2, steps  # the chosen token is usually allowed
        assert parse_answer(text, n=10, k=2).ok, text
