"""AppTest smoke tests: every page renders on a seeded workspace, and its main interaction does what it says.

The workspace is seeded with a real Dolly slice (the bundled demo pool) and a finished run made at our seams:
a fake chat backend that answers valid JSON picks (and garbage for one subset, so a failure is on show) and
the deterministic FakeEmbedder. The app gets the same fakes through the app layer's factories.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from conftest import FakeEmbedder
from streamlit.testing.v1 import AppTest

from selectllm_core import methods
from selectllm_core.embed import EmbeddingCache
from selectllm_core.llm import ChatResult
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store
from selectllm_core.studio import jobs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the app's own modules (pages/_shared.py) live beside app.py
PAGES = [f"app_pages/{name}.py" for name in ("data", "map", "prompt", "select", "compare", "review",
                                                     "export")]
SCRIPT = "<script>alert('x')</script>"


class FakeBackend:
    """Picks the first k candidates with a reason each; the 2nd and 3rd calls answer garbage (one failed subset)."""

    name = "fake"
    concurrency = 1

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict:
        return {"kind": "fake", "model": "first-k"}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages, *, json_schema=None, max_tokens=512, temperature=0.0):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls in (2, 3):
            return ChatResult("I cannot decide.", 10, 4, "fake", 0.0)
        k = int(re.search(r"exactly (\d+) picks", messages[0]["content"]).group(1))
        picks = [{"id": i, "reason": f"reason {i} <b>bold?</b>"} for i in range(1, k + 1)]
        return ChatResult(json.dumps({"picks": picks}), 100, 20, "fake", 0.0)


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """A workspace with 60 demo rows (one of them HTML) and a finished run of 6 subsets, one failed."""
    st.cache_data.clear()
    st.cache_resource.clear()
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(60)
    frame.loc[0, "instruction"] = SCRIPT + " Explain what this tag does."
    pool = load_pool(frame, name="demo slice")
    store = Store()
    store.save_pool(pool)
    backend, embedder = FakeBackend(), FakeEmbedder()
    result = run(pool, RunConfig(budget=6, subset_size=10), store=store, backend=backend, embedder=embedder,
                 cache=EmbeddingCache())
    from app_pages import _shared

    monkeypatch.setattr(_shared, "embedder", lambda: embedder)
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    monkeypatch.setattr(_shared, "chat_backend", lambda: backend)
    monkeypatch.setattr(_shared, "local_backend", lambda: backend)
    return {"store": store, "run_id": result.run_id, "pool": pool, "backend": backend}


def shared_pool_name(at: AppTest) -> str:
    from app_pages import _shared

    return _shared.pool(at.session_state["pool_id"]).name


def open_page(page: str) -> AppTest:
    """Run the app once (fast PCA layout), then the page."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, text, info and warning of the page, joined."""
    parts = [e.value for kind in ("markdown", "caption", "text", "info", "warning", "error", "title", "subheader")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_first_start_opens_the_demo_pool_and_its_map() -> None:
    """No seeding: the app loads the bundled demo pool, builds the map and names the data's license."""
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["map_layout"] = "pca"
    from app_pages import _shared

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_shared, "embedder", lambda: FakeEmbedder())
        mp.setattr(_shared, "warm_up", lambda: None)
        at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Map"
    assert len(Store().list_pools()) == 1
    assert "CC BY-SA 3.0" in texts(at)
    assert at.get("plotly_chart"), "the map is drawn"
    assert "599 instructions" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_finished_run(seeded: dict, page: str) -> None:
    at = open_page(page)
    assert at.title[0].value == Path(page).stem.capitalize()
    assert SCRIPT not in "\n".join(m.value for m in at.markdown), "pool text is never rendered as markdown"


def test_sidebar_shows_pool_run_backend_and_workspace(seeded: dict) -> None:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    sidebar = "\n".join(t.value for t in at.sidebar.text)
    assert "demo slice · v1" in sidebar and seeded["run_id"] in sidebar
    assert "some subsets failed · 6/6 subsets" in sidebar  # one subset failed: the run is short of its budget
    assert str(seeded["store"].path.resolve()) in sidebar
    assert "too small to judge" in "\n".join(c.value for c in at.sidebar.caption)


