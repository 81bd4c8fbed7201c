"""Comparing runs: each measure on a hand-checked example, then real runs on a real pool side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from selectllm_core import methods
from selectllm_core.errors import ConfigError
from selectllm_core.pipeline import RunConfig
from selectllm_core.pipeline import run as run_selectllm
from selectllm_core.pool.load import load_pool
from selectllm_core.runs import compare
from selectllm_core.store import Store
from tests.fakes import ScriptedBackend
from tests.test_methods import dolly_frame


def unit(degrees: list[float]) -> np.ndarray:
    a = np.radians(degrees)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_jaccard() -> None:
    assert compare.jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(2 / 4)
    assert compare.jaccard({1}, {2}) == 0.0 and compare.jaccard(set(), set()) == 1.0


def test_coverage_on_a_hand_checked_example() -> None:
    x = unit([0, 60, 90])
    # picks {0 deg}: distances 1 - cos = 0, 0.5, 1 -> mean 0.5, max 1
    assert compare.coverage(x, np.array([0])) == pytest.approx((0.5, 1.0))
    # picks {0, 90 deg}: the 60 degree row is nearest to 90: 1 - cos 30 = 0.133975 -> mean 0.044658, max 0.133975
    assert compare.coverage(x, np.array([0, 2])) == pytest.approx((0.044658, 0.133975), abs=1e-6)
    assert all(math.isnan(v) for v in compare.coverage(x, np.array([], dtype=int)))


def test_cluster_entropy_on_a_hand_checked_example() -> None:
    # two clusters, two picks each: 1 bit, evenness 1
    assert compare.cluster_entropy(np.array([0, 0, 1, 1]), 2) == pytest.approx((1.0, 1.0))
    # p = (3/4, 1/4) over 4 clusters: 0.75 * 0.415037 + 0.25 * 2 = 0.811278 bits; / log2(4) = 0.405639
    assert compare.cluster_entropy(np.array([0, 0, 0, 1]), 4) == pytest.approx((0.811278, 0.405639), abs=1e-6)


def test_length_stats() -> None:
    # p90 by linear interpolation at rank 0.9 * 4 = 3.6: 4 + 0.6 * (10 - 4) = 7.6
    assert compare.length_stats(np.array([1, 2, 3, 4, 10])) == pytest.approx((4.0, 3.0, 7.6))


def test_position_bias_counts_against_uniform_with_uneven_subsets() -> None:
    results = [{"status": "ok", "members": list("abcd"), "picks": ["a"]} for _ in range(8)]
    b = compare.position_bias(results)
    # observed [8, 0, 0, 0], expected [2, 2, 2, 2]: chi2 = (36 + 4 + 4 + 4) / 2 = 24 with 3 degrees of freedom
    assert b["observed"].tolist() == [8, 0, 0, 0] and b["expected"].tolist() == [2, 2, 2, 2]
    assert b["chi2"] == pytest.approx(24.0) and b["p_value"] == pytest.approx(2.5e-5, rel=0.02)
    uneven = [{"status": "ok", "members": list("abcd"), "picks": ["b"]},
              {"status": "ok", "members": list("efgh"), "picks": ["h"]},
              {"status": "ok", "members": list("ijk"), "picks": ["k"]},
              {"status": "failed", "members": list("lmn"), "picks": []}]
    b = compare.position_bias(uneven)
    # positions 1-3: 1/4 + 1/4 + 1/3 each; position 4 only in the two subsets of four: 1/2. Totals match (3).
    assert b["expected"] == pytest.approx([5 / 6, 5 / 6, 5 / 6, 0.5]) and b["observed"].tolist() == [0, 1, 1, 1]
    assert b["subsets"] == 3 and b["picks"] == 3


@pytest.fixture(scope="module")
def runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real 300-row pool with random, coreset and length runs, and SelectLLM runs with and without shuffling."""
    from tests.conftest import FakeEmbedder

    root = tmp_path_factory.mktemp("compare")
    store, embedder = Store(root / "ws.sqlite"), FakeEmbedder()
    pool = load_pool(dolly_frame(shared_data), name="dolly-300")
    cache = methods.base.EmbeddingCache(root / "cache")
    store.set_price(ScriptedBackend().label, 1.0, 2.0)  # $1 per million prompt tokens, $2 per million answer tokens
    ids = {name: methods.run_method(name, pool, budget=15, store=store, embedder=embedder, cache=cache).run_id
           for name in ("coreset",)}
    ids |= {name: methods.run_method(name, pool, budget=15, store=store).run_id for name in ("random", "length")}
    for shuffle in (True, False):
        res = run_selectllm(pool, RunConfig(budget=15, subset_size=20, shuffle=shuffle), store=store,
                            backend=ScriptedBackend(), embedder=embedder, cache=cache, responses=False)
        ids[f"selectllm-{shuffle}"] = res.run_id
    return {"store": store, "ids": ids, "pool": pool, "embedder": embedder, "cache": cache, "root": root}


