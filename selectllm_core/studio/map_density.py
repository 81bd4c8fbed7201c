"""The map of a large pool: the density of every row beneath a stratified sample of hoverable points, and a box
or lasso turned into every row inside it, drawn or not.

Plotly draws 100k WebGL points in about a second, but the figure carries every point's hover label (16.7 MB at
100k, benchmarks/README.md), and a million points would carry 167 MB. Above `ALL_POINTS_MAX` rows the map is
drawn instead as:

1. the density: a 2-D histogram of every row, one heatmap trace beneath the points, log-scaled, with a colour
   bar (a cell hovered where no point is near says how many rows it holds);
2. `SAMPLE_POINTS` rows drawn as points, coloured and hoverable as on a small map. The sample takes the same
   number of rows from each colour group (cluster, state or near-duplicate role), every row of a group smaller
   than that share, so every cluster shows and a few rejected rows are not lost among 900,000 others;
3. the highlighted rows (search matches, "more like this") on top, up to `HIGHLIGHT_MAX` of each, the legend
   saying how many are drawn when not all are.

A selection is read from the shapes plotly reports (box ranges, lasso polygons, in data coordinates) and tested
on every row of the layout, so it lists every row inside the drawn region, not just the points drawn there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from selectllm_core.embed.neardup import NearDuplicates
from selectllm_core.studio import map_view, neardup_view
from selectllm_core.studio.map_view import Highlight

ALL_POINTS_MAX = 150_000  # rows drawn as points one by one; above, density + sample (benchmarks/README.md, map)
SAMPLE_POINTS = 50_000  # rows drawn as points on a large map: 100k took 0.9 s to draw, so half leaves room
HIGHLIGHT_MAX = 20_000  # rows of one highlight drawn on a large map ("your selection" may hold 300,000)
DENSITY_BINS = (360, 160)  # cells across and down: 3 to 3.5 px each on a plot 1,000-1,250 px wide, 560 high
DENSITY_SCALE = [[0.0, "#dbe3ee"], [0.5, "#7c8aa0"], [1.0, "#1e293b"]]  # pale to slate, beneath the colours
POINT = (3, 0.7)  # size and opacity of a large map's points: smaller and lighter, so the density shows through
GROUP_WORDS = {"cluster": "cluster", "state": "selection state", "neardup": "near-duplicate role"}


class LargeMap(NamedTuple):
    """What a large map draws, for the page to say: rows, points drawn, and how the sample was taken."""

    rows: int
    sampled: int  # rows of the stratified sample
    extra: int  # highlighted rows drawn beside the sample
    groups: int  # colour groups the sample was stratified by
    share: int  # rows the sample takes at most from each group
    color_by: str


def stratified_sample(groups: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """Positions of up to `size` rows: the same number from each group, every row of a group smaller than that.

    Args:
        groups: one group key per row (cluster number, state, ...).
        size: rows wanted; all rows when there are no more.
        seed: the rows taken within a group are the first ones of a permutation seeded with it.

    Returns:
        Sorted row positions.
    """
    n = len(groups)
    if size >= n:
        return np.arange(n)
    _, member, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    quota = _equal_shares(counts, size)
    order = np.random.default_rng(seed).permutation(n)
    by_group = order[np.argsort(member[order], kind="stable")]  # each group's rows in permutation order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - np.repeat(starts, counts)
    return np.sort(by_group[rank < np.repeat(quota, counts)])


def _equal_shares(counts: np.ndarray, size: int) -> np.ndarray:
    """Rows per group: the largest equal share that fits in `size` (groups smaller than it give all their rows),
    the rows left over going one each to the largest groups."""
    quota, left, open_ = np.zeros_like(counts), size, np.ones(len(counts), dtype=bool)
    while open_.any():
        share = left // open_.sum()
        small = open_ & (counts - quota <= share)
        if not small.any():
            quota[open_] += share
            left -= share * int(open_.sum())
            break
        left -= int((counts - quota)[small].sum())
        quota[small] = counts[small]
        open_ &= ~small
    for g in np.argsort(-(counts - quota), kind="stable")[:left]:  # 0 <= left < groups still open
        quota[g] += 1 if quota[g] < counts[g] else 0
    return quota


def group_keys(pool: pd.DataFrame, cluster_of: np.ndarray, selection: pd.DataFrame | None,
               near_dups: NearDuplicates | None, color_by: str) -> np.ndarray:
    """Each row's colour group on the map: its cluster, its selection state or its near-duplicate role."""
    ids = pool["id"].astype(str).tolist()
    if color_by == "state":
        return np.asarray(map_view.row_states(ids, selection), dtype=object)
    if color_by == "neardup":
        return np.asarray(neardup_view.roles(ids, near_dups)[0], dtype=object)
    return np.asarray(cluster_of, dtype=np.int64)


