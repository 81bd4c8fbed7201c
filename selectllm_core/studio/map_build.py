"""What the Map draws: a pool planned, embedded, split as the run will split it, and laid out in 2-D.

`build_map` is the one entry, a plain function of the pool, the run's settings, an embedder and a cache, so a
test hands it a fake embedder and a temporary cache. The app wraps it with a progress display and keeps each
build per server under `build_key`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from selectllm_core.embed import Embedder, EmbeddingCache, embed_texts
from selectllm_core.embed.projection import ProjectionParams, cached_projection, compute_projection
from selectllm_core.embed.projection import warm_up as compile_umap
from selectllm_core.llm import ChatBackend
from selectllm_core.pipeline import RunConfig, plan
from selectllm_core.pool.load import Pool
from selectllm_core.split import BudgetPlan, SubsetPlan, make_subsets

Step = Callable[[str, str], None]  # (step, sentence): "embedded", "clustering", "layout"
EMBED_BATCH = 64  # rows per embedding batch: the progress bar moves often, a crash loses little


@dataclass
class MapBuild:
    """What the map shows: vectors, the split the run will use, 2-D coordinates, and seconds per step."""

    model_id: str
    vectors: np.ndarray
    plan: SubsetPlan
    coords: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def timing(self) -> str:
        """Seconds per step in words: "embedding 3 s, clustering 1 s, layout 0 s"."""
        return ", ".join(f"{step} {s:.0f} s" for step, s in self.seconds.items())


def build_key(pool: Pool, model_id: str, budget: BudgetPlan, config: RunConfig, *, layout: str) -> tuple:
    """Everything a build depends on: the same key gives the same MapBuild."""
    return (pool.pool_id, model_id, str(asdict(budget)), config.split, config.seed, ProjectionParams(method=layout))


def build_map(pool: Pool, config: RunConfig, *, embedder: Embedder, cache: EmbeddingCache | None = None,
              budget: BudgetPlan | None = None, backend: ChatBackend | None = None, layout: str = "umap",
              projection_root: Path | str | None = None, on_embed: Callable[[int, int], None] | None = None,
              on_step: Step | None = None) -> MapBuild:
    """Plan, embed, split and lay out a pool, as the Map page shows it and the run will use it.

    Args:
        pool: a stored pool (its id keys the cached layout).
        config: the run's settings; the budget, split and seed decide the clusters.
        embedder: turns texts into vectors.
        cache: the embedding cache (default: the cache folder from the environment).
        budget: the run's plan when the caller has it; else planned here for `backend` (`pipeline.plan`).
        backend: the chat backend whose context window caps the subsets (only needed without `budget`).
        layout: "umap" or "pca".
        projection_root: where layouts are cached (default: the cache folder from the environment).
        on_embed: called with (done, total) after each embedding batch the cache lacked.
        on_step: called with (step, sentence) as the slow steps go.

    Returns:
        A MapBuild; `seconds` holds embedding, clustering and layout.
    """
    step = on_step or (lambda _step, _sentence: None)
    # 1. plan: subsets and picks of the budget, capped to the backend's context window
    budget = budget or plan(pool, config, backend=backend)
    clock, seconds = time.perf_counter(), {}
    # 2. embed through the cache (embed_texts orders the misses longest first, so batches pad little)
    texts = pool.frame["text"].tolist()
    vectors = embed_texts(texts, embedder=embedder, cache=cache, batch_size=EMBED_BATCH, progress=on_embed).vectors
    step("embedded", f"Embedded {len(texts):,} rows with {embedder.model_id}")
    seconds["embedding"] = time.perf_counter() - clock
    # 3. split as the run will
    step("clustering", f"Clustering: {budget.describe()}")
    subsets = make_subsets(vectors, budget, strategy=config.split, random_state=config.seed)
    seconds["clustering"] = time.perf_counter() - clock - seconds["embedding"]
    # 4. 2-D layout, read from the cache when this pool was laid out before
    params = ProjectionParams(method=layout)
    if cached_projection(model_id=embedder.model_id, pool_id=pool.pool_id, n_rows=len(texts), params=params,
                         cache_root=projection_root) is None:
        step("layout", f"Projecting to 2-D with {layout.upper()} (the first map after a server start takes longest)")
    coords = compute_projection(vectors, model_id=embedder.model_id, pool_id=pool.pool_id, params=params,
                                cache_root=projection_root, progress=lambda m: step("layout", m[0].upper() + m[1:]))
    seconds["layout"] = time.perf_counter() - clock - seconds["embedding"] - seconds["clustering"]
    return MapBuild(embedder.model_id, vectors, subsets, coords, seconds)


def warm_up(embedder: Embedder) -> None:
    """Load the embedding model and compile UMAP, so the first map after a server start comes sooner."""
    embedder.encode(["warm up"])
    compile_umap()