def test_compare_real_runs_side_by_side(runs: dict) -> None:
    ids = runs["ids"]
    order = [ids["random"], ids["coreset"], ids["length"], ids["selectllm-True"], ids["selectllm-False"]]
    c = compare.compare_runs(runs["store"], order, embedder=runs["embedder"], cache=runs["cache"])
    table = c.table.set_index("run")
    assert table.index.tolist() == ["(pool)", *order] and (table.loc[order, "selected"] == 15).all()
    # coverage: farthest-first spreads picks, so its worst-covered row is closer than random's
    assert table.loc[ids["coreset"], "coverage_max"] < table.loc[ids["random"], "coverage_max"]
    assert table.loc[ids["length"], "len_mean"] > table.loc["(pool)", "len_p90"]
    # the diverse plan's 20 clusters, shared by every run; SelectLLM took one row per subset
    assert c.cluster_source.startswith(f"plan of run {ids['selectllm-True']}") and "(20 clusters)" in c.cluster_source
    llm = table.loc[ids["selectllm-True"]]
    usage = runs["store"].usage(ids["selectllm-True"])
    # the money is the ledger's: every call was sent (no response cache) at the workspace's price for the model
    assert llm["llm_calls"] == 15 and usage["sent"] == 15 and usage["prompt_tokens"] > 0
    assert llm["cost"] == pytest.approx((usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6)
    assert table.loc[ids["random"], "llm_calls"] == 0
    assert np.allclose(np.diag(c.overlap), 1.0) and np.allclose(c.overlap, c.overlap.T)
    # the scripted model always answers [1]: every pick sits at shown position 1, far from uniform
    bias = c.position_bias.set_index("run")
    assert bias.loc[ids["selectllm-True"], "shuffle"] and not bias.loc[ids["selectllm-False"], "shuffle"]
    assert (bias["top_position"] == 1).all() and (bias["p_value"] < 1e-6).all()
    counts = c.position_counts[ids["selectllm-False"]]
    assert counts["observed"].sum() == 15 and counts["expected"].sum() == pytest.approx(15)
    text = compare.to_markdown(c)
    assert "### Position bias" in text and "| (pool) |" in text and "15 (0.8)" in text


def test_compare_refuses_one_run_or_two_pools(runs: dict, shared_data: Path) -> None:
    store = runs["store"]
    with pytest.raises(ConfigError, match="two or more"):
        compare.compare_runs(store, [runs["ids"]["random"]] * 2)
    other = methods.run_method("random", load_pool(dolly_frame(shared_data, 50)), budget=5, store=store)
    with pytest.raises(ConfigError, match="different pools"):
        compare.compare_runs(store, [runs["ids"]["random"], other.run_id])


def test_cli_compare_prints_the_table(runs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from selectllm_core.cli import main
    from selectllm_core.cli import methods as cli_methods
    from tests.conftest import FakeEmbedder

    monkeypatch.setattr(cli_methods, "embedder_for", lambda _model=None: FakeEmbedder())
    monkeypatch.setenv("SELECTLLM_CACHE_DIR", str(runs["root"] / "cache"))
    args = ["compare", runs["ids"]["random"], runs["ids"]["length"], "-w", str(runs["root"] / "ws.sqlite"),
            "--clusters", "kmeans", "--n-clusters", "10"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "coverage_mean" in res.output and "equal-size k-means of the pool (10 clusters" in res.output
    as_json = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    assert [r["run"] for r in as_json["table"]] == ["(pool)", runs["ids"]["random"], runs["ids"]["length"]]


def test_run_labels_are_the_title_then_the_setting_then_the_id() -> None:
    from selectllm_core.studio.compare_view import run_labels

    runs = {"run-aaaa1111": {"method": "selectllm"}, "random-bbbb2222": {"method": "random"},
            "random-cccc3333": {"method": "random"}, "coreset-dddd4444": {"method": "coreset"},
            "coreset-eeee5555": {"method": "coreset"}}
    settings = {"run-aaaa1111": "split=diverse", "random-bbbb2222": "seed=0", "random-cccc3333": "seed=1",
                "coreset-dddd4444": "seed=0", "coreset-eeee5555": "seed=0"}
    labels = run_labels(runs, settings, {"selectllm": "SelectLLM", "coreset": "k-center coreset"})
    assert labels == {"run-aaaa1111": "SelectLLM", "random-bbbb2222": "random (seed=0)",
                      "random-cccc3333": "random (seed=1)", "coreset-dddd4444": "k-center coreset …4444",
                      "coreset-eeee5555": "k-center coreset …5555"}


def test_map_layers_hold_each_runs_picks_with_escaped_text() -> None:
    from selectllm_core.studio.compare_view import Layer, layer_ids, map_points, overlay_figure, panels_figure

    pool = pd.DataFrame({"id": ["a", "b", "c", "d"], "instruction": ["A", "B", "<b>C", "D"],
                         "input": ["", "", "", "in"]})
    frame = map_points(pool, np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]]))
    picks = pd.DataFrame({"id": ["c", "a"], "rank": [1, 2], "score": [float("nan"), 2.5],
                          "reason": ["<script>x</script> clear", ""]})
    other = pd.DataFrame({"id": ["d"], "rank": [1], "score": [None], "reason": [None]})
    layers = [Layer("SelectLLM", picks), Layer("<i>random</i>", other)]
    fig = overlay_figure(frame, layers)
    assert layer_ids(fig) == {"SelectLLM (2)": ["c", "a"], "&lt;i&gt;random&lt;/i&gt; (1)": ["d"]}
    assert fig.data[0].name == "pool (4)" and len(fig.data[0].x) == 4
    hover = fig.data[1].hovertext
    assert "rank 1" in hover[0] and "&lt;b&gt;C" in hover[0] and "&lt;script&gt;" in hover[0]
    assert "<script>" not in hover[0] and "<b>C" not in hover[0]
    assert "score 2.5" in hover[1] and "reason" not in hover[1]
    panels = panels_figure(frame, layers, columns=2)
    assert [a.text for a in panels.layout.annotations] == ["SelectLLM: 2 picks", "&lt;i&gt;random&lt;/i&gt;: 1 picks"]
    assert panels.data[3].xaxis == "x2" and layer_ids(panels)["SelectLLM (2)"] == ["c", "a"]


