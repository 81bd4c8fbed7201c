"""The Map page's scatter: lasso/box events -> row ids (through customdata), row states, escaped hovers, the figure.

Pool text reaches the figure only HTML-escaped (plotly reads a little HTML in labels), so markup shows as text.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

STATE_COLORS = {"not picked": "#cbd5e1", "picked": "#f59e0b", "accepted": "#16a34a", "rejected": "#dc2626"}
LEGEND_MAX = 20  # clusters a legend can name; above, colours keep touching clusters apart and numbers go on the map
NO_CLUSTER_COLOR = "#94a3b8"
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
              selection: pd.DataFrame | None) -> pd.DataFrame:
    """One row per pool row: id, x, y, cluster, state, instruction, input, hover."""
    frame = pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "x": coords[:, 0], "y": coords[:, 1],
                          "cluster": np.asarray(cluster_of, dtype=np.int64),
                          "instruction": pool["instruction"].to_numpy(), "input": pool["input"].to_numpy()})
    frame["state"] = row_states(frame["id"].tolist(), selection)
    frame["hover"] = [hover_text(i, x) for i, x in zip(frame["instruction"], frame["input"])]
    return frame


def map_figure(frame: pd.DataFrame, *, color_by: str = "cluster", height: int = 560,
               names: Mapping[int, str] | None = None) -> Any:
    """A WebGL scatter, one trace per colour group; customdata holds the row id for lasso/box selections.

    Up to LEGEND_MAX clusters, a legend names them. With more, no legend could be read and no palette tells
    them apart, so clusters that touch on the map get different colours, each cluster's number is written on
    its densest spot, and the hover names the point's cluster.

    Args:
        frame: from `map_frame`.
        color_by: "cluster" or "state".
        height: pixels.
        names: a short label per cluster for the legend (e.g. its two most distinctive terms).

    Returns:
        A plotly Figure with lasso as the default drag mode.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig, crowded = go.Figure(), False
    if color_by == "state":
        groups = [(s, frame[frame["state"] == s], STATE_COLORS[s]) for s in STATE_COLORS]
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
        groups = [(_cluster_name(int(c), names), part, colors.get(int(c), NO_CLUSTER_COLOR))
                  for c, part in frame.groupby("cluster", sort=True)]
    for name, part, color in groups:
        if part.empty:
            continue
        size = 5 if color_by == "cluster" or name == "not picked" else 9
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=f"{name} ({len(part)})", showlegend=not crowded,
            marker={"size": size, "color": color, "opacity": 0.85},
            customdata=part[["id"]].to_numpy(), hovertext=part["hover"],
            hovertemplate="%{hovertext}"))
    # the top margin keeps plotly's mode bar (lasso, box) clear of the legend
    fig.update_layout(height=height, dragmode="lasso", margin={"l": 0, "r": 0, "t": 36, "b": 0},
                      legend={"itemsizing": "constant"}, hoverlabel={"align": "left"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


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