def test_the_sidebar_opens_another_run_with_its_settings(seeded: dict) -> None:
    other = run(seeded["pool"], RunConfig(budget=4, subset_size=15), store=seeded["store"], backend=FakeBackend(),
                embedder=FakeEmbedder(), cache=EmbeddingCache())
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    assert at.session_state["run_id"] == other.run_id, "the latest run opens first"
    picker = at.sidebar.selectbox(key="sidebar_run")
    assert len(picker.options) == 2
    picker.select(seeded["run_id"]).run()
    assert not at.exception, at.exception
    assert at.session_state["run_id"] == seeded["run_id"]
    assert at.session_state["run_config"]["budget"] == 6 and at.session_state["run_config"]["subset_size"] == 10


def test_the_sidebar_embedding_model_is_the_sessions_and_follows_an_opened_run(seeded: dict) -> None:
    other = run(seeded["pool"], RunConfig(budget=4, subset_size=15, embed_model="model2vec"), store=seeded["store"],
                backend=FakeBackend(), embedder=FakeEmbedder(), cache=EmbeddingCache())
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    assert at.session_state["run_id"] == other.run_id
    box = at.sidebar.selectbox(key="sidebar_embed_model")
    assert box.value == "model2vec", "the opened run's embedding model is the session's"
    assert "approximate" in "\n".join(c.value for c in at.sidebar.caption)
    box.select("minilm-int8").run()
    assert not at.exception, at.exception
    assert at.session_state["embed_model"] == "minilm-int8"
    assert "overlap@10 0.91" in "\n".join(c.value for c in at.sidebar.caption)
    at.sidebar.selectbox(key="sidebar_run").select(seeded["run_id"]).run()  # a run made with the bundled MiniLM
    assert at.session_state["embed_model"] is None and at.sidebar.selectbox(key="sidebar_embed_model").value is None