def test_map_picks_are_hoverable_above_a_silent_pool() -> None:
    """What a curator hovering a pick relies on: the grey pool is drawn first (under the picks) and never takes the
    hover, and every pick trace shows one label per pick, in both layouts."""
    from selectllm_core.studio.compare_view import Layer, map_points, overlay_figure, panels_figure

    pool = pd.DataFrame({"id": ["a", "b", "c"], "instruction": ["A", "B", "C"], "input": ["", "", ""]})
    frame = map_points(pool, np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]))
    picks = pd.DataFrame({"id": ["a", "c"], "rank": [1, 2], "score": [None, None], "reason": ["r1", "r2"]})
    layers = [Layer("random", picks.iloc[:1]), Layer("SelectLLM", picks)]
    for fig in (overlay_figure(frame, layers), panels_figure(frame, layers)):
        pool_traces = [t for t in fig.data if t.customdata is None]
        pick_traces = [t for t in fig.data if t.customdata is not None]
        assert all(t.hoverinfo == "skip" for t in pool_traces)
        assert list(fig.data).index(pool_traces[0]) == 0, "the pool is drawn under the picks"
        for t in pick_traces:
            assert t.hoverinfo != "skip" and "%{hovertext}" in t.hovertemplate
            assert len(t.hovertext) == len(t.x) and all(t.hovertext)
