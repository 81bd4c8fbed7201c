"""Near-duplicate groups: rows whose embeddings are at least τ cosine-similar, found exactly, grouped for curators.

    dups = pool_near_duplicates(pool, tau=0.95)          # embeds through the cache, or pass vectors=
    print(dups.summary)                                  # "3 near-duplicate groups at cosine ≥ 0.95 hold ..."
    smaller = keep_one_per_group(pool, dups)             # a pool of its own: Store.save_pool(smaller)

**The library: faiss, `IndexFlatIP.range_search`.** On unit vectors the inner product is the cosine, and a
range search returns every pair above a threshold: exactly "all pairs with cosine ≥ τ", with no pair missed.
It is a blocked BLAS matrix product: from a few thousand rows on it is faster than a numpy similarity matrix
(about 2x at 15.7k rows) and never holds the n x n matrix (1 GB at 15.7k rows, 38 GB at 100k; measured in
benchmarks/README.md, "Near-duplicate groups"). usearch and hnswlib are approximate k-nearest-neighbour
indexes: a pair can be missed, and their k caps a group at k rows. For the pools a curator annotates from, the exact search takes seconds up to about 20k rows and a minute or two at 100k, once
per pool and τ: its result is cached on disk, keyed by the vectors and τ (read back in under a second).

**The groups: a star around the first row, in pool order.** Rows are visited in pool order; a row that no
group has taken yet and that has untaken rows at cosine ≥ τ keeps them all as its group, and is the row kept
(the first of the group). So (1) every other row of a group is at least τ similar to the kept row, which
stands in for it, and (2) no two kept rows are τ similar: keeping one per group leaves no near-duplicate pair,
and searching the result again finds none. Connected components of the ≥ τ graph (single link) would chain:
A ~ B ~ C puts A and C in one group even when they are not alike, and keeping one of them would drop rows that
nothing kept resembles. Complete link needs every pair ≥ τ, which is NP-hard to cover well and splits chains
arbitrarily. The first row in pool order is kept, as the loader keeps the first of exact duplicates: the
choice is predictable, and a curator who sorts the pool decides it.

**Beside the exact duplicates.** The loader drops exact duplicates (same instruction and input) before anything
is embedded and counts them in `PoolReport.duplicates_dropped`. The rows searched here are the rows kept, so
every near-duplicate pair differs in its text: the two counts never overlap, and their sum is what a curator
removes. A pair whose texts differ only in spacing or case shows up here, at a similarity near 1.

What τ cannot see: the embedding reads meaning loosely. On the real Dolly rows, "What coloring of cat is almost
always male?" and "... female?" are at least 0.95 similar, and two questions about one long shared input look alike
through it. So the pages and the CLI show the groups before anything is dropped.

Similarities are float32 dot products: a pair counts when its cosine is at least τ - 1e-6, so τ = 1 finds
vectors that are equal up to rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from selectllm_core.embed.cache import Embedder, EmbeddingCache, default_cache_dir, embed_texts, text_key
from selectllm_core.embed.minilm import SentenceTransformerEmbedder
from selectllm_core.errors import ConfigError
from selectllm_core.pool.load import Pool

DEFAULT_TAU = 0.95
EPS = 1e-6  # float32 rounding of a dot product of unit vectors
LIBRARY = f"faiss {faiss.__version__} IndexFlatIP.range_search (exact)"
FORMAT = 1  # of the cached result files; part of their key
_FIRST_BLOCK, _MAX_BLOCK, _HITS_PER_BLOCK = 256, 4096, 2_000_000  # queries per search; hits held at once


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate groups of a pool at one τ: each group's kept row first, then the rows it stands in for.

    Attributes:
        tau: the cosine similarity threshold.
        rows: rows searched.
        groups: row ids per group, the kept row first, then the others in pool order.
        similarity: per group, each other row's cosine similarity to the kept row (aligned with groups[g][1:]).
        seconds: time of the search and the grouping (of the first computation when read from the cache).
        library: what searched.
        from_cache: read from the result cache rather than computed now.
    """

    tau: float
    rows: int
    groups: tuple[tuple[str, ...], ...]
    similarity: tuple[tuple[float, ...], ...]
    seconds: float
    library: str = LIBRARY
    from_cache: bool = False

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def rows_in_groups(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def kept(self) -> tuple[str, ...]:
        """The row each group keeps (its first)."""
        return tuple(g[0] for g in self.groups)

    @property
    def dropped(self) -> tuple[str, ...]:
        """The rows "keep one per group" drops: every row of a group but its first."""
        return tuple(i for g in self.groups for i in g[1:])

    @property
    def n_dropped(self) -> int:
        return self.rows_in_groups - self.n_groups

    @property
    def summary(self) -> str:
        """One sentence: how many groups, rows and rows dropped by keeping one per group."""
        at = f"cosine ≥ {self.tau:g}"
        if not self.groups:
            return f"No near-duplicates at {at} among {self.rows:,} rows."
        groups = f"{self.n_groups:,} near-duplicate group{'s' if self.n_groups != 1 else ''}"
        return (f"{groups} at {at} hold{'s' if self.n_groups == 1 else ''} {self.rows_in_groups:,} of {self.rows:,} "
                f"rows; keeping one per group "
                f"drops {self.n_dropped:,}.")


def check_tau(tau: float) -> float:
    """τ as a float in (0, 1], or a ConfigError that says how to fix it."""
    if isinstance(tau, bool) or not isinstance(tau, int | float | np.floating) or not math.isfinite(tau) \
            or not 0 < tau <= 1:
        raise ConfigError(f"The near-duplicate threshold τ must be a cosine similarity above 0 and at most 1 "
                          f"(got {tau!r}). Pass a number such as {DEFAULT_TAU} (--near-dup-tau {DEFAULT_TAU}); "
                          "higher finds fewer, closer pairs.")
    return float(tau)


def near_duplicate_groups(vectors: np.ndarray, ids: Sequence[str], *, tau: float = DEFAULT_TAU) -> NearDuplicates:
    """Group the rows whose vectors are at least τ cosine-similar (exact search; stars in pool order).

    Args:
        vectors: one embedding per row, in pool order (normalised here if they are not unit vectors).
        ids: the row ids, in the same order.
        tau: cosine similarity threshold, 0 < τ ≤ 1.

    Returns:
        NearDuplicates; `dropped` lists the rows keeping one per group would remove.

    Raises:
        ConfigError: τ out of range, or vectors that are not one finite, non-zero row per id.
    """
    # 1. validate
    tau = check_tau(tau)
    x = unit_rows(vectors, n_ids=len(ids))
    # 2. search and group
    clock = time.perf_counter()
    stars = star_groups(x, tau)
    return _result(stars, [str(i) for i in ids], tau, time.perf_counter() - clock)


def unit_rows(vectors: np.ndarray, *, n_ids: int) -> np.ndarray:
    """Vectors as a C-contiguous float32 (n, d) array of unit rows; a ConfigError names what is wrong."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) != n_ids or (n_ids and x.shape[1] == 0):
        raise ConfigError(f"Near-duplicate search needs one vector per row: {n_ids:,} ids but vectors of shape "
                          f"{x.shape}. Embed the pool's `text` column (embed_texts) and pass its vectors.")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ConfigError(f"{len(bad):,} vector(s) hold NaN or infinity (first: row {bad[0]}). Embed the pool "
                          "again with a working model; the cache keeps only what the embedder returned.")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ConfigError(f"Row {int(np.argmax(norms == 0))} has a zero vector, which has no direction to compare. "
                          "Check the embedder: it should return unit vectors.")
    if not np.allclose(norms, 1.0, atol=1e-3):
        x = x / norms[:, None]
    return np.ascontiguousarray(x)


def star_groups(x: np.ndarray, tau: float) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Stars in pool order over unit rows: (kept position, other positions, their similarities) per group.

    Queries go in blocks of the rows not yet taken, sized so a block's hits stay near _HITS_PER_BLOCK (a pool
    of one template, where every row matches every other, holds one block's hits, not n x n of them).
    """
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    taken, groups = np.zeros(len(x), dtype=bool), []
    start, block = 0, _FIRST_BLOCK
    while start < len(x):
        queries = np.flatnonzero(~taken[start:start + block]) + start
        start += block
        if not len(queries):
            continue
        lims, sims, hits = index.range_search(x[queries], tau - EPS)
        lims = lims.astype(np.int64)
        owner = np.repeat(np.arange(len(queries)), np.diff(lims))
        for q in np.unique(owner[hits != queries[owner]]):  # the queries that match a row other than themselves
            row = queries[q]
            if taken[row]:
                continue
            h, s = hits[lims[q]:lims[q + 1]], sims[lims[q]:lims[q + 1]]
            # rows before it that were free have been visited and found it no match: only later rows join
            mine = (h > row) & ~taken[h]
            if mine.any():
                order = np.argsort(h[mine], kind="stable")
                groups.append((int(row), h[mine][order], s[mine][order]))
                taken[row] = True
                taken[h[mine]] = True
        block = int(np.clip(_HITS_PER_BLOCK * len(queries) / max(1, len(hits)), 16, _MAX_BLOCK))
    return groups


def _result(stars: list[tuple[int, np.ndarray, np.ndarray]], ids: list[str], tau: float, seconds: float,
            *, from_cache: bool = False) -> NearDuplicates:
    """NearDuplicates from positional stars."""
    groups = tuple((ids[k], *(ids[int(p)] for p in others)) for k, others, _ in stars)
    sims = tuple(tuple(round(min(1.0, float(s)), 4) for s in values) for _, _, values in stars)
    return NearDuplicates(tau, len(ids), groups, sims, seconds, from_cache=from_cache)


# --- a pool, at embed time ---------------------------------------------------------------------------------------


def cached_pool_vectors(pool: Pool, *, model_id: str, cache: EmbeddingCache | None = None) -> np.ndarray | None:
    """The pool's vectors when the cache holds every row's (None when any is missing: nothing is embedded)."""
    cache = cache or EmbeddingCache()
    keys = [text_key(t) for t in pool.frame["text"]]
    found = cache.get_many(model_id, keys)
    if len(found) < len(set(keys)):
        return None
    return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def pool_near_duplicates(
    pool: Pool,
    *,
    tau: float = DEFAULT_TAU,
    vectors: np.ndarray | None = None,
    embedder: Embedder | None = None,
    cache: EmbeddingCache | None = None,
    cache_root: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> NearDuplicates:
    """A pool's near-duplicate groups, from its vectors (given, or embedded through the cache), cached on disk.

    Args:
        pool: a loaded or stored pool.
        tau: cosine similarity threshold, 0 < τ ≤ 1.
        vectors: the pool's vectors in row order, when the caller has them (the map, a run); else embedded.
        embedder: used only without `vectors` (default: the bundled all-MiniLM-L6-v2).
        cache: the embedding cache (default: the cache folder from the environment).
        cache_root: where results are cached, keyed by the vectors and τ (default: the cache folder).
        progress: called with (done, total) after each embedding batch the cache lacked.

    Returns:
        NearDuplicates (`from_cache` says whether the search ran now).
    """
    # 1. the vectors, as the run will see them
    tau = check_tau(tau)
    if vectors is None:
        vectors = embed_texts(pool.frame["text"].tolist(), embedder=embedder or SentenceTransformerEmbedder(),
                              cache=cache, progress=progress).vectors
    ids = pool.frame["id"].astype(str).tolist()
    x = unit_rows(vectors, n_ids=len(ids))
    # 2. the result cache, keyed by the vectors' bytes and τ
    path = _result_file(cache_root, _result_key(x, tau))
    found = _read_result(path, ids, tau)
    if found is not None:
        return found
    # 3. search, then store
    dups = near_duplicate_groups(x, ids, tau=tau)
    _store_result(path, dups, ids)
    return dups


def cached_near_duplicates(pool: Pool, *, vectors: np.ndarray, tau: float = DEFAULT_TAU,
                           cache_root: Path | str | None = None) -> NearDuplicates | None:
    """The groups `pool_near_duplicates` stored for these vectors and τ, or None (nothing is searched)."""
    ids = pool.frame["id"].astype(str).tolist()
    x = unit_rows(vectors, n_ids=len(ids))
    return _read_result(_result_file(cache_root, _result_key(x, check_tau(tau))), ids, tau)


def _store_result(path: Path, dups: NearDuplicates, ids: list[str]) -> None:
    """Write groups by row position, so the file depends on the vectors and τ alone."""
    positions = {rid: pos for pos, rid in enumerate(ids)}
    _write_result(path, {"format": FORMAT, "tau": dups.tau, "rows": len(ids), "seconds": dups.seconds,
                         "groups": [[positions[i] for i in g] for g in dups.groups],
                         "similarity": [list(s) for s in dups.similarity]})


def _result_key(x: np.ndarray, tau: float) -> str:
    digest = hashlib.sha256(f"{FORMAT}|{tau!r}|{x.shape}".encode())
    digest.update(memoryview(x).cast("B"))
    return digest.hexdigest()[:24]


def _result_file(root: Path | str | None, key: str) -> Path:
    return Path(root if root is not None else default_cache_dir()) / "neardup" / f"{key}.json"


def _read_result(path: Path, ids: list[str], tau: float) -> NearDuplicates | None:
    """A cached result mapped to these ids, or None (absent, or unreadable: then it is computed again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != FORMAT or data.get("rows") != len(ids):
        return None
    stars = [(g[0], np.asarray(g[1:], dtype=np.int64), np.asarray(s, dtype=np.float32))
             for g, s in zip(data["groups"], data["similarity"], strict=True)]
    return _result(stars, ids, tau, float(data["seconds"]), from_cache=True)


def _write_result(path: Path, data: dict) -> None:
    """Atomically: two sessions may store the same result at once, and a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- keeping one per group, and the report -----------------------------------------------------------------------


def keep_one_per_group(pool: Pool, dups: NearDuplicates) -> Pool:
    """A new pool without the rows keeping one per group drops (order, ids and extra columns unchanged).

    Its name says what it is ("<name> (one per near-duplicate group, τ=0.95)") and its report counts the rows
    dropped in `rows_kept` and a note, so `Store.save_pool` stores it as a pool of its own.

    Raises:
        ConfigError: the groups were found for other rows than this pool's.
    """
    ids = pool.frame["id"].astype(str)
    if dups.rows != len(ids) or not set(dups.dropped) <= set(ids):
        raise ConfigError(f"These near-duplicate groups were found for a pool of {dups.rows:,} rows, not for "
                          f"{pool.name!r} ({len(ids):,} rows). Find them again for this pool.")
    if not dups.groups:
        return pool
    frame = pool.frame[~ids.isin(set(dups.dropped))].reset_index(drop=True)
    note = (f"Near-duplicates: kept one row per group of rows at cosine ≥ {dups.tau:g}; "
            f"dropped {dups.n_dropped:,} of {dups.rows:,} rows in {dups.n_groups:,} groups. Each dropped row is at "
            "least that similar to the row kept in its place. Exact duplicates, counted above, were dropped "
            "before.")
    report = replace(pool.report, rows_kept=len(frame), notes=[*pool.report.notes, note])
    return replace(pool, frame=frame, report=report,
                   name=f"{pool.name} (one per near-duplicate group, τ={dups.tau:g})")


def report_lines(dups: NearDuplicates, *, pool: Pool | None = None, examples: int = 3, width: int = 90) -> list[str]:
    """What the CLI prints: the summary, how it relates to exact duplicates, and the first groups.

    Args:
        dups: the groups.
        pool: the pool they were found in (for the instructions of the examples; without it, ids only).
        examples: groups shown.
        width: characters of instruction shown per row.

    Returns:
        Lines without newlines, the first one the summary.
    """
    lines = [f"{dups.summary} ({dups.library}, {dups.seconds:.2f} s{', cached' if dups.from_cache else ''})"]
    if not dups.groups:
        return lines
    lines.append("  exact duplicates (same instruction and input) were dropped at load; these rows differ in text")
    text = dict(zip(pool.frame["id"].astype(str), pool.frame["instruction"], strict=True)) if pool is not None else {}
    for g, (group, sims) in enumerate(zip(dups.groups[:examples], dups.similarity, strict=False), start=1):
        spread = f"{min(sims):.3f}" + (f"..{max(sims):.3f}" if max(sims) > min(sims) else "")
        lines.append(f"  group {g} ({len(group)} rows, cosine to the kept row {spread}):")
        for label, rid in zip(["keep ", *(f"{s:.3f}" for s in sims)], group, strict=True):
            shown = " ".join(str(text.get(rid, "")).split())
            shown = shown if len(shown) <= width else shown[: width - 1] + "…"
            lines.append(f"    {label}  {rid}  {shown}".rstrip())
    if dups.n_groups > examples:
        lines.append(f"  … and {dups.n_groups - examples:,} more group(s)")
    return lines
