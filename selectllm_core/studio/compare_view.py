"""The Compare page's plain parts: which runs to compare, the measures table, and the runs' picks on the map.

Map figures of several runs' selections on one pool, overlaid on one map or one small map per run: pure
functions over the pool's map points (`map_points`: id, x, y, instruction, input per pool row) and each
run's ranked selection; the Compare page draws them with plotly. Only picks carry a hover label, so a map of a
large pool stays light. Pool text and the models' reasons reach the figure only HTML-escaped, so markup in a
pool shows as text.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.methods import Method
from selectllm_core.studio.map_view import hover_text

# Okabe-Ito: told apart by most colour-blind readers; the symbols tell runs apart as well
COLORS = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
SYMBOLS = ("circle-open", "x-thin-open", "diamond-open", "square-open", "triangle-up-open", "cross-thin-open",
           "star-open", "hexagon-open")
POOL_COLOR = "#c8ccd2"
WHICH = {"all": "all picks", "selected": "not rejected", "accepted": "accepted only"}
# The measures table: column -> (title, number format, help); lower is better for ↓, higher for ↑.
MEASURES = {
    "selected": ("Rows", None, "Picks compared (see 'Picks compared')."),
    "coverage_mean": ("Coverage, mean ↓", "%.3f", "Mean cosine distance from every pool row to its nearest pick: "
                      "lower means the picks reach every part of the pool."),
    "coverage_max": ("Coverage, worst ↓", "%.3f", "The pool row farthest from any pick."),
    "entropy_bits": ("Cluster entropy ↑", "%.2f", "Entropy (bits) of the picks over the clusters: higher means "
                     "more evenly spread."),
    "evenness": ("Evenness ↑", "%.2f", "Entropy over its maximum, log2(clusters): 1 is perfectly even."),
    "len_mean": ("Length, mean", "%.0f", "Characters of instruction + input."),
    "len_median": ("Length, median", "%.0f", None), "len_p90": ("Length, p90", "%.0f", None),
    "llm_calls": ("LLM calls", None, None), "tokens": ("Tokens", "%d", None),
    "cost": ("Cost ($)", "%.4f", "What the ledger recorded for the run's calls, priced by the workspace's price "
             "table; empty: a model with no price.")}
# The position-bias table (listwise runs): column -> (title, number format, help).
BIAS = {
    "order_consistency": ("Order consistency", "%.2f", "Shared picks when the same subset is shown in another "
                          "order (1: always the same; empty: shown once and not checked)."),
    "chance": ("Chance", "%.2f", "What random picks would agree: at or below it, the picks are no better than "
               "random."),
    "top_position": ("Most picked position", None, None),
    "top_share": ("Top share", "%.2f", "Share of picks at the most picked position."),
    "uniform_share": ("Uniform", "%.2f", "That share if every position were equally likely."),
    "p_value": ("p (chi-square)", "%.3g", "Small (< 0.05): picks depend on the position.")}


@dataclass(frozen=True)
class Layer:
    """One run's picks on the map: a legend label and the selection frame (id, rank, score, reason)."""

    label: str
    picks: pd.DataFrame


def run_labels(runs: Mapping[str, Mapping[str, Any]], settings: Mapping[str, str],
               titles: Mapping[str, str]) -> dict[str, str]:
    """Short, distinct legend names for stored runs: the method's title, then what tells runs of it apart.

    Args:
        runs: run id -> stored run (its "method").
        settings: run id -> the parameters that tell runs of one method apart (`compare.run_setting`).
        titles: method -> display title (e.g. "coreset" -> "k-center coreset").

    Returns:
        run id -> label: the title alone when the method has one run here, else the title with its setting,
        and the run id's last characters when even the settings are equal.
    """
    title = {r: titles.get(run["method"], run["method"]) for r, run in runs.items()}
    labels = {}
    for r in runs:
        same = [o for o in runs if title[o] == title[r]]
        if len(same) == 1:
            labels[r] = title[r]
        elif sum(settings.get(o, "") == settings.get(r, "") for o in same) == 1:
            labels[r] = f"{title[r]} ({settings[r]})"
        else:
            labels[r] = f"{title[r]} …{r[-4:]}"
    return labels


