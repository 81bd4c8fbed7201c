"""Cluster labels for the Map page: each cluster's size, its most distinctive terms and its central instructions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Filler words of instructions that would otherwise label clusters ("did", "given", "following").
FILLER_WORDS = frozenset({"did", "does", "given", "following", "good", "way", "ways", "best", "like", "just", "know",
                          "make", "use", "used", "using", "provided", "based", "thing", "things", "want", "need"})


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



def short_names(table: pd.DataFrame, *, terms: int = 2) -> dict[int, str]:
    """A legend name per cluster of a `cluster_summary` table: its first few distinctive terms ("" when none)."""
    return {int(c): ", ".join(label.split(", ")[:terms]) for c, label in zip(table["cluster"], table["label"])}
