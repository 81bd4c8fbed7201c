"""Plain functions behind the studio's pages: no streamlit here, so tests call them directly.

- map: lasso/box events -> row ids (through customdata), row states, the WebGL scatter, cluster labels;
- review: st.data_editor edits -> decisions, bulk decisions, counters against the budget;
- prompt: every subset's prompt as the run will send it, tokens and cost;
- select: one subset's candidates with picks and reasons, a run's progress read from the store.

Pool and model text is never turned into HTML: hover labels are escaped, tables show text as text.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.select.listwise import Candidate, PromptSpec, presentation_order
from selectllm_core.select.prompts import PRESETS, render

STATE_COLORS = {"not picked": "#cbd5e1", "picked": "#f59e0b", "accepted": "#16a34a", "rejected": "#dc2626"}
DECISION_OPTIONS = ("pending", "accepted", "rejected")
RUN_STATUS_LABELS = {"created": "starting", "running": "in progress", "complete": "complete",
                     "incomplete": "finished, some subsets failed", "interrupted": "stopped before the end"}
# Filler words of instructions that would otherwise label clusters ("did", "given", "following").
FILLER_WORDS = frozenset({"did", "does", "given", "following", "good", "way", "ways", "best", "like", "just", "know",
                          "make", "use", "used", "using", "provided", "based", "thing", "things", "want", "need"})
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
# Answer length per pick, for the cost estimate: an id, or an id with a one-sentence reason.
ANSWER_TOKENS_PER_PICK = {"ids": 3, "json": 40}
ANSWER_TOKENS_OVERHEAD = {"ids": 2, "json": 8}
LEGEND_MAX = 20  # clusters a legend can name; above, colours keep touching clusters apart and numbers go on the map
NO_CLUSTER_COLOR = "#94a3b8"
_WRAPPERS: dict[int, textwrap.TextWrapper] = {}  # one per width: building a TextWrapper costs as much as a wrap


# -- map ------------------------------------------------------------------------------------------
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


def md_escape(text: str) -> str:
    """Text for a markdown element (captions, alerts) that shows as typed: no links, images, code or HTML."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


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


def cluster_summary(instructions: Sequence[str], clusters: np.ndarray, vectors: np.ndarray, *,
                    n_terms: int = 4, n_examples: int = 3) -> pd.DataFrame:
    """Each cluster's size, a short label of its most distinctive terms, and instructions nearest its centre.

    A term's weight in a cluster is its mean TF-IDF in the cluster minus its mean over the pool, so
    words common everywhere ("what", "list") do not label every cluster.

    Returns:
        Columns cluster, size, label, examples (a list of instructions), sorted by cluster. A cluster with no
        distinctive term keeps an empty label, and `frame.attrs["note"]` says which clusters and why ("" when
        every cluster has a label).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    clusters = np.asarray(clusters)
    texts = [str(t) for t in instructions]
    matrix, terms = None, np.array([])
    try:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        vec = TfidfVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | FILLER_WORDS), min_df=2, max_df=0.5,
                              token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
        matrix = vec.fit_transform(texts)
        terms = vec.get_feature_names_out()
    except ValueError:  # no term occurs twice (a tiny pool): the note says so, examples still help
        pass
    overall = np.asarray(matrix.mean(axis=0)).ravel() if matrix is not None else None
    rows = []
    for c in sorted(int(c) for c in np.unique(clusters) if c >= 0):
        members = np.flatnonzero(clusters == c)
        label = ""
        if matrix is not None:
            score = np.asarray(matrix[members].mean(axis=0)).ravel() - overall
            label = ", ".join(terms[i] for i in np.argsort(-score)[:n_terms] if score[i] > 0)
        centre = vectors[members].mean(axis=0)
        nearest = members[np.argsort(-(vectors[members] @ centre))[:n_examples]]
        rows.append({"cluster": c, "size": len(members), "label": label, "examples": [texts[i] for i in nearest]})
    table = pd.DataFrame(rows, columns=["cluster", "size", "label", "examples"])
    blank = table.loc[table["label"] == "", "cluster"].astype(int).tolist()
    table.attrs["note"] = _unlabelled_note(blank, no_vocabulary=matrix is None)
    return table


def _unlabelled_note(blank: list[int], *, no_vocabulary: bool) -> str:
    """Why these clusters have no distinctive terms, in a sentence ("" when none lacks them)."""
    if not blank:
        return ""
    if no_vocabulary:  # every cluster is blank: naming them adds nothing
        why = (f"No distinctive terms for {len(blank)} cluster(s): the instructions share no word that occurs in at "
               "least two of them and in at most half of them (very common words are left out)")
    else:
        names = ", ".join(map(str, blank[:10])) + (", …" if len(blank) > 10 else "")
        why = (f"No distinctive terms for {len(blank)} cluster(s) (cluster{'s' if len(blank) > 1 else ''} {names}): "
               "none of their words occurs more often in them than across the whole pool")
    return why + ". Read their representative instructions instead."


# -- review ---------------------------------------------------------------------------------------
def decisions_from_edits(shown: pd.DataFrame,
                         edited_rows: Mapping[Any, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Turn st.data_editor's `edited_rows` into decisions for the store.

    Args:
        shown: the frame given to the editor (columns id, decision, note; positional rows).
        edited_rows: {row position: {column: new value}} from the editor's session state.

    Returns:
        {row_id: (decision, note)} for the rows whose decision or note changed.
    """
    out: dict[str, tuple[str, str]] = {}
    for pos, change in edited_rows.items():
        row = shown.iloc[int(pos)]
        decision = change.get("decision", row["decision"]) or "pending"
        note = change.get("note", row["note"])
        note = "" if note is None or (isinstance(note, float) and math.isnan(note)) else str(note)
        if decision not in DECISION_OPTIONS:
            raise ValueError(f"unknown decision {decision!r}")
        if (decision, note) != (row["decision"], row["note"]):
            out[str(row["id"])] = (decision, note)
    return out


