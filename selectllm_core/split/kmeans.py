"""Equal-size K-means: every cluster gets exactly len(X) // n_clusters rows.

Two methods share one contract (the one of k-means-constrained with size_min = size_max = n / k):

- ``"constrained"``: k-means-constrained's ``KMeansConstrained`` (min-cost flow on the dense graph of every
  row to every centre, ``n_init=1``), the reference. Its flow graph has n * k arcs, so it is slow past tens of
  thousands of rows and does not fit in memory for a million rows in a thousand clusters.
- ``"fast"``: k-means++ seeds and a few Lloyd iterations (scikit-learn), then Lloyd steps whose assignment
  is balanced exactly: a min-cost flow (OR-tools) on a sparse graph, each row's few nearest centres
  (n * 8 arcs instead of n * k) plus each rarely listed centre's nearest rows. Between steps, centre prices
  (the flow's duals) let rows far from any boundary stay put, so later flows carry only the undecided rows;
  a pruned result is kept when new prices certify it optimal on the whole sparse graph (else the step
  reruns the full flow). Inputs above ``_MIN_SAMPLE`` rows run all of this on a sample first and finish
  with two full-data steps, keeping uncertified pruned results there. Measurements: benchmarks/README.md.

Centres are always the means of the final clusters and ``inertia`` is the sum of squared distances of the
rows to them, computed the same way for both methods so that results compare.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from selectllm_core.errors import ConfigError

METHODS = ("auto", "constrained", "fast")
_CANDIDATES = 8             # nearest centres listed per row (more for small clusters, see _LIST_SLOTS)
_LIST_SLOTS = 256           # a row lists at least this many slots: m * size >= _LIST_SLOTS
_COST_UNITS = 1e6           # integer flow cost of the largest listed squared distance
_PRUNE = 0.2                # a row keeps arcs within this (x mean arc cost) of its best priced arc
_MIN_SAMPLE = 200_000       # larger inputs start on a sample of _SAMPLE_PER_CLUSTER rows per cluster
_SAMPLE_PER_CLUSTER = 100
_BIG_STEPS = (10, 2)        # on large inputs, most exact-size steps on the sample, then on every row
_SEED_PER_CLUSTER = 10      # k-means++ seeds from a sample of this many rows per cluster, at least _SEED_ROWS
_SEED_ROWS = 10_000
_WARMUP_ITERS = 20          # unconstrained Lloyd iterations before the exact-size steps take over
_REL_TOL = 3e-4             # stop the exact-size steps when inertia improves by less than this fraction
_AUTO_CONSTRAINED_MAX = 10_000  # n * k up to which "auto" runs the reference (faster there, see README)
_CHUNK = 8_192              # rows per block when computing distances


@dataclass
class EqualSizeResult:
    """Outcome of equal_size_kmeans."""

    labels: np.ndarray   # (n,) int64 cluster of each row, every cluster exactly n // k rows
    centers: np.ndarray  # (k, d) float32 mean of each cluster
    inertia: float       # sum of squared distances of the rows to their cluster's centre
    n_iter: int          # exact-size assignment steps on every row (fast: after the sample phase)
    method: str          # "constrained", "fast", or "trivial" (k == 1 or k == n: the answer is forced)


def equal_size_kmeans(X: np.ndarray, *, n_clusters: int, random_state: int = 0, max_iter: int = 300,
                      method: str = "auto") -> EqualSizeResult:
    """Cluster the rows of X into n_clusters clusters of exactly len(X) // n_clusters rows each.

    Args:
        X: (n, d) array of finite numbers; n must be a multiple of n_clusters (callers pad).
        n_clusters: number of clusters, 1 <= n_clusters <= n.
        random_state: seed; the same seed and input give the same labels.
        max_iter: most Lloyd iterations (and most exact-size assignment steps) to run.
        method: "auto", "constrained" (k-means-constrained, the reference) or "fast".

    Returns:
        EqualSizeResult with labels, centres, inertia, iterations and the method that ran.

    Raises:
        ConfigError: bad shape, non-finite values, n not a multiple of n_clusters, unknown method.
    """
    # 1. validate at the boundary
    X = _check_input(X, n_clusters=n_clusters, max_iter=max_iter, method=method)
    n, size = len(X), len(X) // n_clusters
    # 2. forced answers, then the chosen method
    if n_clusters == 1 or size == 1:
        labels = np.zeros(n, dtype=np.int64) if n_clusters == 1 else np.arange(n, dtype=np.int64)
        return _result(X, labels, n_clusters, n_iter=0, method="trivial")
    if method == "auto":
        method = "constrained" if n * n_clusters <= _AUTO_CONSTRAINED_MAX else "fast"
    if method == "constrained":
        labels, n_iter = _run_constrained(X, n_clusters, random_state, max_iter)
    else:
        labels, n_iter = _run_fast(X, n_clusters, random_state, max_iter)
    # 3. centres and inertia from the final labels, the same way for every method
    return _result(X, labels, n_clusters, n_iter=n_iter, method=method)


def _check_input(X: np.ndarray, *, n_clusters: int, max_iter: int, method: str) -> np.ndarray:
    """Return X as C-contiguous float32, or raise ConfigError saying what to change."""
    if method not in METHODS:
        raise ConfigError(f"unknown clustering method {method!r}; use one of {', '.join(METHODS)}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ConfigError(f"expected a non-empty 2-D array of vectors (rows x dims), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ConfigError("the vectors contain NaN or infinite values; re-embed or drop those rows")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= len(X):
        raise ConfigError(f"n_clusters must be an integer from 1 to the number of rows ({len(X)}), got {n_clusters!r}")
    if max_iter < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    n, rest = len(X), len(X) % n_clusters
    if rest:
        raise ConfigError(
            f"{n} rows cannot be split into {n_clusters} clusters of equal size: the row count must be a "
            f"multiple of n_clusters. Pad the rows first (the paper repeats the first rows: add "
            f"{n_clusters - rest} to reach {n + n_clusters - rest}) or drop {rest} rows.")
    return X


def _result(X: np.ndarray, labels: np.ndarray, k: int, *, n_iter: int, method: str) -> EqualSizeResult:
    """Package labels with the cluster means and the inertia to them."""
    centers = _cluster_means(X, labels, k)
    return EqualSizeResult(labels.astype(np.int64), centers, _inertia(X, labels, centers), int(n_iter), method)


def _run_constrained(X: np.ndarray, k: int, random_state: int, max_iter: int) -> tuple[np.ndarray, int]:
    """The reference: k-means-constrained with size_min = size_max = n / k and one initialisation."""
    from k_means_constrained import KMeansConstrained

    size = len(X) // k
    model = KMeansConstrained(n_clusters=k, size_min=size, size_max=size, random_state=random_state,
                              n_init=1, max_iter=max_iter)
    model.fit(X)
    return np.asarray(model.labels_, dtype=np.int64), int(model.n_iter_)


def _run_fast(X: np.ndarray, k: int, random_state: int, max_iter: int) -> tuple[np.ndarray, int]:
    """Warm-up, exact-size Lloyd steps on a sample of large inputs, then exact-size steps on every row."""
    rng = np.random.default_rng(random_state)
    big = len(X) > _MIN_SAMPLE and len(X) >= 4 * _SAMPLE_PER_CLUSTER * k
    sample = _sample(X, _SAMPLE_PER_CLUSTER * k, rng) if big else X
    centers = _warm_up(sample, k, rng, random_state, max_iter)
    if big:  # only the centres carry over: the sample's prices are too noisy to prune the full flow with
        centers = _balanced_lloyd(sample, centers, min(max_iter, _BIG_STEPS[0]))[1]
    labels, _, n_iter = _balanced_lloyd(X, centers, min(max_iter, _BIG_STEPS[1]) if big else max_iter)
    return labels, n_iter


def _warm_up(X: np.ndarray, k: int, rng: np.random.Generator, random_state: int, max_iter: int) -> np.ndarray:
    """k-means++ seeds (on a sample) and a few unconstrained Lloyd iterations (scikit-learn)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    seeds = _kmeans_plusplus(_sample(X, max(_SEED_ROWS, _SEED_PER_CLUSTER * k), rng), k, rng)
    model = KMeans(n_clusters=k, init=seeds, n_init=1, max_iter=min(max_iter, _WARMUP_ITERS), tol=0.0,
                   random_state=random_state, algorithm="lloyd")
    with warnings.catch_warnings():  # duplicate rows (padding repeats rows) are fine: sizes come later
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X).cluster_centers_.astype(np.float32)


