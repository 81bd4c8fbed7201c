"""The plain functions behind the pages: lasso -> row ids, editor edits -> decisions, labels, costs, jobs, maps."""

from __future__ import annotations

import gzip
import html
import json
import random
import re
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FakeEmbedder
from streamlit.util import ReadOnlyAttributeDictionary

from selectllm_core.embed import EmbeddingCache, projection
from selectllm_core.errors import BackendError, ConfigError
from selectllm_core.llm import ChatResult
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.select.prompts import PRESETS, load_template
from selectllm_core.store import Store
from selectllm_core.studio import clusters, jobs, map_view, prompt_view, review, run_view

DEMO = Path(__file__).resolve().parent.parent / "demo" / "dolly_demo.jsonl"


class PickFirst:
    """A fake chat backend: picks ids 1..k with a reason; records prompts; optional delay per call."""

    name = "fake"
    concurrency = 1

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.prompts: list[str] = []
        self.delay, self.fail = delay, fail
        self.gate = threading.Event()

    def describe(self) -> dict:
        return {"kind": "fake"}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages, *, json_schema=None, max_tokens=512, temperature=0.0):  # noqa: ANN001, ANN201
        if self.fail:
            raise BackendError("the fake server is down; start it again")
        self.gate.wait(self.delay)
        self.prompts.append(messages[0]["content"])
        k = int(re.search(r"exactly (\d+) picks", messages[0]["content"]).group(1))
        return ChatResult(json.dumps({"picks": [{"id": i, "reason": f"r{i}"} for i in range(1, k + 1)]}),
                          50, 10, "fake", 0.0)


@pytest.fixture
def pool():  # noqa: ANN201
    return load_pool(pd.read_json(DEMO, lines=True).head(40), name="slice")


# -- lasso / box selection ----------------------------------------------------------------------
def _map(n: int = 12) -> pd.DataFrame:
    coords = np.arange(2 * n, dtype=float).reshape(n, 2)
    pool = pd.DataFrame({"id": [f"row{i}" for i in range(n)], "instruction": [f"task {i}" for i in range(n)],
                         "input": [""] * n})
    return map_view.map_frame(pool, coords, np.arange(n) % 3, None)


def test_lasso_points_map_to_row_ids_through_customdata() -> None:
    frame = _map()
    fig = map_view.map_figure(frame, color_by="cluster")
    # plotly reports each point by trace and index *within the trace*; only customdata names the row
    picked = [(1, 0), (1, 2), (2, 1)]
    points = [{"curve_number": c, "point_index": i, "point_number": i, "x": 0, "y": 0,
               "customdata": list(fig.data[c].customdata[i])} for c, i in picked]
    event = ReadOnlyAttributeDictionary({"selection": ReadOnlyAttributeDictionary(
        {"points": points, "point_indices": [i for _, i in picked], "box": [], "lasso": [{"x": [], "y": []}]})})
    expected = [frame[frame["cluster"] == c]["id"].iloc[i] for c, i in picked]
    assert map_view.selected_ids(event) == expected == ["row1", "row7", "row5"]
    assert [frame["id"].iloc[i] for _, i in picked] != expected, "point indices alone would name other rows"


def test_selection_event_edge_cases() -> None:
    assert map_view.selected_ids(None) == []
    assert map_view.selected_ids({"selection": {"points": []}}) == []
    same = {"customdata": ["a"]}
    assert map_view.selected_ids({"selection": {"points": [same, same, {"customdata": "b"}]}}) == ["a", "b"]
    assert map_view.selected_ids({"points": [{"customdata": [7]}]}) == ["7"]


def test_state_colours_and_escaped_hover() -> None:
    sel = pd.DataFrame({"id": ["row1", "row2", "row3"], "decision": ["pending", "accepted", "rejected"]})
    assert map_view.row_states(["row0", "row1", "row2", "row3"], sel) == [
        "not picked", "picked", "accepted", "rejected"]
    hover = map_view.hover_text("<script>alert(1)</script> & <b>bold</b>", "x" * 200)
    assert "<script>" not in hover and "&lt;script&gt;" in hover and "&lt;b&gt;" in hover
    assert hover.count("<br>") >= 2
    fig = map_view.map_figure(map_view.map_frame(
        pd.DataFrame({"id": ["row1", "row2"], "instruction": ["a", "b"], "input": ["", ""]}),
        np.zeros((2, 2)), np.zeros(2), sel), color_by="state")
    assert [t.name for t in fig.data] == ["picked (1)", "accepted (1)"]
    assert all(t.type == "scattergl" for t in fig.data) and fig.layout.dragmode == "lasso"


