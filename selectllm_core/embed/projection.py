"""2-D map coordinates of a pool's embeddings: UMAP, cached on disk.

The cache key is (embedding model, pool id, projection parameters), so a second build of the same map
reads one small .npy file instead of importing UMAP (about 13 s) and fitting it. PCA is offered as an
explicit, much faster method (tests, quick looks at huge pools); it is never used in UMAP's place silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from selectllm_core.embed import default_cache_dir
from selectllm_core.errors import ConfigError

METHODS = ("umap", "pca")
MIN_ROWS = 4
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProjectionParams:
    """How to lay the vectors out in 2-D; every field is part of the cache key."""

    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    random_state: int = 0


def projection_key(*, model_id: str, pool_id: str, params: ProjectionParams) -> str:
    """Cache key of one map layout."""
    raw = json.dumps({"model": model_id, "pool": pool_id, **asdict(params)}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _cache_file(cache_root: Path | str | None, key: str) -> Path:
    return Path(cache_root if cache_root is not None else default_cache_dir()) / "projections" / f"{key}.npy"


def cached_projection(
    *, model_id: str, pool_id: str, n_rows: int, params: ProjectionParams | None = None,
    cache_root: Path | str | None = None,
) -> np.ndarray | None:
    """The stored coordinates of this layout, or None when it was never computed (or does not fit n_rows)."""
    params = params or ProjectionParams()
    path = _cache_file(cache_root, projection_key(model_id=model_id, pool_id=pool_id, params=params))
    if not path.is_file():
        return None
    coords = np.load(path)
    return coords if coords.shape == (n_rows, 2) else None


def compute_projection(
    vectors: np.ndarray,
    *,
    model_id: str,
    pool_id: str,
    params: ProjectionParams | None = None,
    cache_root: Path | str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """2-D coordinates for a pool's vectors, read from the cache or computed and stored.

    Args:
        vectors: one embedding per pool row, in pool order.
        model_id: the embedding model (part of the cache key).
        pool_id: the pool (part of the cache key).
        params: method and its settings; default UMAP with 15 neighbours and cosine distance.
        cache_root: cache folder (default: $SELECTLLM_CACHE_DIR or .selectllm-cache).
        progress: called with a short message before slow steps (import, fit).

    Returns:
        A float32 array of shape (n, 2).
    """
    # 1. validate, then the cache
    params = params or ProjectionParams()
    if params.method not in METHODS:
        raise ConfigError(f"Unknown map method {params.method!r}; choose one of {', '.join(METHODS)}.")
    n = len(vectors)
    if n < MIN_ROWS:
        raise ConfigError(f"A map needs at least {MIN_ROWS} rows; this pool has {n}. Load a larger pool.")
    found = cached_projection(model_id=model_id, pool_id=pool_id, n_rows=n, params=params, cache_root=cache_root)
    if found is not None:
        return found
    # 2. compute
    run = _run_umap if params.method == "umap" else _run_pca
    coords = run(np.asarray(vectors, dtype=np.float32), params, progress)
    # 3. store
    return store_projection(coords, model_id=model_id, pool_id=pool_id, params=params, cache_root=cache_root)


def store_projection(
    coords: np.ndarray, *, model_id: str, pool_id: str, params: ProjectionParams | None = None,
    cache_root: Path | str | None = None,
) -> np.ndarray:
    """Store a layout under its cache key, atomically (a crash never leaves half a file for the next read).

    Returns:
        The coordinates as stored: float32, shape (n, 2).
    """
    coords, params = np.asarray(coords, dtype=np.float32), params or ProjectionParams()
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ConfigError(f"A map layout has two columns per row; got an array of shape {coords.shape}.")
    path = _cache_file(cache_root, projection_key(model_id=model_id, pool_id=pool_id, params=params))
    path.parent.mkdir(parents=True, exist_ok=True)
    # a file of its own per writer: two sessions (threads of one server) may store the same layout at once
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npy")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, coords)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return coords


def warm_up() -> None:
    """Import UMAP and compile its numba kernels on a tiny random set, so the first real map does not wait.

    Pools under 4,096 rows take the same code path (exact neighbours, then the layout), so it is all compiled.
    """
    import umap

    sample = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        umap.UMAP(n_neighbors=5, metric="cosine", random_state=0, n_epochs=20).fit_transform(sample)


def _run_umap(vectors: np.ndarray, params: ProjectionParams, progress: Progress | None) -> np.ndarray:
    """Fit UMAP (imported here: the import alone takes seconds)."""
    if progress:
        progress("loading UMAP")
    import umap

    if progress:
        progress(f"fitting UMAP on {len(vectors):,} points")
    reducer = umap.UMAP(n_neighbors=min(params.n_neighbors, len(vectors) - 1), min_dist=params.min_dist,
                        metric=params.metric, random_state=params.random_state, n_components=2)
    with warnings.catch_warnings():
        # a fixed random_state makes UMAP single-threaded and it warns about it; that is the point here
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        return reducer.fit_transform(vectors)


def _run_pca(vectors: np.ndarray, params: ProjectionParams, progress: Progress | None) -> np.ndarray:
    """First two principal components: instant, but clusters overlap more than with UMAP."""
    from sklearn.decomposition import PCA

    if progress:
        progress(f"PCA on {len(vectors):,} points")
    return PCA(n_components=2, random_state=params.random_state).fit_transform(vectors)
