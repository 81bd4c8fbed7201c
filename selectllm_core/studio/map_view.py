"""The Map page's scatter: lasso/box events -> row ids (through customdata), row states, escaped hovers, highlighted
rows (search matches, "more like this") and the list under the map, the figure.

Pool text reaches the figure only HTML-escaped (plotly reads a little HTML in labels), so markup shows as text.
"""

from __future__ import annotations

import hashlib
import html
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from selectllm_core.embed.neardup import NearDuplicates
from selectllm_core.studio import neardup_view

STATE_COLORS = {"not picked": "#cbd5e1", "picked": "#f59e0b", "accepted": "#16a34a", "rejected": "#dc2626"}
LEGEND_MAX = 20  # clusters a legend can name; above, colours keep touching clusters apart and numbers go on the map
NO_CLUSTER_COLOR = "#94a3b8"
NEAR_DUP_COLORS = {neardup_view.NONE: "#cbd5e1", neardup_view.KEPT: "#2563eb", neardup_view.NEAR: "#dc2626"}
BACKGROUND = {"not picked", neardup_view.NONE}  # drawn small, beneath the rows a colouring is about
FADED = 0.2  # opacity of the points a highlight leaves out
OUTLINE = "#111827"
_WRAPPERS: dict[int, textwrap.TextWrapper] = {}  # one per width: building a TextWrapper costs as much as a wrap


def selected_ids(event: Any) -> list[str]:
    """Row ids of the points a plotly lasso/box selection holds, read from each point's customdata.

    Args:
        event: what st.plotly_chart(on_select="rerun") returned (or its `selection`), or None.

    Returns:
        Row ids in selection order, without repeats; [] when nothing is selected.
    """
    if event is None:
        return []
    selection = event.get("selection", event) if isinstance(event, Mapping) else getattr(event, "selection", None)
    points = (selection or {}).get("points", []) if isinstance(selection, Mapping) else []
    ids: list[str] = []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None:
            ids.append(str(data))
    return list(dict.fromkeys(ids))



def row_states(ids: Sequence[str], selection: pd.DataFrame | None) -> list[str]:
    """Each row's state on the map: accepted, rejected, picked (pending) or not picked."""
    decided: dict[str, str] = {}
    if selection is not None and not selection.empty:
        decided = {str(i): ("picked" if d == "pending" else d) for i, d in zip(selection["id"], selection["decision"])}
    return [decided.get(str(i), "not picked") for i in ids]


def hover_text(instruction: str, input_: str = "", *, width: int = 70, max_lines: int = 8) -> str:
    """A hover label that shows pool text as text: HTML escaped, wrapped with <br> (plotly's only markup here)."""
    text = instruction if not input_ else f"{instruction}\n[input] {input_}"
    lines: list[str] = []
    for part in text.splitlines():
        lines += _wrap(part, width, max_lines)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["…"]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def _wrap(part: str, width: int, max_lines: int) -> list[str]:
    """The first lines of `textwrap.wrap(part, width) or [""]`, at least max_lines + 1 of them when there are more.

    The same lines as wrapping the whole part, but a map of 100k rows wraps each label on every rerun, so
    three shortcuts matter. Plain text (single spaces, no tabs, hyphens or word longer than a line) is wrapped
    greedily word by word, which is what textwrap does with it. A long part is first wrapped only up to a space
    near its start: a prefix that ends before a space splits into the first chunks of the whole part, so every
    line of it but the last is a line of the whole part.
    """
    if part.isprintable() and part == part.strip() and "-" not in part and "  " not in part:
        if len(part) <= width:
            return [part]
        words = part.split(" ")
        if max(map(len, words)) <= width:
            return _greedy(words, width, max_lines)
    wrapper = _WRAPPERS.get(width) or _WRAPPERS.setdefault(width, textwrap.TextWrapper(width))
    limit = 2 * (max_lines + 2) * width
    if len(part) > limit:
        head = part[: part.rfind(" ", 0, limit)].rstrip()
        lines = wrapper.wrap(head) if head else []
        if len(lines) >= max_lines + 2:
            return lines[: max_lines + 1]
    return wrapper.wrap(part) or [""]