def _textwrap_hover(instruction: str, input_: str = "", *, width: int = 70, max_lines: int = 8) -> str:
    """The hover label as textwrap alone makes it: what the faster hover_text must equal."""
    text = instruction if not input_ else f"{instruction}\n[input] {input_}"
    lines = [line for part in text.splitlines() for line in (textwrap.wrap(part, width) or [""])]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["…"]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def test_hover_labels_equal_textwrap_on_real_and_awkward_text(shared_data: Path) -> None:
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [(r["instruction"], r["input"]) for r in map(json.loads, handle)]
    assert sum(len(i) + len(x) > 1500 for i, x in rows) > 50, "long contexts take the prefix shortcut"
    rng = random.Random(0)
    pieces = ["a", "word", "longer", " ", " ", "  ", "\t", "-", "--", "well-known", "x" * 75, "\n", "\r\n", "é",
              "<b>", "&", "\u00a0", " \t "]
    rows += [("".join(rng.choice(pieces) for _ in range(rng.randint(0, 600))), rng.choice(["", "in-put  here"]))
             for _ in range(2_000)]
    for width, max_lines in ((70, 8), (12, 2), (30, 1)):
        assert [map_view.hover_text(i, x, width=width, max_lines=max_lines) for i, x in rows] == \
            [_textwrap_hover(i, x, width=width, max_lines=max_lines) for i, x in rows]


def _grid_map(n_clusters: int, per: int, cols: int) -> pd.DataFrame:
    """Clusters as blobs on a grid (cluster c at column c % cols, row c // cols); row 0 carries HTML."""
    rng = np.random.default_rng(0)
    cluster = np.repeat(np.arange(n_clusters), per)
    coords = np.stack([cluster % cols, cluster // cols], axis=1) + 0.12 * rng.normal(size=(len(cluster), 2))
    text = [f"task {i}" for i in range(len(cluster))]
    text[0] = "<img src=x onerror=alert(1)> tag"
    pool = pd.DataFrame({"id": [f"r{i}" for i in range(len(cluster))], "instruction": text, "input": ""})
    return map_view.map_frame(pool, coords, cluster, None)


def test_a_crowded_map_keeps_every_row_selectable_and_touching_clusters_apart() -> None:
    frame = _grid_map(80, 25, cols=10)
    fig = map_view.map_figure(frame, names={c: f"<b>{c}" for c in range(80)})
    ids = [row[0] for t in fig.data for row in t.customdata]
    assert sorted(ids) == sorted(frame["id"]) and all(t.type == "scattergl" for t in fig.data)
    hover = {row[0]: h for t in fig.data for row, h in zip(t.customdata, t.hovertext)}
    assert hover["r0"].startswith("&lt;img src=x")
    assert all("<b>" not in t.name for t in fig.data)
    assert not any(t.showlegend for t in fig.data), "80 clusters: no legend"
    assert sorted(int(a.text) for a in fig.layout.annotations) == list(range(80))
    color = {int(t.name.split(" ")[0]): t.marker.color for t in fig.data}
    touching = [(c, c + 1) for c in range(80) if c % 10 < 9] + [(c, c + 10) for c in range(70)]
    assert all(color[a] != color[b] for a, b in touching)
    few = map_view.map_figure(_grid_map(map_view.LEGEND_MAX, 5, cols=5))
    assert all(t.showlegend is not False for t in few.data) and not few.layout.annotations


# -- review -------------------------------------------------------------------------------------
def _shown() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c", "d"], "decision": ["pending", "pending", "accepted", "rejected"],
                         "note": ["", "", "keep", ""], "instruction": ["w", "x", "y", "z"]})


def test_editor_edits_become_decisions() -> None:
    edits = {0: {"decision": "accepted"}, "2": {"note": "keep, but fix the typo"}, 3: {"decision": "rejected"},
             1: {"note": None, "decision": "rejected"}}
    assert review.decisions_from_edits(_shown(), edits) == {
        "a": ("accepted", ""), "c": ("accepted", "keep, but fix the typo"), "b": ("rejected", "")}
    assert review.decisions_from_edits(_shown(), {}) == {}
    with pytest.raises(ValueError, match="unknown decision"):
        review.decisions_from_edits(_shown(), {0: {"decision": "maybe"}})


def test_editor_decisions_round_trip_through_the_store(pool) -> None:  # noqa: ANN001
    store = Store()
    result = run(pool, RunConfig(budget=4, subset_size=10), store=store, backend=PickFirst(),
                 embedder=FakeEmbedder(), cache=EmbeddingCache())
    shown = store.selection(result.run_id)
    store.set_decisions(result.run_id, review.decisions_from_edits(shown, {1: {"decision": "rejected",
                                                                                 "note": "off topic"}}))
    after = store.selection(result.run_id)
    assert after.loc[1, ["decision", "note"]].tolist() == ["rejected", "off topic"]
    assert (after.drop(index=1)["decision"] == "pending").all()
    store.set_decisions(result.run_id, review.bulk_decisions(after[after["decision"] == "pending"], "accepted"))
    counters = review.budget_counters(store.selection(result.run_id), 4)
    assert counters == {"budget": 4, "picked": 4, "accepted": 3, "rejected": 1, "pending": 0, "to_go": 1}


