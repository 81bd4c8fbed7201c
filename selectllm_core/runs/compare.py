"""Side-by-side comparison of two or more runs on the same pool.

Per run: overlap with every other run (Jaccard), coverage (mean and max cosine distance from every pool row to
its nearest selected row; lower is better), cluster balance (entropy of the selected rows over one shared set of
clusters), instruction length (mean, median, p90 of instruction + input characters), and LLM calls, tokens and
estimated cost. For every listwise run (SelectLLM), a position-bias report: how often each shown position was
picked against what a uniform choice would give, with a chi-square test. Formulas: docs/methods.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts
from selectllm_core.errors import ConfigError
from selectllm_core.methods import METHODS, row_lengths, setting
from selectllm_core.runs.picks import selection_frame
from selectllm_core.select.orders import run_consistency
from selectllm_core.split import equal_size_kmeans
from selectllm_core.store import Store


@dataclass
class Comparison:
    """The comparison of some runs: one table row per run (and a pool reference row), overlap, position bias."""

    pool_id: str
    table: pd.DataFrame
    overlap: pd.DataFrame
    position_bias: pd.DataFrame
    position_counts: dict[str, pd.DataFrame]
    cluster_source: str
    notes: list[str] = field(default_factory=list)


# -- the measures, each on plain arrays ------------------------------------------------------------------------
def jaccard(a: set, b: set) -> float:
    """|A n B| / |A u B| (1.0 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def coverage(vectors: np.ndarray, selected: np.ndarray, *, chunk: int = 4096) -> tuple[float, float]:
    """Mean and max, over every row, of the cosine distance (1 - dot of unit vectors) to its nearest selected row."""
    if len(selected) == 0:
        return math.nan, math.nan
    chosen = vectors[selected]
    nearest = np.empty(len(vectors))
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ chosen.T
        nearest[start : start + chunk] = np.clip(1.0 - sims.max(axis=1), 0.0, 2.0)
    return float(nearest.mean()), float(nearest.max())


def cluster_entropy(labels: np.ndarray, n_clusters: int) -> tuple[float, float]:
    """Entropy in bits of the selected rows' cluster labels, and that entropy over log2(n_clusters) (evenness)."""
    if len(labels) == 0 or n_clusters < 1:
        return math.nan, math.nan
    p = np.bincount(labels, minlength=n_clusters) / len(labels)
    p = p[p > 0]
    bits = float(-(p * np.log2(p)).sum()) + 0.0
    return bits, (bits / math.log2(n_clusters) if n_clusters > 1 else math.nan)


def length_stats(lengths: np.ndarray) -> tuple[float, float, float]:
    """Mean, median and 90th percentile (linear interpolation) of lengths."""
    if len(lengths) == 0:
        return math.nan, math.nan, math.nan
    return float(np.mean(lengths)), float(np.median(lengths)), float(np.percentile(lengths, 90))


def position_bias(results: list[dict]) -> dict:
    """Picks per shown position (1-based) against a uniform choice, over a listwise run's usable subsets.

    A subset shown in several orders (or checked in reversed order) counts each usable answer in its own order.

    A subset of n rows with k picks expects k / n picks at each of its n positions; the expected count of a
    position sums that over the subsets long enough to have it, so observed and expected totals match.

    Returns:
        observed and expected arrays (index 0 = position 1), chi2 and p_value (scipy.stats.chisquare with those
        expected counts), subsets and picks counted, and min_expected (the test is rough below 5).
    """
    from scipy.stats import chisquare

    usable = [r for r in results if r["status"] == "ok" and r["picks"]]
    # each answer as shown: a subset asked in several orders (or checked in reverse) counts every usable order
    views = [(o["shown"], o["picks"]) for r in usable for o in (r.get("orders") or []) if o.get("picks")]
    views += [(r["members"], r["picks"]) for r in usable if not r.get("orders")]
    size = max((len(shown) for shown, _ in views), default=0)
    observed, expected = np.zeros(size), np.zeros(size)
    for shown, picks in views:
        n, k = len(shown), len(picks)
        expected[:n] += k / n
        for pick in picks:
            observed[shown.index(pick)] += 1
    out = {"observed": observed, "expected": expected, "subsets": len(usable), "picks": int(observed.sum()),
           "chi2": math.nan, "p_value": math.nan, "min_expected": float(expected.min()) if size else math.nan}
    if size >= 2:
        test = chisquare(observed, expected)
        out.update(chi2=float(test.statistic), p_value=float(test.pvalue))
    return out


# -- the comparison of stored runs ----------------------------------------------------------------------------
def compare_runs(
    store: Store, run_ids: list[str], *, embedder: Any = None, cache: EmbeddingCache | None = None,
    clusters: str | np.ndarray = "auto", n_clusters: int = 20, seed: int = 0,
    which: str = "all",
) -> Comparison:
    """Compare two or more runs of the same pool.

    Args:
        store: the workspace.
        run_ids: the runs (two or more, one pool).
        embedder: embeds the pool for coverage (default: the bundled all-MiniLM-L6-v2; cached vectors are reused).
        cache: the embedding cache (default: from the environment).
        clusters: "auto" (the first SelectLLM run's plan clusters, else shared k-means), "kmeans", a run id
            whose plan holds clusters, or an array of cluster labels per pool row.
        n_clusters: clusters of the shared equal-size k-means.
        seed: seeds the shared k-means.
        which: picks compared: "all" (default), "selected" (not rejected) or "accepted".

    Returns:
        A Comparison; `to_markdown` prints it.
    """
    # 1. runs and their pool
    runs = _runs(store, run_ids)
    pool = store.load_pool(runs[0]["pool_id"])
    frame = pool.frame
    position = {rid: p for p, rid in enumerate(frame["id"])}
    picked = {r["run_id"]: np.array([position[i] for i in selection_frame(store, r["run_id"], which=which)["id"]],
                                    dtype=np.int64) for r in runs}
    # 2. shared measures: embeddings, clusters, lengths
    vectors = embed_texts(frame["text"].tolist(), embedder=embedder or SentenceTransformerEmbedder(),
                          cache=cache or EmbeddingCache()).vectors
    labels, k, source = _clusters(store, runs, frame, vectors, clusters, n_clusters, seed)
    lengths = row_lengths(frame)
    # 3. one row per run, and the pool as a reference
    rows = [_pool_row(len(frame), labels, k, lengths)]
    for run in runs:
        rows.append(_run_row(store, run, picked[run["run_id"]], vectors, labels, k, lengths))
    table = pd.DataFrame(rows)
    ids = [r["run_id"] for r in runs]
    sets = {rid: set(picked[rid].tolist()) for rid in ids}
    overlap = pd.DataFrame([[jaccard(sets[a], sets[b]) for b in ids] for a in ids], index=ids, columns=ids)
    bias, counts = _bias(store, runs)
    notes = [f"clusters: {source}", "coverage: cosine distance from every pool row to its nearest pick (lower is "
             "better)", "cost: money the ledger recorded for the run's calls (the workspace's price table; "
             "answers from the response cache cost nothing; empty: a model with no price)"]
    if not bias.empty and (bias["min_expected"] < 5).any():
        notes.append("position bias: some positions expect fewer than 5 picks, so the chi-square p-value is rough")
    for row in bias.to_dict("records") if not bias.empty else []:
        if row["at_chance"]:
            notes.append(f"order consistency: run {row['run']}: this model's picks are no better than random here "
                         f"({row['order_consistency']:.2f} against chance {row['chance']:.2f})")
    if not bias.empty and bias["order_consistency"].isna().any():
        notes.append("order consistency: empty for runs shown in one order and not checked (`selectllm "
                     "check-orders RUN_ID` re-asks a few subsets reversed)")
    return Comparison(pool_id=pool.pool_id, table=table, overlap=overlap, position_bias=bias,
                      position_counts=counts, cluster_source=source, notes=notes)


def _runs(store: Store, run_ids: list[str]) -> list[dict]:
    """The stored runs, checked: at least two, distinct, one pool."""
    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise ConfigError("Compare needs two or more different runs: list them with `selectllm runs`.")
    runs = [store.get_run(rid) for rid in ids]
    pools = {r["pool_id"] for r in runs}
    if len(pools) > 1:
        raise ConfigError(f"These runs use different pools ({', '.join(sorted(pools))}): compare runs of one pool.")
    return runs


def _clusters(store: Store, runs: list[dict], frame: pd.DataFrame, vectors: np.ndarray, clusters: Any,
              n_clusters: int, seed: int) -> tuple[np.ndarray, int, str]:
    """Cluster label per pool row, the number of clusters, and where they came from."""
    if isinstance(clusters, np.ndarray):
        labels = clusters.astype(np.int64)
        if len(labels) != len(frame) or labels.min() < 0:
            raise ConfigError("Cluster labels must give one label >= 0 per pool row.")
        return labels, int(labels.max()) + 1, "labels given by the caller"
    if clusters == "auto":
        listwise = [r["run_id"] for r in runs if _listwise(r)]
        clusters = next((rid for rid in listwise if (store.plan(rid)["cluster"] >= 0).all()), "kmeans")
    if clusters == "kmeans":
        return _shared_kmeans(vectors, n_clusters, seed)
    plan = store.plan(clusters)
    by_id = dict(zip(plan["id"], plan["cluster"], strict=True))
    labels = frame["id"].map(by_id)
    if labels.isna().any() or (labels < 0).any():
        raise ConfigError(f"Run {clusters} has no cluster for every pool row: use --clusters kmeans.")
    labels = labels.to_numpy(dtype=np.int64)
    return labels, int(labels.max()) + 1, f"plan of run {clusters} ({int(labels.max()) + 1} clusters)"


def _shared_kmeans(vectors: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, int, str]:
    """Equal-size k-means of the pool, padded with its first rows to a multiple of n_clusters (as the paper)."""
    n = len(vectors)
    if not 1 <= n_clusters <= n:
        raise ConfigError(f"--n-clusters must be between 1 and the pool size {n} (got {n_clusters}).")
    cells = math.ceil(n / n_clusters) * n_clusters
    source = np.concatenate([np.arange(n), np.arange(cells - n) % n])
    result = equal_size_kmeans(vectors[source], n_clusters=n_clusters, random_state=seed)
    labels = np.asarray(result.labels, dtype=np.int64)[:n]
    return labels, n_clusters, f"equal-size k-means of the pool ({n_clusters} clusters, seed {seed})"


def run_setting(run: dict) -> str:
    """The parameters that tell runs of one method apart (declared with `setting=True` in the registry)."""
    return setting(run)


def _listwise(run: dict) -> bool:
    method = METHODS.get(run["method"])
    return bool(method and method.listwise)


def _pool_row(n: int, labels: np.ndarray, k: int, lengths: np.ndarray) -> dict:
    """The reference row: the whole pool."""
    bits, even = cluster_entropy(labels, k)
    mean, median, p90 = length_stats(lengths)
    return {"run": "(pool)", "method": "", "setting": "", "selected": n, "coverage_mean": 0.0, "coverage_max": 0.0,
            "entropy_bits": bits, "evenness": even, "len_mean": mean, "len_median": median, "len_p90": p90,
            "llm_calls": 0, "tokens": 0, "cost": 0.0}


def _run_row(store: Store, run: dict, picked: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int,
             lengths: np.ndarray) -> dict:
    """Every measure of one run."""
    cov_mean, cov_max = coverage(vectors, picked)
    bits, even = cluster_entropy(labels[picked], k)
    mean, median, p90 = length_stats(lengths[picked])
    usage = store.usage(run["run_id"])
    tokens = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
    return {"run": run["run_id"], "method": run["method"], "setting": run_setting(run), "selected": len(picked),
            "coverage_mean": cov_mean, "coverage_max": cov_max, "entropy_bits": bits, "evenness": even,
            "len_mean": mean, "len_median": median, "len_p90": p90, "llm_calls": int(usage["calls"]),
            "tokens": tokens, "cost": float("nan") if usage["unpriced"] else usage["cost"]}


def _bias(store: Store, runs: list[dict]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Position-bias summary per listwise run, and its per-position counts."""
    rows, counts = [], {}
    for run in runs:
        if not _listwise(run):
            continue
        results = store.subset_results(run["run_id"])
        b, c = position_bias(results), run_consistency(results)
        top = int(np.argmax(b["observed"])) + 1 if b["picks"] else None
        rows.append({"run": run["run_id"], "shuffle": run["params"].get("shuffle", True),
                     "orders": run["params"].get("orders", 1),
                     "order_consistency": math.nan if c.value is None else c.value, "chance": c.chance,
                     "at_chance": c.at_chance, "subsets": b["subsets"],
                     "picks": b["picks"], "chi2": b["chi2"], "p_value": b["p_value"], "top_position": top,
                     "top_share": b["observed"].max() / b["picks"] if b["picks"] else math.nan,
                     "uniform_share": 1 / len(b["observed"]) if len(b["observed"]) else math.nan,
                     "min_expected": b["min_expected"]})
        counts[run["run_id"]] = pd.DataFrame({"position": np.arange(1, len(b["observed"]) + 1),
                                              "observed": b["observed"].astype(int), "expected": b["expected"]})
    return pd.DataFrame(rows), counts


# -- printing -------------------------------------------------------------------------------------------------
def markdown_table(frame: pd.DataFrame, *, digits: int = 3, index: bool = False) -> str:
    """A pipe table (no extra dependency); floats rounded to `digits` decimals, NaN shown as a dash."""
    frame = frame.reset_index() if index else frame

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(c: Comparison) -> str:
    """The whole comparison as markdown: measures, overlap, position bias, notes."""
    parts = [f"### Runs compared on pool {c.pool_id}", markdown_table(c.table),
             "### Overlap (Jaccard)", markdown_table(c.overlap.rename_axis("run"), index=True)]
    if not c.position_bias.empty:
        bias = c.position_bias.assign(p_value=c.position_bias["p_value"].map(lambda p: f"{p:.2g}"))
        parts += ["### Position bias (listwise runs)", markdown_table(bias)]
        merged = None
        for run_id, counts in c.position_counts.items():
            col = counts.set_index("position").apply(lambda r: f"{r.observed:.0f} ({r.expected:.1f})", axis=1)
            merged = col.rename(run_id).to_frame() if merged is None else merged.join(col.rename(run_id), how="outer")
        parts += ["Picks per shown position: observed (expected if uniform)",
                  markdown_table(merged.fillna("–").rename_axis("position"), index=True)]
    parts += ["\n".join(f"- {n}" for n in c.notes)]
    return "\n\n".join(parts)