def _greedy(words: list[str], width: int, max_lines: int) -> list[str]:
    """Words joined by single spaces into lines of at most `width`, stopping after max_lines + 1 lines."""
    lines, line = [], words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) <= width:
            line += " " + word
        else:
            lines.append(line)
            if len(lines) > max_lines:
                return lines
            line = word
    lines.append(line)
    return lines


def map_frame(pool: pd.DataFrame, coords: np.ndarray, cluster_of: np.ndarray,
              selection: pd.DataFrame | None, near_dups: NearDuplicates | None = None) -> pd.DataFrame:
    """One row per pool row: id, x, y, cluster, state, near_dup, instruction, input, hover.

    With near-duplicate groups, `near_dup` is each row's role in them and the hover of a row in a group starts
    with its group and its similarity to the kept row.
    """
    frame = pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "x": coords[:, 0], "y": coords[:, 1],
                          "cluster": np.asarray(cluster_of, dtype=np.int64),
                          "instruction": pool["instruction"].to_numpy(), "input": pool["input"].to_numpy()})
    frame["state"] = row_states(frame["id"].tolist(), selection)
    frame["near_dup"], groups = neardup_view.roles(frame["id"].tolist(), near_dups)
    frame["hover"] = [f"<b>{g}</b><br>{hover_text(i, x)}" if g else hover_text(i, x)
                      for i, x, g in zip(frame["instruction"], frame["input"], groups)]
    return frame


class Highlight(NamedTuple):
    """Rows drawn on top of the map, larger and outlined, in their colour; the legend names them."""

    name: str
    ids: frozenset[str]
    symbol: str = "circle"


def highlight_key(highlights: Sequence[Highlight]) -> str:
    """A short fingerprint of the highlighted rows (part of the figure's cache key)."""
    digest = hashlib.sha1()
    for mark in highlights:
        digest.update("\x1f".join([mark.name, mark.symbol, *sorted(mark.ids)]).encode() + b"\x1e")
    return digest.hexdigest()[:16] if highlights else ""


def listed_rows(selected: Sequence[str], matches: Sequence[str] | None) -> tuple[list[str], str]:
    """The rows listed under the map, and their heading: the lasso selection, the search matches, or both.

    Args:
        selected: row ids in the lasso or box ([] without one).
        matches: row ids the search matched, best first (None without a search).

    Returns:
        Row ids (matches in their rank order) and a heading ("" when nothing is to be listed).
    """
    def plural(n: int) -> str:
        return f"{n:,} instruction{'s' if n != 1 else ''}"

    if matches is None:
        return list(selected), f"{plural(len(selected))} in the selection" if selected else ""
    if not selected:
        return list(matches), f"{plural(len(matches))} match the search" if matches else ""
    inside = set(selected)
    both = [m for m in matches if m in inside]
    return both, f"{len(both):,} of the {plural(len(selected))} in the selection match the search"


def search_highlights(matches: Sequence[str] | None, seeds: Sequence[str] = (),
                      neighbours: Sequence[str] = ()) -> list[Highlight]:
    """The map's highlights: the search matches (circles), a selection (squares) and the rows most like it
    (diamonds), each named with its count in the legend."""
    marks = [Highlight(f"search matches ({len(matches):,})", frozenset(matches))] if matches else []
    if seeds:
        marks += [Highlight(f"your selection ({len(seeds):,})", frozenset(seeds), "square"),
                  Highlight(f"more like the selection ({len(neighbours):,})", frozenset(neighbours), "diamond")]
    return marks