# -- clusters, prompts, costs -------------------------------------------------------------------
def test_cluster_labels_name_distinctive_terms_and_central_examples() -> None:
    code = [f"Write python code for a function that sorts list {i}" for i in range(6)]
    food = [f"Give a recipe to bake bread with flour number {i}" for i in range(6)]
    vectors = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6, dtype=np.float32)
    vectors[0] = [0.6, 0.8]  # an outlier of the code cluster: never its representative
    table = clusters.cluster_summary(code + food, np.array([0] * 6 + [1] * 6), vectors, n_examples=2)
    assert table["size"].tolist() == [6, 6]
    assert {"python", "code", "function"} & set(table.loc[0, "label"].split(", "))
    assert {"recipe", "bake", "bread", "flour"} & set(table.loc[1, "label"].split(", "))
    assert code[0] not in table.loc[0, "examples"] and len(table.loc[0, "examples"]) == 2


def test_subset_prompts_are_exactly_what_the_run_sends(pool) -> None:  # noqa: ANN001
    store, backend = Store(), PickFirst()
    result = run(pool, RunConfig(budget=4, subset_size=10), store=store, backend=backend, embedder=FakeEmbedder(),
                 cache=EmbeddingCache())
    plan = store.plan(result.run_id)
    subsets = [g["position"].tolist() for _, g in plan.groupby("subset", sort=True)]
    prompts = prompt_view.subset_prompts(pool.frame, subsets, plan["cluster"].to_numpy(),
                                      template=PRESETS["default"].template, k=1)
    assert prompts == backend.prompts and len(prompts) == 4
    cut = RunConfig(budget=4, subset_size=10, max_input_chars=40)
    backend.prompts.clear()
    cut_run = run(pool, cut, store=store, backend=backend, embedder=FakeEmbedder(), cache=EmbeddingCache(),
                  responses=False)  # every prompt reaches the backend, also those the first run asked already
    plan = store.plan(cut_run.run_id)
    subsets = [g["position"].tolist() for _, g in plan.groupby("subset", sort=True)]
    short = prompt_view.subset_prompts(pool.frame, subsets, plan["cluster"].to_numpy(), k=1, max_input_chars=40,
                                    template=PRESETS["default"].template)
    assert short == backend.prompts and sum(map(len, short)) < sum(map(len, prompts))


def test_spend_estimate_is_exact_only_with_a_tokenizer_and_prices_what_it_counts() -> None:
    from selectllm_core.llm.prices import Price
    from selectllm_core.select.spend import SubsetRequest, estimate_spend

    class Counter:
        name, concurrency = "fake", 1

        def __init__(self, exact: bool) -> None:
            self.exact = exact

        def describe(self) -> dict:
            return {"kind": "fake", "model": "m"}

        def count_tokens(self, text: str) -> int | None:
            return len(text.split()) if self.exact else None

    requests = [SubsetRequest(0, 2, [{"role": "user", "content": "one two three four"}], {}),
                SubsetRequest(1, 2, [{"role": "user", "content": "five six"}], {})]
    price = Price(1.0, 2.0, "test")
    exact = estimate_spend(requests, backend=Counter(True), price=price, answer_format="json", max_tokens=512)
    assert exact.prompt_exact and exact.prompt_tokens == 6 and exact.completion_tokens == 2 * (2 * 40 + 8)
    assert exact.cost == pytest.approx((6 * 1.0 + 176 * 2.0) / 1e6)
    assert exact.cost_bound == pytest.approx((6 * 1.0 + 2 * 512 * 2.0) / 1e6)
    remote = estimate_spend(requests[:1] + [SubsetRequest(1, 1, requests[1].messages, {})], backend=Counter(False),
                            price=None, answer_format="ids", max_tokens=512)
    assert not remote.prompt_exact and remote.prompt_tokens == 4 + 2 and remote.completion_tokens == 8 + 5
    assert remote.cost is None and "unknown" in remote.lines()[-1]


def test_custom_templates_are_saved_presets_are_named(tmp_path: Path) -> None:
    assert prompt_view.template_ref(PRESETS["paper"].template, folder=tmp_path) == "paper"
    custom = PRESETS["default"].template + "\nPrefer questions about {domain}."
    ref = prompt_view.template_ref(custom, folder=tmp_path / "t")
    assert load_template(ref) == (custom, "json")
    assert prompt_view.template_ref(custom, folder=tmp_path / "t") == ref