def bulk_decisions(rows: pd.DataFrame, decision: str) -> dict[str, tuple[str, str]]:
    """The same decision for every given row, keeping each row's note."""
    return {str(i): (decision, str(n or "")) for i, n in zip(rows["id"], rows["note"])}


def budget_counters(selection: pd.DataFrame, budget: int) -> dict[str, int]:
    """Counts a curator checks against the budget."""
    counts = selection["decision"].value_counts() if not selection.empty else pd.Series(dtype=int)
    accepted = int(counts.get("accepted", 0))
    return {"budget": budget, "picked": len(selection), "accepted": accepted,
            "rejected": int(counts.get("rejected", 0)), "pending": int(counts.get("pending", 0)),
            "to_go": max(0, budget - accepted)}


def budget_message(c: dict[str, int]) -> str:
    """What the counters mean for the budget, in words (from `budget_counters`)."""
    head = f"{c['accepted']} of {c['budget']} accepted"
    if c["to_go"] == 0:
        return f"{head}: the budget is filled."
    if c["pending"] >= c["to_go"]:
        return f"{head}; {c['to_go']} more needed, from {c['pending']} picks still to review."
    left = {0: "no picks are", 1: "only 1 pick is"}.get(c["pending"], f"only {c['pending']} picks are")
    return (f"{head}; {c['to_go']} more needed to fill the budget, but {left} left to review. Accept rejected "
            "picks again, or start a run with a larger budget.")


# -- prompt and cost ------------------------------------------------------------------------------
def subset_candidates(pool: pd.DataFrame, members: Sequence[int], cluster_of: np.ndarray, *, subset: int,
                      seed: int, shuffle: bool) -> list[Candidate]:
    """One subset's rows in the order the run shows them (stored plan order, then the seeded shuffle)."""
    ordered = sorted(members, key=lambda p: (int(cluster_of[p]), int(p)))
    rows = [Candidate(str(pool["id"].iat[p]), str(pool["instruction"].iat[p]), str(pool["input"].iat[p]))
            for p in ordered]
    return presentation_order(rows, subset=subset, seed=seed, shuffle=shuffle)


def subset_prompts(pool: pd.DataFrame, subsets: Sequence[Sequence[int]], cluster_of: np.ndarray, *, template: str,
                   k: int, domain: str = "", seed: int = 0, shuffle: bool = True,
                   max_input_chars: int | None = None) -> list[str]:
    """Every subset's prompt exactly as the run will render it (the template must be valid)."""
    spec = PromptSpec(template, domain=domain, max_input_chars=max_input_chars)
    out = []
    for index, members in enumerate(subsets):
        shown = subset_candidates(pool, members, cluster_of, subset=index, seed=seed, shuffle=shuffle)
        k_here = min(k, len(shown) - 1)
        if k_here >= 1:
            rows = [(c.instruction, spec.shown_input(c.input)) for c in shown]
            out.append(render(template, rows, k=k_here, domain=domain))
    return out