def map_figure(frame: pd.DataFrame, *, color_by: str = "cluster", height: int = 560,
               names: Mapping[int, str] | None = None, highlights: Sequence[Highlight] = (),
               totals: Mapping[Any, int] | None = None, point: tuple[int, float] = (5, 0.85),
               one_trace: bool = False) -> Any:
    """A WebGL scatter, one trace per colour group; customdata holds the row id for lasso/box selections.

    Up to LEGEND_MAX clusters, a legend names them. With more, no legend could be read and no palette tells
    them apart, so clusters that touch on the map get different colours, each cluster's number is written on
    its densest spot, and the hover names the point's cluster.

    Args:
        frame: from `map_frame`.
        color_by: "cluster", "state" or "neardup" (each row's role in the near-duplicate groups).
        height: pixels.
        names: a short label per cluster for the legend (e.g. its two most distinctive terms).
        highlights: rows to draw again on top (search matches, "more like this"); the other points fade.
        totals: the rows of each colour group (state, role or cluster number) when the frame holds only some
            of them (a large map draws a sample); the legend counts these instead of the points drawn.
        point: size and opacity of the points (a state or near-duplicate the colouring is about: 4 px more).
        one_trace: draw clusters too many for a legend as one trace, each point in its cluster's colour and its
            hover naming the cluster (a large map's thousand clusters as a thousand WebGL traces take gigabytes
            in the browser once a box is dragged).

    Returns:
        A plotly Figure with lasso as the default drag mode.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig, crowded = go.Figure(), False
    if color_by == "state":
        groups = [(s, s, frame[frame["state"] == s], STATE_COLORS[s]) for s in STATE_COLORS]
    elif color_by == "neardup":
        groups = [(r, r, frame[frame["near_dup"] == r], NEAR_DUP_COLORS[r]) for r in neardup_view.ROLES]
    else:
        names = names or {}
        crowded = frame.loc[frame["cluster"] >= 0, "cluster"].nunique() > LEGEND_MAX
        if crowded:
            colors, spots = _spread_clusters(frame, qualitative.Bold + qualitative.Dark24)
            fig.update_layout(annotations=[  # in one update: add_annotation validates the whole layout each time
                {"x": x, "y": y, "text": str(c), "showarrow": False, "font": {"size": 11, "color": "#111827"},
                 "bgcolor": "rgba(255,255,255,0.7)", "borderpad": 1} for c, (x, y) in spots.items()])
        else:
            palette = qualitative.Bold + qualitative.Dark24 + qualitative.Light24
            colors = {int(c): palette[int(c) % len(palette)] for c in frame["cluster"].unique()}
        groups = [(int(c), _cluster_name(int(c), names), part, colors.get(int(c), NO_CLUSTER_COLOR))
                  for c, part in frame.groupby("cluster", sort=True)]
    shade = pd.Series(NO_CLUSTER_COLOR, index=frame.index, dtype=object)
    merged = []
    for key, name, part, color in groups:
        if part.empty:
            continue
        shade[part.index] = color
        size = point[0] if color_by == "cluster" or name in BACKGROUND else point[0] + 4
        count = len(part) if totals is None else f"{totals.get(key, len(part)):,}"
        if one_trace and crowded:
            merged.append((part.index, color, f"{name} ({count})"))
            continue
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=f"{name} ({count})", showlegend=not crowded,
            marker={"size": size, "color": color, "opacity": FADED if highlights else point[1]},
            customdata=part[["id"]].to_numpy(), hovertext=part["hover"],
            hovertemplate="%{hovertext}"))
    if merged:
        _add_merged(fig, frame, merged, point, FADED if highlights else point[1])
    for mark in highlights:
        _add_highlight(fig, frame, shade, mark)
    # the top margin keeps plotly's mode bar (lasso, box) clear of the legend
    fig.update_layout(height=height, dragmode="lasso", margin={"l": 0, "r": 0, "t": 36, "b": 0},
                      legend={"itemsizing": "constant"}, hoverlabel={"align": "left"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _add_merged(fig: Any, frame: pd.DataFrame, merged: list[tuple[pd.Index, str, str]], point: tuple[int, float],
                opacity: float) -> None:
    """Clusters as one trace: each point's colour a step of a colour scale (50,000 colour strings take plotly
    seconds to validate), its cluster's name and count in customdata for the hover."""
    import plotly.graph_objects as go

    palette = list(dict.fromkeys(color for _, color, _ in merged))
    k, sizes = len(palette), [len(rows) for rows, _, _ in merged]
    part = frame.loc[np.concatenate([rows for rows, _, _ in merged])]
    step = np.repeat([palette.index(color) + 0.5 for _, color, _ in merged], sizes)
    label = np.repeat(np.array([name for _, _, name in merged], dtype=object), sizes)
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="markers", name="clusters", showlegend=False,
        marker={"size": point[0], "opacity": opacity, "color": step, "cmin": 0, "cmax": k, "showscale": False,
                "colorscale": [[edge / k, c] for i, c in enumerate(palette) for edge in (i, i + 1)]},
        customdata=np.column_stack([part["id"].to_numpy(dtype=object), label]), hovertext=part["hover"],
        hovertemplate="%{hovertext}<extra>%{customdata[1]}</extra>"))