def test_subset_table_aligns_picks_and_reasons(pool) -> None:  # noqa: ANN001
    by_id = pool.frame.set_index("id")
    members = by_id.index[:5].tolist()
    table = run_view.subset_table({"members": members, "picks": [members[3], members[1]],
                                   "reasons": {members[3]: "rich context"}}, by_id)
    assert table["pick"].fillna(0).tolist() == [0, 2, 0, 1, 0]
    assert table["reason"].tolist() == ["", "", "", "rich context", ""]
    assert table["instruction"].tolist() == by_id.loc[members, "instruction"].tolist()


# -- background runs ----------------------------------------------------------------------------
def test_a_second_start_is_a_no_op_and_progress_comes_from_the_store(pool) -> None:  # noqa: ANN001
    store = Store()
    store.save_pool(pool)
    backend = PickFirst(delay=30)  # each call waits for the gate, so the run is surely still going
    config = RunConfig(budget=4, subset_size=10)
    first = jobs.start_run(workspace=store.path, pool_id=pool.pool_id, config=config, backend=backend,
                           embedder=FakeEmbedder(), cache_root=None)
    second = jobs.start_run(workspace=store.path, pool_id=pool.pool_id, config=config, backend=backend,
                            embedder=FakeEmbedder(), cache_root=None)
    assert second is first and jobs.is_running(first.run_id)
    backend.gate.set()
    jobs.wait(first.run_id, timeout=60)
    assert first.error is None and first.summary["selected"] == 4
    progress = run_view.run_progress(Store(store.path), first.run_id)
    assert (progress.done, progress.total, progress.status) == (4, 4, "complete")
    assert store.count_calls(first.run_id) == 4, "the second start made no calls of its own"


def test_a_failing_run_reports_its_error_to_the_page(pool) -> None:  # noqa: ANN001
    store = Store()
    store.save_pool(pool)
    job = jobs.start_run(workspace=store.path, pool_id=pool.pool_id, config=RunConfig(budget=4, subset_size=10),
                         backend=PickFirst(fail=True), embedder=FakeEmbedder())
    jobs.wait(job.run_id, timeout=60)
    assert not job.running and "fake server is down" in job.error and job.stage == "failed"
    assert run_view.run_progress(store, job.run_id).status == "interrupted"


def test_a_background_run_never_writes_the_api_key(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    from selectllm_core.llm import OpenAICompatibleBackend
    from selectllm_core.pipeline import export_run

    def create(*, model, messages, **kwargs):  # noqa: ANN001, ANN003, ANN202 - the openai client's shape
        answer = json.dumps({"picks": [{"id": 2, "reason": "clear"}]})
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=answer))], model=model,
                               usage=SimpleNamespace(prompt_tokens=10, completion_tokens=5))

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    client.with_options = lambda **_kw: client
    secret = "sk-test-do-not-store-9f8e7d"
    backend = OpenAICompatibleBackend(model="gpt-test", base_url="http://127.0.0.1:9/v1", api_key=secret,
                                      client=client)
    store = Store()
    store.save_pool(pool)
    job = jobs.start_run(workspace=store.path, pool_id=pool.pool_id, config=RunConfig(budget=4, subset_size=10),
                         backend=backend, embedder=FakeEmbedder())
    jobs.wait(job.run_id, timeout=60)
    assert job.error is None and job.summary["selected"] == 4
    export_run(store, job.run_id, tmp_path / "out", fmt="csv")
    store.close()
    files = [f for f in [*store.path.parent.rglob("*"), *(tmp_path / "out").rglob("*")] if f.is_file()]
    assert files and all(secret.encode() not in f.read_bytes() for f in files)


# -- projection ---------------------------------------------------------------------------------
def test_projection_is_cached_by_model_pool_and_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = FakeEmbedder().encode([f"text {i}" for i in range(30)])
    pca = projection.ProjectionParams(method="pca")
    first = projection.compute_projection(vectors, model_id="m", pool_id="p", params=pca, cache_root=tmp_path)
    assert first.shape == (30, 2)
    monkeypatch.setattr(projection, "_run_pca", lambda *a: pytest.fail("recomputed instead of read from the cache"))
    again = projection.compute_projection(vectors, model_id="m", pool_id="p", params=pca, cache_root=tmp_path)
    assert np.array_equal(first, again)
    assert projection.cached_projection(model_id="m", pool_id="other", n_rows=30, params=pca,
                                        cache_root=tmp_path) is None
    assert projection.cached_projection(model_id="m", pool_id="p", n_rows=30, cache_root=tmp_path) is None, \
        "a PCA layout is never served as UMAP"
    with pytest.raises(ConfigError, match="choose one of"):
        projection.compute_projection(vectors, model_id="m", pool_id="p", cache_root=tmp_path,
                                      params=projection.ProjectionParams(method="tsne"))
    with pytest.raises(ConfigError, match="at least"):
        projection.compute_projection(vectors[:3], model_id="m", pool_id="q", params=pca, cache_root=tmp_path)