def score_runs(runs: pd.DataFrame, pool_id: str) -> list[str]:
    """Runs of this pool whose scores another method can rank by (not DEITA's own, not random draws)."""
    of_pool = runs.loc[runs["pool_id"] == pool_id]
    return [r for r, m in zip(of_pool["run_id"], of_pool["method"], strict=True) if m not in ("deita", "random")]


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    """The pool's extra columns that hold numbers (a method can rank by them)."""
    return [c for c in frame.columns if c not in ("id", "instruction", "input", "text")
            and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def method_calls(method: Method, params: Mapping[str, Any], rows: int) -> int:
    """Model calls a method run makes on a pool of `rows`: one per row, per prompt phrasing where it has them."""
    return rows * int(params.get("phrasings") or 1) if "llm" in method.needs else 0


def default_runs(runs: pd.DataFrame) -> list[str]:
    """The runs compared first: the newest of each method (newest first), at least two and at most six.

    Args:
        runs: the pool's finished runs, oldest first (columns run_id, method).
    """
    newest = runs["run_id"].tolist()[::-1]
    per_method = [runs.loc[runs["method"] == m, "run_id"].iloc[-1] for m in dict.fromkeys(runs["method"][::-1])]
    return list(dict.fromkeys(per_method + newest))[: max(2, min(len(per_method), 6))]


def selections_key(selections: Mapping[str, pd.DataFrame]) -> str:
    """A fingerprint of these runs' picks and decisions: it changes whenever one of them does."""
    return str(hash(tuple((r, f[["id", "decision"]].to_json()) for r, f in selections.items())))


def measures_table(table: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """`Comparison.table` for display: a label first (the pool's reference row named so), no method column."""
    out = table.copy()
    out.insert(0, "label", ["whole pool (reference)"] + [labels[r] for r in out["run"].iloc[1:]])
    out = out.drop(columns=["method"])
    out["run"] = out["run"].where(out.index > 0, "")
    return out


def empty_note(table: pd.DataFrame, labels: Mapping[str, str], which: str) -> str:
    """Which compared runs have no picks of this kind yet, and what to do ("" when every run has some)."""
    runs = table.iloc[1:]
    empty = [labels[r] for r, n in zip(runs["run"], runs["selected"]) if n == 0]
    if not empty:
        return ""
    kind = {"accepted": "accepted picks", "selected": "picks left after rejections"}.get(which, "picks")
    return (f"No {kind} yet in: {', '.join(empty)}, so their measures are empty. Review those runs (open them from "
            "the sidebar), or compare all picks.")


def job_message(run_id: str, summary: Mapping[str, Any]) -> str:
    """What a finished method run selected, and where to find it."""
    short = f"; {summary['short_by']} short of the budget: {summary['flags']}" if summary["short_by"] else ""
    return (f"{run_id}: {summary['selected']} rows selected{short}. It is now in the comparison below; open it "
            "from the sidebar to review or export it.")


def map_points(pool: pd.DataFrame, coords: np.ndarray) -> pd.DataFrame:
    """One row per pool row: id, x, y, instruction, input (the pool's 2-D layout, in pool order)."""
    return pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "x": coords[:, 0], "y": coords[:, 1],
                         "instruction": pool["instruction"].to_numpy(), "input": pool["input"].to_numpy()})


def _pick_hover(base: str, rank: Any, score: Any, reason: Any, label: str) -> str:
    """The hover of a picked point: the run, rank and score, the pool row's label, then the reason (escaped)."""
    head = f"<b>{html.escape(label, quote=False)}</b> · rank {int(rank)}"
    if score is not None and not (isinstance(score, float) and math.isnan(score)):
        head += f" · score {float(score):.3g}"
    lines = [head, base]
    if isinstance(reason, str) and reason.strip():
        wrapped = textwrap.wrap(reason.strip(), 70)[:4]
        lines.append("<i>reason:</i> " + "<br>".join(html.escape(w, quote=False) for w in wrapped))
    return "<br>".join(lines)