@pytest.mark.parametrize("page", ["app_pages/export.py"])
def test_pages_that_need_only_the_selection_never_load_the_pools_rows(seeded: dict, page: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidebar and these pages read summaries and the selection from the workspace, never the whole pool."""
    loads = []
    monkeypatch.setattr(Store, "load_pool", lambda self, pool_id: loads.append(pool_id))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.title[0].value == Path(page).stem.capitalize()
    assert "demo slice · v1\n60 rows" in "\n".join(t.value for t in at.sidebar.text)
    assert loads == []


def test_data_page_reports_an_upload_and_saves_it(seeded: dict) -> None:
    at = open_page("app_pages/data.py")
    csv = "prompt,topic\nWrite a haiku about rain,poetry\n,empty\nWrite a haiku about rain,poetry\nSum 2 and 3,math\n"
    at.file_uploader(key="data_upload").upload("mine.csv", csv.encode(), "text/csv").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Kept"] == "2" and metrics["Duplicates dropped"] == "1" and metrics["Empty dropped"] == "1"
    assert at.selectbox(key="data_col_ins").value == "prompt"
    at.button(key="data_save").click().run()
    assert not at.exception, at.exception
    assert len(seeded["store"].list_pools()) == 2
    assert at.session_state["run_id"] is None
    assert shared_pool_name(at) == "mine"


def test_map_page_lists_clusters_with_labels_and_examples(seeded: dict) -> None:
    at = open_page("app_pages/map.py")
    clusters = at.dataframe[-1].value
    assert list(clusters.columns) == ["cluster", "size", "label", "examples"]
    assert len(clusters) == 10 and set(clusters["size"]) == {6}
    assert all(len(e) == 3 for e in clusters["examples"])

    from app_pages import _map

    (build,) = _map._builds().values()  # embedded longest-first, so check the rows came back in pool order
    assert np.array_equal(build.vectors, FakeEmbedder().encode(seeded["pool"].frame["text"].tolist()))


def test_first_map_build_shows_its_steps_and_later_builds_are_instant(seeded: dict) -> None:
    first = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    first.session_state["map_layout"] = "pca"
    first.run()
    labels = [e.label for e in first.status]
    assert any(re.match(r"Map ready \(embedding \d+ s, clustering \d+ s, layout \d+ s\)", x) for x in labels), labels
    again = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)  # a second browser session
    again.session_state["map_layout"] = "pca"
    again.run()
    assert not again.status
    assert again.get("plotly_chart")


def test_the_api_key_stays_in_memory(seeded: dict) -> None:
    at = open_page("app_pages/select.py")
    at.radio(key="select_backend").set_value("openai").run()
    at.text_input(key="select_model").input("gpt-4o-mini").run()
    at.text_input(key="select_api_key").input("sk-test-never-stored-42").run()
    assert at.session_state["api_key"] == "sk-test-never-stored-42"
    assert "sk-test-never-stored-42" not in str(dict(at.session_state["backend"]))
    at.switch_page("app_pages/map.py").run()
    assert at.session_state["api_key"] == "sk-test-never-stored-42", "kept for the session across pages"
    workspace = Path(seeded["store"].path)
    assert all(b"sk-test-never-stored-42" not in f.read_bytes() for f in workspace.parent.rglob("*") if f.is_file())


def test_prompt_page_shows_errors_inline_and_counts_tokens(seeded: dict) -> None:
    at = open_page("app_pages/prompt.py")
    assert any(m.label.startswith("Prompt tokens") for m in at.metric)
    assert "### Instruction:" in at.code[0].value
    at.text_area(key="prompt_template").input("Pick {k} of {candidats}").run()
    errors = " ".join(e.value for e in at.error)
    assert "{candidats}" in errors and "{candidates}" in errors
    at.selectbox(key="prompt_preset").select("paper").run()
    assert not at.error
    assert "only identifiers" in at.text_area(key="prompt_template").value


def test_select_page_shows_the_failed_subset_and_retries_it(seeded: dict) -> None:
    at = open_page("app_pages/select.py")
    assert "6 / 6 subsets answered" in at.get("progress")[0].proto.text
    assert at.selectbox(key="select_subset").options[0].startswith("subset 1 · failed")
    assert "I cannot decide." in [c.value for c in at.code]
    at.button(key="select_retry_1").click().run()
    jobs.wait(seeded["run_id"], timeout=30)
    results = {r["subset"]: r["status"] for r in seeded["store"].subset_results(seeded["run_id"])}
    assert results[1] == "ok"
    assert len(seeded["store"].selection(seeded["run_id"])) == 6


def test_select_page_shows_the_runs_evidence_and_measures_order_consistency(seeded: dict) -> None:
    at = open_page("app_pages/select.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Valid answers"] == "5 of 6" and metrics["Order consistency"] == "not measured"
    assert metrics["Picks at shown positions 1–2"] == "100%"  # the fake picks the first ones
    assert {m.label: m.delta for m in at.metric}["Picks at shown positions 1–2"] == "uniform 20%"
    assert "Reasons that match their pick" in metrics  # the fake's reasons name no candidate: none is judged
    button = next(b for b in at.button if b.key == f"select_check_{seeded['run_id']}")
    assert "re-ask 4 subset(s) in reversed order (4 more call(s))" in button.label
    calls_before, selection = seeded["backend"].calls, seeded["store"].selection(seeded["run_id"])["id"].tolist()
    button.click().run()
    assert not at.exception, at.exception
    assert seeded["backend"].calls == calls_before + 4
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Order consistency"] == "0.00"
    assert {m.label: m.delta for m in at.metric}["Order consistency"] == "chance 0.10"  # 1 pick of 10
    assert any("no better than random here" in e.value for e in at.error)
    assert seeded["store"].selection(seeded["run_id"])["id"].tolist() == selection, "the picks stay"
    # the next run can show each subset in 4 orders: its estimate counts them
    at.selectbox(key="select_orders").set_value(4).run()
    assert at.session_state["run_config"]["orders"] == 4
    # 24 requests, 10 of them answered before: 6 in the shown order and the 4 reversed ones of the check
    assert [m.value for m in at.metric if m.label == "LLM calls to send"] == ["14"]


def test_select_page_warns_that_the_local_model_cannot_judge(seeded: dict) -> None:
    at = open_page("app_pages/select.py")
    assert any("far too small to judge" in w.value for w in at.warning)
    at.radio(key="select_backend").set_value("openai").run()
    assert not any("far too small" in w.value for w in at.warning)
    assert at.text_input(key="select_api_key").proto.type == at.text_input(key="select_api_key").proto.PASSWORD


def test_review_page_bulk_accepts_the_pending_picks_of_a_cluster(seeded: dict) -> None:
    at = open_page("app_pages/review.py")
    store, run_id = seeded["store"], seeded["run_id"]
    picks = store.selection(run_id)
    rejected, cluster = picks["id"].iloc[0], int(picks["cluster"].iloc[1])
    store.set_decisions(run_id, {rejected: ("rejected", "off topic")})
    at.multiselect(key="review_clusters").select(cluster).run()
    in_cluster = picks[(picks["cluster"] == cluster) & (picks["id"] != rejected)]["id"].tolist()
    assert at.button(key="review_accept_all").label == f"Accept {len(in_cluster)} pending (cluster {cluster})"
    at.button(key="review_accept_all").click().run()
    assert not at.exception, at.exception
    after = store.selection(run_id).set_index("id")
    assert after.loc[rejected, ["decision", "note"]].tolist() == ["rejected", "off topic"], "one-by-one decisions stay"
    assert set(after.loc[in_cluster, "decision"]) == {"accepted"}
    others = after.drop(index=[rejected, *in_cluster])
    assert set(others["decision"]) <= {"pending"}
    assert {m.label: m.value for m in at.metric}["Accepted"] == str(len(in_cluster))


def test_export_page_serves_what_the_cli_writes(seeded: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from selectllm_core.cli import main
    from selectllm_core.studio.download import export_bytes

    store, run_id = seeded["store"], seeded["run_id"]
    at = open_page("app_pages/export.py")
    assert at.radio(key="export_which").value == "selected"
    assert len(at.dataframe[0].value) == 5  # 5 ok subsets, one pick each
    served = export_bytes(store, run_id, fmt="csv", which="selected")
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["export", run_id, "--out", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert (out / served.name).read_bytes() == served.data


@pytest.mark.parametrize(
    "fixture",
    ["empty.csv", "excel_renamed.csv", "truncated.jsonl.gz", "binary_garbage.csv",
     "unterminated_quote.csv", "duplicate_ids.csv", "header_only.csv"],
)
def test_a_bad_upload_gets_a_message_not_a_traceback_and_loses_nothing(seeded: dict, fixture: str) -> None:
    pools_before = len(seeded["store"].list_pools())
    data = (REPO / "tests" / "fixtures" / "bad_inputs" / fixture).read_bytes()
    at = open_page("app_pages/data.py")
    at.file_uploader(key="data_upload").upload(fixture, data, "application/octet-stream").run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error).replace("\\", "")  # the page escapes markdown in messages
    assert fixture in shown or "column" in shown or "row" in shown, shown
    assert "Traceback" not in texts(at) and "PoolError" not in shown
    assert len(seeded["store"].list_pools()) == pools_before


# -- Compare ------------------------------------------------------------------------------------------------
def _chart_spec(at: AppTest, key: str) -> dict:
    """The plotly figure a chart element carries, as JSON."""
    chart = next(c for c in at.get("plotly_chart") if key in c.proto.id)
    return json.loads(chart.proto.spec)


def _start_method(at: AppTest, name: str) -> str:
    """Choose a method on the Compare page, start it and wait for its background job; returns its run id."""
    at.selectbox(key="compare_method").set_value(name).run()
    assert not at.exception, at.exception
    at.button(key="compare_start").click().run()
    assert not at.exception, at.exception
    run_id = at.session_state["compare_job"]
    jobs.wait(run_id, timeout=120)
    at.run()
    assert not at.exception, at.exception
    return run_id


def test_compare_page_asks_for_a_second_run_first(seeded: dict) -> None:
    at = open_page("app_pages/compare.py")
    assert "two or more finished runs" in texts(at)
    assert at.button(key="compare_start").label == "Run Random"


def test_compare_page_runs_a_method_and_compares_it_with_selectllm(seeded: dict) -> None:
    from selectllm_core.pipeline import selection_frame
    from selectllm_core.runs import compare

    store, selectllm = seeded["store"], seeded["run_id"]
    at = open_page("app_pages/compare.py")
    at.number_input(key="compare_budget").set_value(5)
    coreset = _start_method(at, "coreset")
    assert coreset.startswith("coreset-") and len(store.selection(coreset)) == 5
    assert any("5 rows selected" in e.value for e in at.success)
    chosen = at.multiselect(key="compare_runs").value
    assert set(chosen) == {selectllm, coreset}

    # the table shows what compare_runs computes on the same runs
    shown = at.dataframe[0].value
    want = compare.compare_runs(store, chosen, embedder=FakeEmbedder()).table
    assert shown["selected"].tolist() == want["selected"].tolist()
    assert np.allclose(shown["coverage_mean"], want["coverage_mean"])
    assert np.allclose(shown["entropy_bits"].fillna(-1), want["entropy_bits"].fillna(-1))
    assert shown["label"].iloc[0] == "whole pool (reference)"
    assert shown["run"].tolist()[1:] == chosen and shown["label"].tolist()[1:] == [
        {"run": "SelectLLM", "coreset": "k-center coreset"}[r.split("-")[0]] for r in chosen]

    # overlaid: one trace of picks per run, holding exactly that run's picks
    fig = _chart_spec(at, "compare_map")
    picks = {t["name"]: [d[0] for d in t["customdata"]] for t in fig["data"] if t.get("customdata")}
    assert len(picks) == 2
    for run_id, title in ((selectllm, "SelectLLM"), (coreset, "k-center coreset")):
        want_ids = selection_frame(store, run_id, which="all")["id"]
        assert sorted(picks[f"{title} ({len(want_ids)})"]) == sorted(want_ids)
    assert all(SCRIPT not in t.get("hovertext", [""])[0] for t in fig["data"] if t.get("hovertext"))

    # side by side: one panel per run on shared axes
    at.button_group(key="compare_map_mode").set_value("panels").run()
    assert not at.exception, at.exception
    layout = _chart_spec(at, "compare_map")["layout"]
    assert "xaxis2" in layout and len(layout["annotations"]) == 2

    # after review, "accepted only" compares what the curator kept
    accepted = store.selection(selectllm)["id"].iloc[:2].tolist()
    store.set_decisions(selectllm, {i: ("accepted", "") for i in accepted})
    at.button_group(key="compare_which").set_value("accepted").run()
    assert not at.exception, at.exception
    kept = at.dataframe[0].value.set_index("run")["selected"]
    assert [kept[selectllm], kept[coreset]] == [2, 0]
    assert any("No accepted picks yet in: k-center coreset" in i.value.replace("\\", "") for i in at.info), texts(at)
    store.set_decisions(selectllm, {accepted[0]: ("rejected", "")})  # a decision made elsewhere: recomputed
    at.run()
    kept = at.dataframe[0].value.set_index("run")["selected"]
    assert [kept[selectllm], kept[coreset]] == [1, 0]


def test_compare_page_says_alpagasus_rates_instructions_alone(seeded: dict) -> None:
    at = open_page("app_pages/compare.py")
    at.selectbox(key="compare_method").set_value("alpagasus").run()
    assert "each instruction is rated alone" in "\n".join(i.value for i in at.info)
    assert "asks" in texts(at) and "60 rows" in texts(at)


@pytest.mark.parametrize("name", [n for n, m in methods.METHODS.items() if m.run is None])
def test_compare_controls_are_the_registry_params_and_their_values_reach_the_run(seeded: dict, name: str) -> None:
    """Every parameter a method offers on the page is a registry Param, with its label and help, and nothing else."""
    method = methods.METHODS[name]
    at = open_page("app_pages/compare.py")
    at.selectbox(key="compare_method").set_value(name).run()
    assert not at.exception, at.exception
    prefix = f"compare_{name}_"
    shown = {w.key.removeprefix(prefix): w for kind in ("number_input", "slider", "radio", "selectbox", "checkbox",
                                                        "text_input") for w in at.get(kind)
             if (w.key or "").startswith(prefix)}
    assert set(shown) == {p.name for p in method.params if p.ui}
    for p in method.params:
        if p.ui:
            assert (shown[p.name].label, shown[p.name].help) == (p.title, p.help)


def test_a_value_set_on_the_compare_page_is_the_stored_parameter(seeded: dict) -> None:
    at = open_page("app_pages/compare.py")
    at.number_input(key="compare_budget").set_value(5)
    at.selectbox(key="compare_method").set_value("length").run()
    at.radio(key="compare_length_order").set_value("shortest").run()
    run_id = _start_method(at, "length")
    stored = seeded["store"].get_run(run_id)
    assert stored["params"]["order"] == "shortest"
    assert methods.repeat_command(stored) == "selectllm method length POOL --budget 5 --order shortest"


def test_a_method_the_backend_cannot_serve_shows_why(seeded: dict) -> None:
    """SelectIT needs token probabilities; the fake backend has none, so the page names the problem."""
    at = open_page("app_pages/compare.py")
    run_id = _start_method(at, "selectit")
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert "token probabilities" in errors, errors
    assert seeded["store"].get_run(run_id)["status"] == "interrupted"


def test_a_run_without_shuffling_is_started_from_select_and_its_bias_compared(seeded: dict) -> None:
    """The curator turns shuffling off for a second run; Compare then reports both runs' position bias."""
    store, first = seeded["store"], seeded["run_id"]
    at = open_page("app_pages/select.py")
    assert at.checkbox(key="select_shuffle").value is True
    at.checkbox(key="select_shuffle").uncheck().run()
    assert at.session_state["run_config"]["shuffle"] is False
    at.button(key="select_start").click().run()
    assert not at.exception, at.exception
    second = at.session_state["run_id"]
    assert second != first
    jobs.wait(second, timeout=60)
    assert store.get_run(second)["params"]["shuffle"] is False
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == 3, texts(at)
    bias = at.dataframe[2].value
    assert sorted(bias["shuffle"].tolist()) == [False, True]