def test_a_stored_layout_is_read_back_under_its_key(tmp_path: Path) -> None:
    coords = np.arange(20, dtype=np.float64).reshape(10, 2)
    stored = projection.store_projection(coords, model_id="m", pool_id="p", cache_root=tmp_path)
    assert stored.dtype == np.float32
    assert np.array_equal(projection.cached_projection(model_id="m", pool_id="p", n_rows=10, cache_root=tmp_path),
                          coords)
    assert projection.cached_projection(model_id="m", pool_id="p", n_rows=11, cache_root=tmp_path) is None
    with pytest.raises(ConfigError, match="two columns"):
        projection.store_projection(coords.ravel(), model_id="m", pool_id="p", cache_root=tmp_path)


@pytest.mark.slow
def test_umap_projection_separates_clusters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 32))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(40, 32)) for c in centers]).astype(np.float32)
    coords = projection.compute_projection(vectors, model_id="m", pool_id="p", cache_root=tmp_path)
    labels = np.repeat(np.arange(3), 40)
    means = np.array([coords[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(coords[labels == c] - means[c], axis=1).mean() for c in range(3))
    gaps = min(np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3))
    assert gaps > 3 * spread


def test_two_threads_storing_one_layout_at_once_both_succeed(tmp_path: Path) -> None:
    """Two sessions building a pool's first map together write the same cache file: neither may fail."""
    from concurrent.futures import ThreadPoolExecutor

    coords = [np.full((500, 2), float(i), dtype=np.float32) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: projection.store_projection(c, model_id="m", pool_id="p", cache_root=tmp_path),
                      coords))
    got = projection.cached_projection(model_id="m", pool_id="p", n_rows=500, cache_root=tmp_path)
    assert got is not None and len(np.unique(got)) == 1, "one writer's whole layout, never a mix"
    assert len(list((tmp_path / "projections").iterdir())) == 1, "no temporary file is left behind"


@pytest.mark.parametrize(("decisions", "budget", "want"), [
    (["accepted"] * 10, 10, "10 of 10 accepted: the budget is filled."),
    (["accepted"] * 4 + ["pending"] * 6, 10, "4 of 10 accepted; 6 more needed, from 6 picks still to review."),
    (["accepted"] * 9 + ["rejected"], 10, "9 of 10 accepted; 1 more needed to fill the budget, but no picks are "
                                          "left to review."),
    (["accepted"] * 7 + ["rejected"] * 2 + ["pending"], 10, "7 of 10 accepted; 3 more needed to fill the budget, "
                                                             "but only 1 pick is left to review."),
])
def test_the_budget_message_says_what_is_left(decisions: list[str], budget: int, want: str) -> None:
    counters = review.budget_counters(pd.DataFrame({"decision": decisions}), budget)
    assert review.budget_message(counters).startswith(want)


def test_cluster_summary_says_why_no_word_labels_a_cluster() -> None:
    """No word occurs twice (the vectoriser finds no vocabulary): every label is empty and the note says why."""
    texts = ["Translate bonjour", "Summarise photosynthesis", "Compose a limerick", "Explain gravity"]
    vectors = np.eye(4, dtype=np.float32)
    table = clusters.cluster_summary(texts, np.array([0, 0, 1, 1]), vectors)
    assert table["label"].tolist() == ["", ""]
    note = table.attrs["note"]
    assert note.startswith("No distinctive terms for 2 cluster(s):"), note
    assert "at least two" in note and "representative instructions" in note
    assert all(len(e) == 2 for e in table["examples"]), "examples still describe each cluster"


def test_cluster_summary_names_the_clusters_left_without_terms() -> None:
    """Two clusters with shared words get labels; a third whose words occur nowhere else is named in the note."""
    code = [f"Write python code for a function that sorts list {w}" for w in ("alpha", "beta", "gamma", "delta")]
    food = [f"Give a recipe to bake bread with flour and {w}" for w in ("salt", "yeast", "honey", "butter")]
    odd = ["Zebra quokka", "Narwhal axolotl", "Okapi pangolin", "Tapir dugong"]
    vectors = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    table = clusters.cluster_summary(code + food + odd, np.repeat([0, 1, 2], 4), vectors)
    assert table.loc[0, "label"] and table.loc[1, "label"] and table.loc[2, "label"] == ""
    note = table.attrs["note"]
    assert note.startswith("No distinctive terms for 1 cluster(s) (cluster 2):"), note
    assert "representative instructions" in note