def _layer_points(frame: pd.DataFrame, layer: Layer) -> pd.DataFrame:
    """The layer's picks joined to their map coordinates (picks not in the frame are dropped)."""
    picks = layer.picks[["id", "rank", "score", "reason"]]
    points = picks.merge(frame[["id", "x", "y", "instruction", "input"]], on="id", how="inner")
    points["label"] = [_pick_hover(hover_text(i, x), r, s, why, layer.label) for i, x, r, s, why
                       in zip(points["instruction"], points["input"], points["rank"], points["score"], points["reason"])]
    return points


def _pool_trace(frame: pd.DataFrame, *, show_legend: bool) -> Any:
    import plotly.graph_objects as go

    return go.Scattergl(x=frame["x"], y=frame["y"], mode="markers", name=f"pool ({len(frame):,})",
                        marker={"size": 4, "color": POOL_COLOR}, hoverinfo="skip", showlegend=show_legend,
                        legendgroup="pool")


def _layer_trace(points: pd.DataFrame, label: str, index: int, *, overlay: bool, show_legend: bool) -> Any:
    import plotly.graph_objects as go

    color = COLORS[index % len(COLORS)]
    symbol = SYMBOLS[index % len(SYMBOLS)] if overlay else "circle"
    return go.Scattergl(
        x=points["x"], y=points["y"], mode="markers", name=html.escape(f"{label} ({len(points)})", quote=False),
        marker={"size": 11 if overlay else 7, "color": color, "symbol": symbol,
                "line": {"width": 2 if overlay else 0, "color": color}},
        customdata=points[["id"]].to_numpy(), hovertext=points["label"], hovertemplate="%{hovertext}<extra></extra>",
        legendgroup=label, showlegend=show_legend)


def overlay_figure(frame: pd.DataFrame, layers: list[Layer], *, height: int = 620) -> Any:
    """Every run's picks on one map of the pool, one colour and symbol per run (click a legend entry to hide it).

    Args:
        frame: the pool's map points (`map_points`).
        layers: one Layer per run, in legend order.
        height: pixels.
    """
    import plotly.graph_objects as go

    fig = go.Figure([_pool_trace(frame, show_legend=True)])
    for i, layer in enumerate(layers):
        fig.add_trace(_layer_trace(_layer_points(frame, layer), layer.label, i, overlay=True, show_legend=True))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, hoverlabel={"align": "left"},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.02, "itemsizing": "constant"},
                      dragmode="pan")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def panels_figure(frame: pd.DataFrame, layers: list[Layer], *, columns: int = 2, panel_height: int = 380) -> Any:
    """One small map per run, side by side on shared axes (zooming one zooms all), the pool in grey under each.

    Args:
        frame: the pool's map points (`map_points`).
        layers: one Layer per run; each gets a titled panel.
        columns: panels per row.
        panel_height: pixels per row of panels.
    """
    from plotly.subplots import make_subplots

    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    points = [_layer_points(frame, layer) for layer in layers]
    titles = [html.escape(f"{layer.label}: {len(p)} picks", quote=False) for layer, p in zip(layers, points)]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, shared_xaxes="all", shared_yaxes="all",
                        horizontal_spacing=0.03, vertical_spacing=0.08 if rows > 1 else 0.0)
    for i, (layer, p) in enumerate(zip(layers, points)):
        row, col = divmod(i, columns)
        fig.add_trace(_pool_trace(frame, show_legend=i == 0), row=row + 1, col=col + 1)
        fig.add_trace(_layer_trace(p, layer.label, i, overlay=False, show_legend=False), row=row + 1, col=col + 1)
    fig.update_layout(height=panel_height * rows, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      hoverlabel={"align": "left"}, showlegend=False, dragmode="pan")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for annotation in fig.layout.annotations:
        annotation.font.size = 13
    return fig


def layer_ids(fig: Any) -> dict[str, list[str]]:
    """Row ids drawn per picks trace of a figure (trace name -> ids): what a test checks against the store."""
    return {t.name: [str(row[0]) for row in t.customdata] for t in fig.data if t.customdata is not None}