def drawn_highlights(highlights: Sequence[Highlight], *, limit: int = HIGHLIGHT_MAX,
                     seed: int = 0) -> list[Highlight]:
    """The highlights with at most `limit` rows each (a seeded sample), renamed to say so: "(312,000; 20,000
    drawn)"."""
    out = []
    for mark in highlights:
        if len(mark.ids) <= limit:
            out.append(mark)
            continue
        ids = sorted(mark.ids)
        keep = np.random.default_rng(seed).choice(len(ids), limit, replace=False)
        name = mark.name[:-1] + f"; {limit:,} drawn)" if mark.name.endswith(")") else f"{mark.name} ({limit:,} drawn)"
        out.append(mark._replace(name=name, ids=frozenset(ids[i] for i in keep)))
    return out


class Density(NamedTuple):
    """Rows per cell of a regular grid over the layout: counts[j, i] for x cell i and y cell j."""

    counts: np.ndarray
    x: np.ndarray  # cell centres
    y: np.ndarray


def density(coords: np.ndarray, *, bins: tuple[int, int] = DENSITY_BINS) -> Density:
    """The 2-D histogram of every row's point on the map."""
    counts, xe, ye = np.histogram2d(coords[:, 0], coords[:, 1], bins=bins)
    return Density(counts.T.astype(np.int64), (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2)


def density_trace(cells: Density) -> Any:
    """A heatmap of the density, log-scaled (a few rows show beside thousands), empty cells transparent."""
    import plotly.graph_objects as go

    top = max(1, int(cells.counts.max()))
    ticks = [v for v in (1, 10, 100, 1_000, 10_000, 100_000) if v <= top]
    z = np.where(cells.counts > 0, np.log10(np.maximum(cells.counts, 1)), np.nan)
    return go.Heatmap(
        x=cells.x, y=cells.y, z=z, customdata=cells.counts, zmin=0, zmax=max(np.log10(top), 1.0),
        colorscale=DENSITY_SCALE, name="density of every row", showlegend=False, hoverongaps=False,
        hovertemplate="%{customdata:,} rows in this cell<extra></extra>",
        colorbar={"title": {"text": "rows per cell", "side": "right"}, "orientation": "h", "thickness": 10,
                  "len": 0.3, "x": 1.0, "xanchor": "right", "y": -0.02, "yanchor": "top",
                  "tickvals": [np.log10(v) for v in ticks], "ticktext": [f"{v:,}" for v in ticks]})


def large_map_figure(pool: pd.DataFrame, coords: np.ndarray, cluster_of: np.ndarray,
                     selection: pd.DataFrame | None, near_dups: NearDuplicates | None = None, *,
                     color_by: str = "cluster", height: int = 560, names: Mapping[int, str] | None = None,
                     highlights: Sequence[Highlight] = (), sample: int = SAMPLE_POINTS,
                     seed: int = 0) -> tuple[Any, LargeMap]:
    """The map of a large pool: density of every row, a stratified sample as points, the highlights on top.

    Args:
        pool: the pool's rows (id, instruction, input), in layout order.
        coords: each row's point, (n, 2).
        cluster_of: each row's cluster (-1 for none).
        selection: the run's picks with decisions, or None.
        near_dups: the near-duplicate groups, or None.
        color_by: "cluster", "state" or "neardup", as `map_view.map_figure`.
        height: pixels.
        names: a short label per cluster.
        highlights: rows to draw on top (at most HIGHLIGHT_MAX of each).
        sample: rows drawn as points.
        seed: the sample's seed.

    Returns:
        The figure (lasso as its drag mode, the points' customdata their row ids) and what it draws.
    """
    # 1. the sample, stratified by colour group, and the highlighted rows it lacks
    groups = group_keys(pool, cluster_of, selection, near_dups, color_by)
    keys, member, counts = np.unique(groups, return_inverse=True, return_counts=True)
    rows = stratified_sample(groups, sample, seed=seed)
    marks = drawn_highlights(highlights, seed=seed)
    marked = np.array(pool["id"].astype(str).isin(list(frozenset().union(*(m.ids for m in marks)))))
    marked[rows] = False
    drawn = np.sort(np.concatenate([rows, np.flatnonzero(marked)]))
    # 2. the points as on a small map, each group's legend counting the rows of the whole pool
    frame = map_view.map_frame(pool.iloc[drawn], coords[drawn], np.asarray(cluster_of)[drawn], selection, near_dups)
    totals = {(int(k) if color_by == "cluster" else k): int(c) for k, c in zip(keys, counts)}
    fig = map_view.map_figure(frame, color_by=color_by, height=height, names=names, highlights=marks, totals=totals,
                               point=POINT, one_trace=True)
    # 3. the density beneath them, its colour bar under the plot
    fig.add_trace(density_trace(density(coords)))
    fig.data = (fig.data[-1], *fig.data[:-1])
    fig.update_layout(margin={"b": 44})
    share = int(np.bincount(member[rows]).max()) if len(rows) else 0
    return fig, LargeMap(len(pool), len(rows), int(marked.sum()), len(keys), share, color_by)


def caption(info: LargeMap) -> str:
    """What a large map draws and what its selection does, in a sentence or three."""
    word = GROUP_WORDS.get(info.color_by, "group")
    how = (f": up to {info.share:,} from each of the {info.groups:,} {word}s, all rows of a smaller one, so every "
           f"{word} shows" if info.groups > 1 else ", a seeded random sample")
    extra = f" The {info.extra:,} highlighted rows outside the sample are drawn too." if info.extra else ""
    return (f"{info.rows:,} rows are too many to draw one by one. The grey shading is the density of every row "
            f"(the colour bar under the map reads it); {info.sampled:,} sampled rows are drawn on it as points to hover "
            f"and colour{how}.{extra} A box or lasso selects every row inside it, drawn or not; the counts in the "
            "legend and the hovers are of every row.")


def selection_caption(rows: int, drawn: int) -> str:
    """What a box or lasso on a large map holds: every row inside it, and how many of them are drawn."""
    return (f"The selection holds {rows:,} row{'s' if rows != 1 else ''} of the pool; {drawn:,} of them are drawn "
            "as points, the others only counted in the shading.")


def inside(coords: np.ndarray, event: Any) -> np.ndarray | None:
    """Which rows lie inside the boxes and lassos of a plotly selection (their union), or None without any.

    Args:
        coords: each row's point, (n, 2), in the plot's data coordinates.
        event: what st.plotly_chart(on_select="rerun") returned (or its `selection`), or None.

    Returns:
        A boolean mask over the rows; None when the selection holds no box or lasso.
    """
    selection = _selection(event)
    shapes = [("box", s) for s in selection.get("box") or []] + [("lasso", s) for s in selection.get("lasso") or []]
    shapes = [(kind, s) for kind, s in shapes if len(s.get("x") or []) >= (2 if kind == "box" else 3)]
    if not shapes:
        return None
    mask = np.zeros(len(coords), dtype=bool)
    for kind, shape in shapes:
        xs, ys = np.asarray(shape["x"], dtype=np.float64), np.asarray(shape["y"], dtype=np.float64)
        if kind == "box":
            mask |= ((coords[:, 0] >= xs.min()) & (coords[:, 0] <= xs.max())
                     & (coords[:, 1] >= ys.min()) & (coords[:, 1] <= ys.max()))
        else:
            mask |= in_polygon(coords, xs, ys)
    return mask


def in_polygon(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd test of points against a closed polygon, as plotly tests a lasso.

    The points inside the polygon's bounding box are sorted by y once; each edge then only looks at the
    slab of points whose y it spans, so a lasso of hundreds of vertices over a million rows takes a
    fraction of a second.
    """
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    out = np.zeros(len(points), dtype=bool)
    near = np.flatnonzero((x >= xs.min()) & (x <= xs.max()) & (y >= ys.min()) & (y <= ys.max()))
    order = near[np.argsort(y[near], kind="stable")]
    ny, flips = y[order], np.zeros(len(order), dtype=bool)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(np.roll(xs, -1), np.roll(ys, -1))):
        if y0 == y1:
            continue
        lo, hi = np.searchsorted(ny, min(y0, y1), "left"), np.searchsorted(ny, max(y0, y1), "left")
        slab = order[lo:hi]  # rows with min(y0, y1) <= y < max(y0, y1): the edge crosses their horizontal line
        cross = x0 + (y[slab] - y0) * (x1 - x0) / (y1 - y0)
        flips[lo:hi] ^= x[slab] < cross
    out[order] = flips
    return out


def selected_rows(event: Any, coords: np.ndarray, ids: Sequence[str] | np.ndarray) -> list[str]:
    """Row ids of every row inside a selection's boxes and lassos, in pool order (drawn as a point or not).

    Without a box or lasso in the event (an older event, or a click), the ids of the points it holds.
    """
    mask = inside(coords, event)
    if mask is None:
        return map_view.selected_ids(event)
    return [str(i) for i in np.asarray(ids, dtype=object)[mask]]


def _selection(event: Any) -> Mapping[str, Any]:
    """The `selection` of a plotly_chart event (or the event itself when it is one), {} without one."""
    if event is None:
        return {}
    selection = event.get("selection", event) if isinstance(event, Mapping) else getattr(event, "selection", None)
    return selection if isinstance(selection, Mapping) else {}