def test_cluster_summary_has_no_note_when_every_cluster_has_terms() -> None:
    code = [f"Write python code for a function that sorts list {i}" for i in range(4)]
    food = [f"Give a recipe to bake bread with flour number {i}" for i in range(4)]
    table = clusters.cluster_summary(code + food, np.repeat([0, 1], 4), np.repeat(np.eye(2), 4, axis=0))
    assert all(table["label"]) and table.attrs["note"] == ""


# -- the studio package -------------------------------------------------------------------------
def test_no_studio_module_imports_streamlit() -> None:
    """The pages' logic stays callable without a Streamlit runtime: only app.py and app_pages/ import it."""
    import ast

    folder = Path(__file__).resolve().parent.parent / "selectllm_core" / "studio"
    modules = sorted(folder.glob("*.py"))
    assert {"map_view.py", "review.py", "compare_view.py"} <= {m.name for m in modules}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{module.name} imports streamlit"


# -- review: edits made over a stale table ------------------------------------------------------
def test_stale_rows_are_those_changed_to_something_neither_seen_nor_chosen() -> None:
    seen = {"a": ("pending", ""), "b": ("pending", ""), "c": ("accepted", "ok"), "d": ("pending", "")}
    edits = {"a": ("accepted", ""), "b": ("rejected", "off topic"), "c": ("rejected", "ok"), "d": ("accepted", "")}
    now = {"a": ("pending", ""),            # unchanged since shown: saved
           "b": ("rejected", "off topic"),  # another session made the same decision: not a conflict
           "c": ("accepted", "typo fixed"),  # another session changed the note: kept
           "d": ("rejected", "")}           # another session rejected it: kept
    assert review.stale_rows(edits, seen, now) == ["c", "d"]
    assert review.stale_rows({}, seen, now) == []


def _reviewed(pool) -> tuple[Store, str, pd.DataFrame]:  # noqa: ANN001
    store = Store()
    result = run(pool, RunConfig(budget=4, subset_size=10), store=store, backend=PickFirst(),
                 embedder=FakeEmbedder(), cache=EmbeddingCache())
    return store, result.run_id, store.selection(result.run_id)


def test_an_edit_over_a_decision_made_elsewhere_is_not_saved_but_reported(pool) -> None:  # noqa: ANN001
    store, run_id, shown = _reviewed(pool)
    a, b = shown["id"].iloc[0], shown["id"].iloc[1]
    seen = {a: ("pending", ""), b: ("pending", "")}
    other = Store(store.path)  # a second browser session on the same workspace
    other.set_decisions(run_id, {a: ("accepted", "clear task")})
    skipped = review.save_edits(store, run_id, {a: ("rejected", ""), b: ("rejected", "vague")}, seen)
    assert skipped == [(a, "accepted", "clear task")]
    after = store.selection(run_id).set_index("id")
    assert after.loc[a, ["decision", "note"]].tolist() == ["accepted", "clear task"], "the other session's stays"
    assert after.loc[b, ["decision", "note"]].tolist() == ["rejected", "vague"]
    assert review.save_edits(store, run_id, {a: ("rejected", "")}, {a: ("accepted", "clear task")}) == []
    assert store.selection(run_id).set_index("id").loc[a, "decision"] == "rejected", "decided again: saved"


def test_a_bulk_decision_keeps_latest_notes_and_leaves_picks_decided_elsewhere(pool) -> None:  # noqa: ANN001
    store, run_id, shown = _reviewed(pool)
    drawn = dict(zip(shown["id"], zip(shown["decision"], shown["note"])))  # all pending, as the page drew them
    a, b = shown["id"].iloc[0], shown["id"].iloc[1]
    other = Store(store.path)
    other.set_decisions(run_id, {a: ("rejected", "duplicate"), b: ("pending", "check the date")})
    skipped = review.save_edits(store, run_id, *review.bulk_edits(store, run_id, drawn, "accepted"))
    assert skipped == [(a, "rejected", "duplicate")]
    after = store.selection(run_id).set_index("id")
    assert after.loc[a, ["decision", "note"]].tolist() == ["rejected", "duplicate"]
    assert after.loc[b, ["decision", "note"]].tolist() == ["accepted", "check the date"], "its latest note kept"
    assert set(after.drop(index=[a, b])["decision"]) == {"accepted"}


def test_the_stale_message_names_the_pick_and_its_current_decision() -> None:
    long = "Explain why the sky is blue " * 10
    message = review.stale_message(long, "accepted", "clear")
    assert message.startswith("Not saved: another session changed this pick") and "(now accepted, note: clear)" in message
    assert '"Explain why the sky is blue' in message and len(message) < len(long) + 200, "the instruction is cut"
    assert "note" not in review.stale_message("Sum 2 and 3", "rejected", "").split(")")[0]


