"""The large-pool map (`studio.map_density`): the stratified sample, the density, the figure, and a box or lasso
turned into every row inside it, drawn or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from streamlit.util import ReadOnlyAttributeDictionary

from selectllm_core.studio import map_density, map_view


def _pool(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pool = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "instruction": [f"task {i}" for i in range(n)],
                         "input": [""] * n})
    return pool, rng.normal(size=(n, 2)), np.arange(n) % 7


def _pnpoly(x: float, y: float, xs: list[float], ys: list[float]) -> bool:
    """W. Randolph Franklin's point-in-polygon loop, one point at a time: the reference for the vectorised test."""
    inside, j = False, len(xs) - 1
    for i in range(len(xs)):
        if (ys[i] > y) != (ys[j] > y) and x < (xs[j] - xs[i]) * (y - ys[i]) / (ys[j] - ys[i]) + xs[i]:
            inside = not inside
        j = i
    return inside


def _event(box: list | None = None, lasso: list | None = None, points: list | None = None) -> object:
    """An st.plotly_chart selection event as Streamlit builds it."""
    return ReadOnlyAttributeDictionary({"selection": ReadOnlyAttributeDictionary(
        {"points": points or [], "point_indices": [], "box": box or [], "lasso": lasso or []})})


# -- the sample -----------------------------------------------------------------------------------
def test_the_sample_takes_an_equal_share_of_each_group_and_all_of_a_smaller_one() -> None:
    groups = np.array(["not picked"] * 9_000 + ["picked"] * 900 + ["rejected"] * 30 + ["accepted"] * 70)
    rows = map_density.stratified_sample(groups, 1_000, seed=3)
    assert len(rows) == 1_000 and np.all(np.diff(rows) > 0), "exactly the size asked, in pool order"
    taken = pd.Series(groups[rows]).value_counts().to_dict()
    assert taken == {"rejected": 30, "accepted": 70, "not picked": 450, "picked": 450}
    assert np.array_equal(rows, map_density.stratified_sample(groups, 1_000, seed=3)), "seeded"
    assert not np.array_equal(rows, map_density.stratified_sample(groups, 1_000, seed=4))
    assert np.array_equal(map_density.stratified_sample(groups, 20_000), np.arange(10_000)), "all when few"


@pytest.mark.parametrize("size", [1, 5, 99, 1_000, 4_321])
def test_shares_add_up_to_the_size_and_every_group_shows_when_it_can(size: int) -> None:
    counts = np.array([1, 3, 50, 400, 400, 2_000, 7_000])
    quota = map_density._equal_shares(counts, size)
    assert quota.sum() == size and np.all(quota <= counts)
    if size >= len(counts):
        assert np.all(quota > 0)
    full, part = quota == counts, quota[quota < counts]
    if part.size:
        assert part.max() - part.min() <= 1, "the groups not drawn whole get equal shares"
        assert np.all(counts[full] <= part.min()), "only groups below the share are drawn whole"


# -- selection by shape ---------------------------------------------------------------------------
def test_the_lasso_test_agrees_with_the_plain_loop_on_awkward_polygons() -> None:
    rng = np.random.default_rng(7)
    points = rng.uniform(-1.2, 1.2, size=(3_000, 2))
    points[:40] = np.round(points[:40], 1)  # some on the vertices' grid lines
    angles = np.sort(rng.uniform(0, 2 * np.pi, 60))
    star = (np.where(np.arange(60) % 2, 0.4, 1.0) * np.cos(angles), np.where(np.arange(60) % 2, 0.4, 1.0) * np.sin(angles))
    bowtie = (np.array([-1.0, 1.0, 1.0, -1.0]), np.array([-1.0, 1.0, -1.0, 1.0]))  # crosses itself
    square = (np.array([-0.5, 0.5, 0.5, -0.5, -0.5]), np.array([-0.5, -0.5, 0.5, 0.5, -0.5]))  # closed twice
    for xs, ys in (star, bowtie, square):
        want = [_pnpoly(x, y, list(xs), list(ys)) for x, y in points]
        assert map_density.in_polygon(points, xs, ys).tolist() == want
    assert 0 < sum(want) < len(points)


def test_boxes_and_lassos_select_their_union_and_nothing_without_a_shape() -> None:
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0], [9.0, 0.0]])
    box = {"xref": "x", "yref": "y", "x": [1.5, -0.5], "y": [-0.5, 1.5]}  # corners in either order
    lasso = {"xref": "x", "yref": "y", "x": [4.0, 6.0, 5.0], "y": [4.0, 4.0, 7.0]}
    assert map_density.inside(coords, _event(box=[box])).tolist() == [True, True, False, False, False]
    assert map_density.inside(coords, _event(box=[box], lasso=[lasso])).tolist() == [True, True, False, True, False]
    assert map_density.inside(coords, _event(lasso=[{"x": [], "y": []}])) is None, "a cleared lasso"
    assert map_density.inside(coords, None) is None
    assert map_density.inside(coords, {"box": [box]}).sum() == 2, "the selection itself will do"