def _add_highlight(fig: Any, frame: pd.DataFrame, shade: pd.Series, mark: Highlight) -> None:
    """One highlight's points, each in its own colour, and a legend entry in black and white.

    The legend entry is a trace without points: the points' trace would show its first point's colour there.
    """
    import plotly.graph_objects as go

    part = frame[frame["id"].isin(mark.ids)]
    line = {"color": OUTLINE, "width": 1.5}
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="markers", name=mark.name, legendgroup=mark.name, showlegend=False,
        marker={"size": 11, "color": shade[part.index].tolist(), "symbol": mark.symbol, "line": line},
        customdata=part[["id"]].to_numpy(), hovertext=part["hover"], hovertemplate="%{hovertext}"))
    fig.add_trace(go.Scattergl(x=[None], y=[None], mode="markers", name=mark.name, legendgroup=mark.name,
                               marker={"size": 11, "color": "white", "symbol": mark.symbol, "line": line}))


def _spread_clusters(frame: pd.DataFrame, palette: Sequence[str], *, grid: int = 48,
                     reach: int = 3) -> tuple[dict[int, str], dict[int, tuple[float, float]]]:
    """A colour per cluster, so that clusters touching on the map rarely share one, and a spot for its number.

    The map is cut into grid x grid cells; two clusters touch once for every cell of one that lies within
    `reach` cells of a cell of the other. Clusters, the most touching first, take the colour that costs the
    fewest touches with clusters coloured before (ties: the colour used least so far, then palette order).
    A cluster's number goes to the median of its points in the cell that holds most of them.
    """
    from scipy.ndimage import maximum_filter

    part = frame[frame["cluster"] >= 0]
    ids, member = np.unique(part["cluster"].to_numpy(), return_inverse=True)
    cells = []
    for axis in ("x", "y"):
        v = part[axis].to_numpy(dtype=np.float64)
        cells.append(np.minimum(((v - v.min()) / ((v.max() - v.min()) or 1.0) * grid).astype(np.int64), grid - 1))
    cell = cells[0] * grid + cells[1]
    counts = np.zeros((grid * grid, len(ids)), dtype=np.float32)
    np.add.at(counts, (cell, member), 1.0)
    here = (counts > 0).reshape(grid, grid, -1)
    near = maximum_filter(here, size=(2 * reach + 1, 2 * reach + 1, 1), mode="constant")
    touch = here.reshape(grid * grid, -1).T.astype(np.float32) @ near.reshape(grid * grid, -1).astype(np.float32)
    np.fill_diagonal(touch, 0.0)
    color, uses = np.full(len(ids), -1), np.zeros(len(palette))
    for c in np.argsort(-touch.sum(axis=1), kind="stable"):
        done = color >= 0
        cost = np.bincount(color[done], weights=touch[c, done], minlength=len(palette))
        color[c] = int(np.lexsort((np.arange(len(palette)), uses, cost))[0])
        uses[color[c]] += 1
    in_best = cell == counts.argmax(axis=0)[member]
    spots = part[in_best].groupby(member[in_best])[["x", "y"]].median()
    return ({int(ids[i]): palette[color[i]] for i in range(len(ids))},
            {int(ids[i]): (float(x), float(y)) for i, x, y in spots.itertuples()})



def _cluster_name(cluster: int, names: Mapping[int, str]) -> str:
    """Legend name of a cluster: its number and short label (escaped: plotly reads a little HTML)."""
    if cluster < 0:
        return "no cluster"
    return html.escape(f"{cluster} · {names[cluster]}") if names.get(cluster) else f"cluster {cluster}"



def selection_key(selection: pd.DataFrame | None) -> str:
    """A short fingerprint of a run's picks and decisions: it changes whenever the map's states would."""
    if selection is None:
        return ""
    return str(pd.util.hash_pandas_object(selection[["id", "decision"]]).sum())