def test_review_filters_keep_every_pick_when_nothing_is_chosen() -> None:
    picks = pd.DataFrame({"id": list("abcd"), "cluster": [0, 0, 1, 2],
                          "decision": ["pending", "accepted", "pending", "rejected"]})
    assert review.filter_picks(picks, [], [])["id"].tolist() == list("abcd")
    assert review.filter_picks(picks, [0, 2], [])["id"].tolist() == ["a", "b", "d"]
    assert review.filter_picks(picks, [], ["pending"])["id"].tolist() == ["a", "c"]
    assert review.filter_picks(picks, [0], ["rejected"]).empty


# -- the map's build ----------------------------------------------------------------------------
class LengthSpy(FakeEmbedder):
    """FakeEmbedder that records the texts of each encode call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def encode(self, texts):  # noqa: ANN001, ANN201
        self.batches.append(list(texts))
        return super().encode(texts)


def test_the_map_build_embeds_splits_and_lays_out_the_pool_in_pool_order(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.split import make_subsets, plan_budget
    from selectllm_core.studio import map_build

    config, budget = RunConfig(budget=4, subset_size=10, seed=3), plan_budget(len(pool.frame), 4, subset_size=10)
    spy, steps, embedded = LengthSpy(), [], []
    build = map_build.build_map(pool, config, budget=budget, embedder=spy, cache=EmbeddingCache(tmp_path / "c"),
                                layout="pca", projection_root=tmp_path / "p", on_step=lambda *s: steps.append(s),
                                on_embed=lambda d, t: embedded.append((d, t)))
    texts = pool.frame["text"].tolist()
    assert np.array_equal(build.vectors, FakeEmbedder().encode(texts)), "vectors come back in pool order"
    sent = [t for batch in spy.batches for t in batch]
    assert sorted(sent) == sorted(texts) and [len(t) for t in sent] == sorted(map(len, texts), reverse=True), \
        "embedded longest first (embed_texts sorts; the page need not)"
    want = make_subsets(FakeEmbedder().encode(texts), budget, strategy="diverse", random_state=3)
    assert build.plan.subsets == want.subsets and np.array_equal(build.plan.cluster_of, want.cluster_of)
    assert build.coords.shape == (len(texts), 2) and embedded[-1] == (len(texts), len(texts))
    assert [s for s, _ in steps][:3] == ["embedded", "clustering", "layout"]
    assert steps[0][1] == f"Embedded {len(texts)} rows with fake-embedder" and "PCA" in steps[2][1]
    assert list(build.seconds) == ["embedding", "clustering", "layout"]
    assert re.fullmatch(r"embedding \d+ s, clustering \d+ s, layout \d+ s", build.timing)
    steps.clear()
    calls = len(spy.batches)
    again = map_build.build_map(pool, config, budget=budget, embedder=spy, cache=EmbeddingCache(tmp_path / "c"),
                                layout="pca", projection_root=tmp_path / "p", on_step=lambda *s: steps.append(s))
    assert np.array_equal(again.coords, build.coords) and len(spy.batches) == calls, "every vector from the cache"
    assert [s for s, _ in steps] == ["embedded", "clustering"], "a cached layout is not announced"
    key = map_build.build_key(pool, "fake-embedder", budget, config, layout="pca")
    assert key != map_build.build_key(pool, "fake-embedder", budget, config, layout="umap")


def test_the_map_build_plans_with_the_backend_when_given_no_plan(pool, tmp_path: Path) -> None:  # noqa: ANN001
    from selectllm_core.pipeline import plan
    from selectllm_core.studio import map_build

    config = RunConfig(budget=4, subset_size=10)
    build = map_build.build_map(pool, config, backend=PickFirst(), embedder=FakeEmbedder(), layout="pca",
                                cache=EmbeddingCache(tmp_path / "c"), projection_root=tmp_path / "p")
    assert build.plan.budget_plan == plan(pool, config, backend=PickFirst())
    with pytest.raises(ConfigError):
        map_build.build_map(pool, RunConfig(budget=len(pool.frame) + 5), backend=PickFirst(), embedder=FakeEmbedder())


# -- settings, runs, downloads, compare ----------------------------------------------------------
def test_a_stored_run_becomes_the_current_settings(tmp_path: Path) -> None:
    from selectllm_core.studio import settings

    plan, prompt = settings.default_settings(600)
    assert plan["budget"] == 60 and prompt["preset"] == "default" and set(settings.PLAN_FIELDS) == set(plan)
    run_ = {"params": {"budget": 9, "subset_size": 12, "split": "similar", "prompt": "paper", "domain": "law"},
            "prompt": PRESETS["paper"].template, "backend": {"kind": "openai", "model": "m", "base_url": "http://x/v1"}}
    plan2, prompt2, backend = settings.run_settings(run_, plan, {**prompt, "price_per_1k": 0.5})
    assert (plan2["budget"], plan2["subset_size"], plan2["split"], plan2["seed"]) == (9, 12, "similar", 0)
    assert prompt2 == {"preset": "paper", "template": PRESETS["paper"].template, "domain": "law", "price_per_1k": 0.5}
    assert backend == {"kind": "openai", "model": "m", "base_url": "http://x/v1"}
    custom = {**run_, "params": {"prompt": "/elsewhere/t.txt"}, "prompt": "Pick {k} of {candidates}",
              "backend": {"kind": "local"}}
    assert settings.run_settings(custom, plan, prompt)[1]["preset"] == "custom"
    assert settings.run_settings(custom, plan, prompt)[2] is None, "a local run keeps the current backend"
    config = settings.run_config(plan, {**prompt, "template": "Pick {k} of {candidates}"},
                                 workspace=tmp_path / "ws.sqlite")
    assert Path(config.prompt).parent == tmp_path / "ws.sqlite.templates" and config.budget == 60
    assert settings.run_config(plan, prompt, workspace=tmp_path / "ws.sqlite").prompt == "default"


def test_progress_of_an_unrecorded_run_is_none_but_other_workspace_errors_are_raised() -> None:
    from selectllm_core.errors import WorkspaceError

    assert run_view.run_progress(Store(), "run-not-yet") is None

    class Damaged:
        def get_run(self, run_id: str) -> dict:
            raise WorkspaceError("The workspace is damaged: database disk image is malformed.")

    with pytest.raises(WorkspaceError, match="damaged"):
        run_view.run_progress(Damaged(), "run-1")
    text = run_view.RunProgress(total=6, done=6, counts={"ok": 5, "failed": 1}, status="incomplete").text
    assert text == "6 / 6 subsets answered (1 failed, 5 ok) · finished, some subsets failed"


def test_the_export_page_names_its_choices_and_the_cli_command() -> None:
    from selectllm_core.studio import download

    picks = pd.DataFrame({"decision": ["accepted", "rejected", "pending", "accepted"]})
    assert download.row_choices(picks) == {"accepted": "Accepted picks (2)", "selected": "Every pick not rejected (3)",
                                           "all": "All picks, with their decisions (4)"}
    assert download.cli_command("run-1", fmt="csv", which="accepted", batch_size=0) == \
        "selectllm export run-1 --out DIR --format csv --which accepted"
    assert download.cli_command("run-1", fmt="jsonl", which="all", batch_size=50).endswith("--batch-size 50")
    file = download.ExportFile("a.csv", b"", "text/csv", "m.json", b"")
    assert file.kind("csv") == "CSV" and file.kind("labelstudio") == "Label Studio"
    assert download.ExportFile("b.zip", b"", "application/zip", "m.json", b"").kind("csv") == "zip of batches"


def test_prompt_presets_are_recognised_by_their_text() -> None:
    assert prompt_view.preset_name(PRESETS["paper"].template) == "paper"
    assert prompt_view.preset_name(PRESETS["paper"].template + " ") == "custom"


def test_compare_defaults_to_the_newest_run_of_each_method_and_labels_the_table() -> None:
    from selectllm_core.studio import compare_view

    runs = pd.DataFrame({"run_id": ["s1", "r1", "s2", "c1", "r2"],
                         "method": ["selectllm", "random", "selectllm", "coreset", "random"]})
    assert compare_view.default_runs(runs) == ["r2", "c1", "s2"]
    assert compare_view.default_runs(runs[runs["method"] == "random"]) == ["r2", "r1"], "at least two"
    table = pd.DataFrame({"run": ["", "s2", "r2"], "method": ["", "selectllm", "random"], "selected": [60, 4, 0]})
    labels = {"s2": "SelectLLM", "r2": "Random"}
    shown = compare_view.measures_table(table, labels)
    assert shown["label"].tolist() == ["whole pool (reference)", "SelectLLM", "Random"]
    assert "method" not in shown and shown["run"].tolist() == ["", "s2", "r2"] and "method" in table
    assert compare_view.empty_note(table, labels, "accepted").startswith("No accepted picks yet in: Random,")
    assert compare_view.empty_note(table.assign(selected=[60, 4, 1]), labels, "all") == ""
    first = {"s2": pd.DataFrame({"id": ["a"], "decision": ["pending"]})}
    changed = {"s2": pd.DataFrame({"id": ["a"], "decision": ["accepted"]})}
    assert compare_view.selections_key(first) != compare_view.selections_key(changed)
    summary = {"selected": 8, "short_by": 2, "flags": "2 rows unrated"}
    assert compare_view.job_message("alpagasus-1", summary).startswith(
        "alpagasus-1: 8 rows selected; 2 short of the budget: 2 rows unrated. It is now in the comparison")