def test_a_selection_lists_every_row_inside_not_only_the_points_drawn() -> None:
    pool, coords, clusters = _pool(20_000)
    fig, info = map_density.large_map_figure(pool, coords, clusters, None, sample=2_000)
    box = {"x": [-0.5, 0.7], "y": [-0.3, 0.9]}
    # plotly's own event: the drawn points inside the box, named by customdata
    points = [{"customdata": [rid]} for t in fig.data if t.type == "scattergl"
              for (rid,), x, y in zip(t.customdata, t.x, t.y) if -0.5 <= x <= 0.7 and -0.3 <= y <= 0.9]
    event = _event(box=[box], points=points)
    chosen = map_density.selected_rows(event, coords, pool["id"])
    inside = (coords[:, 0] >= -0.5) & (coords[:, 0] <= 0.7) & (coords[:, 1] >= -0.3) & (coords[:, 1] <= 0.9)
    assert chosen == pool["id"][inside].tolist(), "every row inside, in pool order"
    assert len(chosen) > 5 * len(points) == 5 * len(map_view.selected_ids(event)) > 0
    assert map_density.selected_rows(_event(points=points[:3]), coords, pool["id"]) == \
        [p["customdata"][0] for p in points[:3]], "without a shape: the points the event names"


# -- the figure -----------------------------------------------------------------------------------
def test_the_large_figure_draws_the_density_of_every_row_beneath_a_sample_of_every_cluster() -> None:
    pool, coords, clusters = _pool(30_000)
    fig, info = map_density.large_map_figure(pool, coords, clusters, None, sample=3_500,
                                             names={c: f"<b>{c}" for c in range(7)})
    heat, points = fig.data[0], [t for t in fig.data if t.type == "scattergl"]
    assert heat.type == "heatmap" and np.asarray(heat.customdata).sum() == 30_000
    assert np.isnan(np.asarray(heat.z, dtype=float)).any(), "empty cells are left transparent"
    assert info == map_density.LargeMap(rows=30_000, sampled=3_500, extra=0, groups=7, share=500, color_by="cluster")
    assert [len(t.x) for t in points] == [500] * 7
    assert [t.name for t in points] == [f"{c} · &lt;b&gt;{c} ({np.sum(clusters == c):,})" for c in range(7)]
    drawn = {rid for t in points for (rid,) in t.customdata}
    assert len(drawn) == 3_500 and drawn <= set(pool["id"])
    assert all(t.marker.size == map_density.POINT[0] for t in points) and fig.layout.dragmode == "lasso"
    caption = map_density.caption(info)
    assert caption.startswith("30,000 rows are too many to draw one by one.")
    assert "3,500 sampled rows are drawn" in caption and "up to 500 from each of the 7 clusters" in caption


def test_clusters_too_many_for_a_legend_are_one_trace_each_point_in_its_cluster_colour() -> None:
    pool, coords, _ = _pool(12_000)
    clusters = np.arange(12_000) % 40
    fig, info = map_density.large_map_figure(pool, coords, clusters, None, sample=4_000)
    points = [t for t in fig.data if t.type == "scattergl"]
    assert len(points) == 1 and len(points[0].x) == 4_000 and not points[0].showlegend
    ids, groups = zip(*points[0].customdata)
    assert map_view.selected_ids({"points": [{"customdata": list(points[0].customdata[7])}]}) == [ids[7]]
    where = dict(zip(pool["id"], clusters))
    assert all(g == f"cluster {where[i]} (300)" for i, g in zip(ids, groups)), "the hover names the cluster"
    colour = {}
    for (rid, _), c in zip(points[0].customdata, points[0].marker.color):
        assert colour.setdefault(where[rid], c) == c, "one colour per cluster"
    assert points[0].hovertemplate == "%{hovertext}<extra>%{customdata[1]}</extra>"
    assert len(fig.layout.annotations) == 40 and info.share == 100


def test_state_colouring_draws_every_rare_state_and_the_legend_counts_the_pool() -> None:
    pool, coords, clusters = _pool(20_000)
    picks = pool["id"].iloc[::10]
    selection = pd.DataFrame({"id": picks, "decision": ["rejected" if i % 100 == 0 else "pending"
                                                        for i in range(len(picks))]})
    fig, info = map_density.large_map_figure(pool, coords, clusters, selection, color_by="state", sample=1_000)
    counts = {t.name: len(t.x) for t in fig.data if t.type == "scattergl"}
    assert counts == {"not picked (18,000)": 490, "picked (1,980)": 490, "rejected (20)": 20}
    assert "each of the 3 selection states" in map_density.caption(info)


def test_highlights_are_drawn_on_top_up_to_the_limit_and_say_how_many() -> None:
    pool, coords, clusters = _pool(20_000)
    marks = map_view.search_highlights(pool["id"].iloc[::2].tolist(), ["r1", "r3"], ["r5"])
    capped = map_density.drawn_highlights(marks, limit=4_000)
    assert [m.name for m in capped] == ["search matches (10,000; 4,000 drawn)", "your selection (2)",
                                        "more like the selection (1)"]
    assert len(capped[0].ids) == 4_000 and capped[0].ids <= marks[0].ids and capped[1:] == marks[1:]
    fig, info = map_density.large_map_figure(pool, coords, clusters, None, sample=1_000, highlights=marks)
    drawn = {t.name: {rid for (rid,) in t.customdata} for t in fig.data if t.type == "scattergl" and t.customdata
             is not None and t.marker.symbol in ("square", "diamond")}
    assert drawn == {"your selection (2)": {"r1", "r3"}, "more like the selection (1)": {"r5"}}
    sampled = {rid for t in fig.data[1:1 + 7] for (rid,) in t.customdata}
    assert {"r1", "r3", "r5"} <= sampled, "a highlighted row outside the sample is drawn with its cluster too"
    assert info.extra > 0 and f"The {info.extra:,} highlighted rows outside the sample" in map_density.caption(info)