@dataclass(frozen=True)
class CostEstimate:
    """Tokens and money for a whole run, before any repair retries."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    prompt_exact: bool
    cost: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_cost(prompts: Sequence[str], *, k: int, answer_format: str, price_per_1k: float,
                  count_tokens: Callable[[str], int | None] | None = None) -> CostEstimate:
    """Tokens and cost of sending these prompts once each.

    Args:
        prompts: every subset's prompt (from `subset_prompts`).
        k: picks per subset (sizes the answers).
        answer_format: "json" (picks with reasons) or "ids".
        price_per_1k: money per 1,000 tokens, prompt and answer alike.
        count_tokens: the backend's exact counter; None or a None answer means the 4-characters estimate.

    Returns:
        A CostEstimate; prompt_exact tells whether prompt tokens were counted by the model's tokenizer.
    """
    from selectllm_core.select.prompts import estimate_tokens

    counts = [count_tokens(p) if count_tokens else None for p in prompts]
    exact = bool(prompts) and all(c is not None for c in counts)
    prompt_tokens = sum(c if c is not None else estimate_tokens(p) for c, p in zip(counts, prompts))
    per_answer = ANSWER_TOKENS_PER_PICK.get(answer_format, 40) * k + ANSWER_TOKENS_OVERHEAD.get(answer_format, 8)
    completion = per_answer * len(prompts)
    cost = (prompt_tokens + completion) / 1000 * price_per_1k
    return CostEstimate(len(prompts), prompt_tokens, completion, exact, cost)


def template_ref(template: str, *, folder: Path) -> str:
    """What RunConfig.prompt takes: a preset's name when the text is a preset, else a saved template file."""
    for name, preset in PRESETS.items():
        if template == preset.template:
            return name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"template-{hashlib.sha256(template.encode()).hexdigest()[:12]}.txt"
    if not path.exists():
        path.write_text(template, encoding="utf-8")
    return str(path)


# -- export ---------------------------------------------------------------------------------------
EXPORT_MIME = {"csv": "text/csv", "jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet",
               "labelstudio": "application/json", "zip": "application/zip"}


@dataclass(frozen=True)
class ExportFile:
    """One download: the data file (or a zip of batches and manifest) and the manifest beside it."""

    name: str
    data: bytes
    mime: str
    manifest_name: str
    manifest: bytes


def export_bytes(store: Any, run_id: str, *, fmt: str = "csv", which: str = "selected",
                 batch_size: int | None = None) -> ExportFile:
    """What the Export page serves: `pipeline.export_run` into a temp folder, read back byte for byte.

    A single file is served as written (the same bytes `selectllm export` writes); batches come as one zip
    holding every batch file and the manifest.
    """
    import io
    import tempfile
    import zipfile

    from selectllm_core.pipeline import export_run

    with tempfile.TemporaryDirectory() as tmp:
        res = export_run(store, run_id, Path(tmp), fmt=fmt, which=which, batch_size=batch_size, record=False)
        manifest = res.manifest_path.read_bytes()
        if len(res.files) == 1:
            only = res.files[0]
            return ExportFile(only.name, only.read_bytes(), EXPORT_MIME[fmt], res.manifest_path.name, manifest)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [*res.files, res.manifest_path]:
                zf.write(path, path.name)
        return ExportFile(f"selectllm-{run_id}-{fmt}-batches.zip", buffer.getvalue(), EXPORT_MIME["zip"],
                          res.manifest_path.name, manifest)


# -- select ---------------------------------------------------------------------------------------
def subset_table(result: Mapping[str, Any], pool_by_id: pd.DataFrame) -> pd.DataFrame:
    """A subset's candidates in the order the model saw them, with pick order and reasons beside them.

    Args:
        result: one entry of Store.subset_results (members in shown order, picks, reasons).
        pool_by_id: the pool frame indexed by id.

    Returns:
        Columns "#" (the id the model saw), pick (1.., empty when passed over), instruction, reason, input, id.
    """
    picks = {rid: n for n, rid in enumerate(result.get("picks") or [], start=1)}
    reasons = result.get("reasons") or {}
    rows = pool_by_id.loc[list(result["members"]), ["instruction", "input"]]
    return pd.DataFrame({
        "#": range(1, len(rows) + 1), "pick": pd.array([picks.get(i) for i in rows.index], dtype="Int64"),
        "instruction": rows["instruction"].to_numpy(), "reason": [reasons.get(i, "") for i in rows.index],
        "input": rows["input"].to_numpy(), "id": list(rows.index)})


@dataclass(frozen=True)
class RunProgress:
    """A run's state as the store has it: subsets answered out of the plan."""

    total: int
    done: int
    counts: dict[str, int]
    status: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def label(self) -> str:
        """The run's status in a curator's words."""
        return RUN_STATUS_LABELS.get(self.status, self.status)


def run_progress(store: Any, run_id: str) -> RunProgress | None:
    """Progress of a run from the store (None while the run is not recorded yet)."""
    from selectllm_core.errors import WorkspaceError

    try:
        run = store.get_run(run_id)
    except WorkspaceError:
        return None
    counts: dict[str, int] = {}
    for r in store.subset_results(run_id):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = sum(counts.values())
    total = int(run["params"].get("budget_plan", {}).get("n_subsets", 0)) or done  # other methods have no plan
    return RunProgress(total=total, done=done, counts=counts, status=run["status"])


def default_budget(pool_size: int) -> int:
    """A first budget to try: a tenth of the pool (at least 2 rows, at most the paper's 3,000)."""
    return int(min(3000, max(2, pool_size // 10)))
