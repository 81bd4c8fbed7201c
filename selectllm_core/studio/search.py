"""Finding rows: full-text search over a pool (SQLite FTS5) and "more like this" by embedding similarity.

The full-text index is an in-memory SQLite FTS5 table built once per pool (the app keeps one per pool in its
resource cache): instruction and input are indexed with the `unicode61` tokenizer, diacritics folded, and
matches are ranked by BM25. Building it for 20,000 rows takes a fraction of a second, and it leaves the
workspace file untouched (a search never writes).

What the curator types is turned into a query that cannot be an FTS5 syntax error: words are matched as
terms (all of them must occur), `"quoted phrases"` as phrases, and a word ending in `*` as a prefix.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence

import numpy as np
import pandas as pd

from selectllm_core.errors import ConfigError

SEARCH_PLACEHOLDER = 'words, "a phrase", prefix*'
SEARCH_HELP = "Full-text search of instruction and input (every word must occur; accents ignored)."
SIMILARITY_HELP = "Cosine similarity of the two rows' embeddings: 1 = the same meaning, 0 = unrelated."
_TOKEN = re.compile(r'"([^"]+)"|(\S+)')
_WORD = re.compile(r"[\w']+", re.UNICODE)


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression for what the curator typed ("" when nothing searchable is left)."""
    parts = []
    for phrase, word in _TOKEN.findall(text or ""):
        if phrase:
            words = _WORD.findall(phrase)
            if words:
                parts.append('"' + " ".join(w.replace('"', "") for w in words) + '"')
            continue
        prefix = word.endswith("*")
        for w in _WORD.findall(word):
            parts.append(f'"{w}"' + ("*" if prefix else ""))
    return " AND ".join(parts)


class PoolIndex:
    """A full-text index of one pool's rows (id, instruction, input), searchable from any thread.

    Args:
        frame: the pool frame (columns id, instruction, input).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("CREATE VIRTUAL TABLE rows USING fts5(id UNINDEXED, instruction, input, "
                         "tokenize = 'unicode61 remove_diacritics 2')")
        self._db.executemany("INSERT INTO rows VALUES (?, ?, ?)", zip(
            frame["id"].astype(str), frame["instruction"].astype(str), frame["input"].astype(str)))
        self.size = len(frame)

    def search(self, text: str, *, limit: int | None = None) -> pd.DataFrame:
        """Rows matching what the curator typed, best first.

        Returns:
            Columns id, rank (1 = best, BM25), snippet (a few words of the instruction, or of the input when
            the match is there), then instruction and input in full; matches are marked «like this». No rows
            when nothing matches or nothing searchable was typed.
        """
        columns = ["id", "rank", "snippet", "instruction", "input"]
        query = fts_query(text)
        if not query:
            return pd.DataFrame(columns=columns)
        sql = ("SELECT id, snippet(rows, -1, '«', '»', '…', 16), highlight(rows, 1, '«', '»'), "
               "highlight(rows, 2, '«', '»') FROM rows WHERE rows MATCH ? ORDER BY bm25(rows)"
               + (" LIMIT ?" if limit else ""))
        with self._lock:
            found = self._db.execute(sql, (query, limit) if limit else (query,)).fetchall()
        frame = pd.DataFrame(found, columns=["id", "snippet", "instruction", "input"])
        return frame.assign(rank=range(1, len(found) + 1))[columns]


def more_like_this(vectors: np.ndarray, ids: Sequence[str], seeds: Sequence[str], *, k: int = 10) -> pd.DataFrame:
    """The k rows nearest to a row, or to the mean of a lasso selection, by cosine similarity of embeddings.

    Args:
        vectors: the pool's unit embeddings, one row per pool row (in `ids` order).
        ids: the pool's row ids.
        seeds: the row (or rows) to start from; they are left out of the answer.
        k: neighbours wanted.

    Returns:
        Columns id and similarity (cosine, 1 = same direction), most similar first.
    """
    position = {rid: p for p, rid in enumerate(ids)}
    missing = [s for s in seeds if s not in position]
    if not seeds or missing:
        raise ConfigError(f"More like this needs rows of this pool; not in it: {', '.join(map(str, missing[:5]))}"
                          if missing else "More like this needs a row: choose one, or lasso some on the map.")
    centre = vectors[[position[s] for s in seeds]].mean(axis=0)
    centre = centre / (np.linalg.norm(centre) or 1.0)
    sims = vectors @ centre
    sims[[position[s] for s in seeds]] = -np.inf
    k = min(k, len(ids) - len(set(seeds)))
    top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.array([], dtype=int)
    top = top[np.argsort(-sims[top], kind="stable")]
    return pd.DataFrame({"id": [ids[i] for i in top], "similarity": sims[top].astype(float)})


def found_rows(frame: pd.DataFrame, hits: pd.DataFrame) -> pd.DataFrame:
    """The pool rows of search hits or neighbours, in the hits' order.

    Args:
        frame: the pool frame (column id, then instruction, input, any extra columns; text is left out).
        hits: from `PoolIndex.search` (its marked instruction and input stay) or `more_like_this`.

    Returns:
        The hits' columns, then the frame's other columns for each hit's row.
    """
    rows = frame.drop(columns=["text", *hits.columns], errors="ignore").set_index(frame["id"].astype(str))
    return hits.reset_index(drop=True).join(rows, on="id")


def match_caption(matched: int, rows: int, *, shown: int) -> str:
    """How many rows a search matched and how many of them are listed."""
    if not matched:
        return f"No row of the {rows:,} matches. Every word typed must occur in the instruction or the input."
    listed = f"the best {shown:,} are listed" if shown < matched else "best first"
    return f"{matched:,} of {rows:,} rows match ({listed}); «marks» show the words found."


def not_embedded(model_id: str) -> str:
    """Why "more like this" waits, and what gives it the embeddings."""
    return (f"More like this compares embeddings, and this pool is not embedded with {model_id} yet. "
            "The Map page embeds it (and caches the vectors); or embed it here.")