def _sample(X: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """X itself when it has at most `size` rows, else `size` random rows in their original order."""
    if len(X) <= size:
        return X
    return X[np.sort(rng.choice(len(X), size=size, replace=False))]


def _kmeans_plusplus(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (2 + ln k trials per seed) in float32 (scikit-learn's upcasts: 6 s at 52k)."""
    n, trials = len(X), 2 + int(np.log(k))
    x_sq = np.einsum("ij,ij->i", X, X)
    seeds = np.empty((k, X.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    seeds[0] = X[first]
    closest = np.maximum(x_sq - 2.0 * (X @ X[first]) + x_sq[first], 0.0)
    for c in range(1, k):
        cum = np.cumsum(closest, dtype=np.float64)
        picks = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1]), n - 1)
        d = _sq_distances(X[picks], X, x_sq)  # (trials, n)
        np.minimum(d, closest[None, :], out=d)
        best = int(np.argmin(d.sum(axis=1, dtype=np.float64)))
        closest = d[best].copy()
        seeds[c] = X[picks[best]]
    return seeds


def _balanced_lloyd(X: np.ndarray, centers: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Alternate exact-size assignments and centre means until inertia stops improving by _REL_TOL.

    Returns:
        the best labels, their centres, and the number of assignment steps.
    """
    k = len(centers)
    size = len(X) // k
    best_labels, best_centers, best_inertia, prices, n_iter = None, centers, np.inf, None, 0
    while n_iter < max_iter:
        n_iter += 1
        arcs = _candidate_arcs(X, centers, size)
        labels, prices = _balanced_assign(X, centers, arcs, size, prices)
        centers = _cluster_means(X, labels, k)
        inertia = _inertia(X, labels, centers)
        improved = inertia < best_inertia * (1.0 - _REL_TOL)
        if inertia < best_inertia:
            best_labels, best_centers, best_inertia = labels, centers, inertia
        if not improved:
            break
    return best_labels, best_centers, n_iter


def _sq_distances(block: np.ndarray, centers: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (rows of block x centres), float32, clipped at 0."""
    d = block @ centers.T
    d *= -2.0
    d += np.einsum("ij,ij->i", block, block)[:, None]
    d += c_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def _candidate_arcs(X: np.ndarray, centers: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """The sparse graph (row, centre, squared distance): each row's m nearest centres, plus the
    2 * size nearest rows of every centre that fewer than 2 * size rows list."""
    n, k = len(X), len(centers)
    m = min(k, max(_CANDIDATES, -(-_LIST_SLOTS // size)))
    col, cost = _nearest_centers(X, centers, m)
    row, col, cost = np.repeat(np.arange(n, dtype=np.int32), m), col.ravel(), cost.ravel()
    rare = np.flatnonzero(np.bincount(col, minlength=k) < 2 * size)
    if len(rare) and m < k:
        extra = _nearest_rows(X, centers[rare], min(n, 2 * size))
        row = np.concatenate([row, extra[0]])
        col = np.concatenate([col, rare[extra[1]].astype(np.int32)])
        cost = np.concatenate([cost, extra[2]])
    return row, col, cost


def _nearest_centers(X: np.ndarray, centers: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's m nearest centres (int32) and squared distances, by blocks of rows against all centres."""
    half_c_sq = 0.5 * np.einsum("ij,ij->i", centers, centers)
    col = np.empty((len(X), m), dtype=np.int32)
    cost = np.empty((len(X), m), dtype=np.float64)
    for start in range(0, len(X), _CHUNK):
        block = X[start:start + _CHUNK]
        d = block @ centers.T
        np.subtract(half_c_sq, d, out=d)  # (|c|^2 - |x - c|^2 + |x|^2) / 2: same order as the distance
        part, val = _smallest(d, m)
        col[start:start + len(d)] = part
        cost[start:start + len(d)] = np.maximum(2.0 * val + np.einsum("ij,ij->i", block, block)[:, None], 0.0)
    return col, cost


def _smallest(d: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and values of the m smallest entries of each row of d (d is overwritten).

    Small m takes m argmin passes: 40 times faster than numpy's argpartition on 8192 x 1000 blocks.
    """
    if m >= d.shape[1]:
        return np.tile(np.arange(d.shape[1]), (len(d), 1)), d.copy()
    if m > 64:
        part = np.argpartition(d, m - 1, axis=1)[:, :m]
        return part, np.take_along_axis(d, part, axis=1)
    rows = np.arange(len(d))
    part = np.empty((len(d), m), dtype=np.int64)
    val = np.empty((len(d), m), dtype=d.dtype)
    for j in range(m):
        part[:, j] = d.argmin(axis=1)
        val[:, j] = d[rows, part[:, j]]
        d[rows, part[:, j]] = np.inf
    return part, val


def _nearest_rows(X: np.ndarray, centers: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The r nearest rows of each centre, as arcs (row, centre position, squared distance)."""
    c_sq = np.einsum("ij,ij->i", centers, centers)
    group = max(1, (1 << 25) // len(X))  # centres per pass: at most 128 MiB of distances
    rows, cols, costs = [], [], []
    for g in range(0, len(centers), group):
        d = np.concatenate([_sq_distances(X[s:s + _CHUNK], centers[g:g + group], c_sq[g:g + group])
                            for s in range(0, len(X), _CHUNK)])
        near = np.argpartition(d, r - 1, axis=0)[:r] if r < len(X) else np.arange(len(X))[:, None]
        near = np.broadcast_to(near, (r, d.shape[1]))
        rows.append(near.ravel().astype(np.int32))
        cols.append(np.tile(np.arange(g, g + d.shape[1]), r))
        costs.append(np.take_along_axis(d, near, axis=0).ravel().astype(np.float64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(costs)


def _balanced_assign(X: np.ndarray, centers: np.ndarray, arcs: tuple[np.ndarray, ...], size: int,
                     prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact-size assignment of least total squared distance on the sparse graph `arcs`.

    With `prices` (the duals of the previous step), rows whose priced best centre beats the others by
    more than _PRUNE stay there and only the rest enter the flow; that answer is kept if new prices
    certify it optimal on the whole graph, or if the input is too large to redo; else the flow runs on
    every row.

    Returns:
        labels (n,) and centre prices that certify them.
    """
    n, k = len(X), len(centers)
    row, col, cost = arcs
    if prices is not None:
        keep, fixed = _prune(arcs, prices, n, k, size)
        free = np.flatnonzero(fixed < 0)
        labels = fixed.copy()
        if len(free):
            local = np.full(n, -1, dtype=np.int32)
            local[free] = np.arange(len(free), dtype=np.int32)
            sel = keep & (fixed[row] < 0)
            demand = size - np.bincount(fixed[fixed >= 0], minlength=k)
            labels[free] = _flow(X, free, centers, (local[row[sel]], col[sel], cost[sel]), demand)
        new_prices, certified = _prices(labels, arcs, k)
        if certified:
            return labels, new_prices
        if n > _MIN_SAMPLE:  # the full flow would cost tens of seconds: keep this exact-size answer
            return labels, prices
    labels = _flow(X, np.arange(n), centers, arcs, np.full(k, size))
    return labels, _prices(labels, arcs, k)[0]


def _prune(arcs: tuple[np.ndarray, ...], prices: np.ndarray, n: int, k: int,
           size: int) -> tuple[np.ndarray, np.ndarray]:
    """Arcs worth offering each row, and the centre of rows fixed outright (-1 for rows left free)."""
    row, col, cost = arcs
    reduced = cost + prices[col]
    best = np.full(n, np.inf)
    np.minimum.at(best, row, reduced)
    keep = reduced <= best[row] + _PRUNE * float(cost.mean())
    one = keep & (np.bincount(row[keep], minlength=n)[row] == 1)
    fixed = np.full(n, -1, dtype=np.int64)
    fixed[row[one]] = col[one]
    # a centre with more fixed rows than slots frees all of them, with all their arcs
    over = np.bincount(fixed[fixed >= 0], minlength=k) > size
    release = (fixed >= 0) & over[np.maximum(fixed, 0)]
    fixed[release] = -1
    return keep | release[row], fixed


def _flow(X: np.ndarray, rows: np.ndarray, centers: np.ndarray, arcs: tuple[np.ndarray, ...],
          demand: np.ndarray, spill: bool = True) -> np.ndarray:
    """Min-cost flow of X[rows] to the centres over `arcs` (local row ids), each centre taking `demand`.

    A spill node (rows -> spill at a prohibitive cost, spill -> every centre at 0) keeps the flow
    feasible when the arcs miss some centre; spilled rows then go to the spilled slots by a dense flow.
    """
    from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

    row, col, cost = arcs
    n, k, e = len(rows), len(centers), len(row)
    hub = n + k
    scale = _COST_UNITS / max(float(cost.max()), 1e-12)
    extra = (np.arange(n), np.full(k, hub)) if spill else (np.empty(0, int), np.empty(0, int))
    tails = np.concatenate([row, *extra])
    heads = np.concatenate([n + col, np.full(len(extra[0]), hub), n + np.arange(len(extra[1]))])
    costs = np.concatenate([np.rint(cost * scale), np.full(len(extra[0]), 4 * _COST_UNITS),
                            np.zeros(len(extra[1]))])
    caps = np.concatenate([np.ones(e + len(extra[0])), np.full(len(extra[1]), n)])
    solver = SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int64), heads.astype(np.int64),
                                                caps.astype(np.int64), costs.astype(np.int64))
    solver.set_nodes_supplies(np.arange(hub + 1), np.concatenate([np.ones(n), -demand, [0]]).astype(np.int64))
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise RuntimeError(f"min-cost flow for the balanced assignment ended with status {status}")
    used = solver.flows(np.arange(e)) > 0
    labels = np.full(n, -1, dtype=np.int64)
    labels[row[used]] = col[used]
    spilled = np.flatnonzero(labels < 0)
    if len(spilled):
        if not spill:
            raise RuntimeError("a complete assignment graph left rows unplaced")
        slots = solver.flows(np.arange(e + n, e + n + k))
        labels[spilled] = _place_spilled(X, rows[spilled], centers, slots)
    return labels


def _place_spilled(X: np.ndarray, rows: np.ndarray, centers: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Optimal placement of the spilled rows on the spilled slots (dense flow, no further spill)."""
    took = np.flatnonzero(slots)
    d = _sq_distances(X[rows], centers[took], np.einsum("ij,ij->i", centers[took], centers[took]))
    s, r = d.shape
    arcs = (np.repeat(np.arange(s), r), np.tile(np.arange(r), s), d.ravel().astype(np.float64))
    return took[_flow(X, rows, centers[took], arcs, slots[took], spill=False)]


def _prices(labels: np.ndarray, arcs: tuple[np.ndarray, ...], k: int) -> tuple[np.ndarray, bool]:
    """Centre prices q with c[i, own] + q[own] <= c[i, j] + q[j] on every arc, and whether they exist.

    Shortest-path potentials (Bellman-Ford from a virtual source) on the centre graph whose arc j -> a
    weighs the least extra cost of moving one of a's rows to j. A negative cycle (no convergence) means
    some rows could trade centres for less: the assignment is not optimal on the graph.
    """
    row, col, cost = arcs
    mine = col == labels[row]
    own = np.full(len(labels), np.nan)
    own[row[mine]] = cost[mine]
    other = ~mine & ~np.isnan(own[row])  # rows placed off the graph (spilled) give no constraint
    key = col[other].astype(np.int64) * k + labels[row[other]]
    gain = cost[other] - own[row[other]]
    order = np.lexsort((gain, key))  # per centre pair, the cheapest move comes first
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
    # the flow rounds each arc cost to 1 / _COST_UNITS of the largest: gaps that small are ties
    return _potentials(key[first] // k, key[first] % k, gain[first], k, slack=2.0 * float(cost.max()) / _COST_UNITS)


def _potentials(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, k: int, *,
                slack: float) -> tuple[np.ndarray, bool]:
    """Bellman-Ford potentials from a virtual source joined to every node; False on a negative cycle."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import NegativeCycleError, bellman_ford

    w = weight + slack
    w[w == 0.0] = slack / 2  # a sparse matrix would drop a zero weight; source edges weigh 1 (an offset)
    graph = csr_matrix((np.concatenate([w, np.ones(k)]),
                        (np.concatenate([src, np.full(k, k)]), np.concatenate([dst, np.arange(k)]))),
                       shape=(k + 1, k + 1))
    try:
        dist = bellman_ford(graph, directed=True, indices=k)
    except NegativeCycleError:
        return np.zeros(k), False
    return dist[:k] - 1.0, True


def _cluster_means(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of the rows of each cluster (float32; every cluster is non-empty here)."""
    from scipy import sparse

    n = len(X)
    member = sparse.csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(member @ X, dtype=np.float64)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)


def _inertia(X: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared distances of the rows to their assigned centre (float64 accumulation)."""
    total = 0.0
    for start in range(0, len(X), _CHUNK):
        diff = X[start:start + _CHUNK] - centers[labels[start:start + _CHUNK]]
        total += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    return total
