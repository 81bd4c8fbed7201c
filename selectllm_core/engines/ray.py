"""An optional Ray engine for the two heavy stages: embedding, and the units of a run (LLM calls), on a Ray cluster.

Workers compute; the driver writes. Ray actors return vectors and subset outcomes, and only the driver
touches the embedding cache and the workspace, so caching, resume and retries behave exactly as with the
default in-process engine. Needs `pip install ray` (see requirements-scale.txt); `ray.init()` joins the
cluster named by $RAY_ADDRESS, else the one `ray start` started on this machine, else starts a local one.
docs/scaling.md shows a multi-node cluster; tests/test_ray_cluster.py runs one with two nodes.

    vectors = embed_with_ray(texts, embedder_factory=SentenceTransformerEmbedder, batch_size=256)
    counts = run_units(store, run_id, subsets, work, executor=RayExecutor.for_backend(backend))
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from selectllm_core.embed import Embedder, EmbeddingCache, EmbedResult, embed_texts, embedder_for
from selectllm_core.errors import BackendError, ConfigError
from selectllm_core.llm import ChatBackend, LocalLlamaBackend, OpenAICompatibleBackend

Factory = Callable[[], Any]


def ray_module() -> Any:
    """The ray module, connected: joins $RAY_ADDRESS when set, else a local Ray (once per process)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: run `pip install -r requirements-scale.txt`, "
                          "or leave the option out to run in this process.") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            ray.init(include_dashboard=False)
            return ray
        try:
            ray.init(address=address)
        except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
            raise ConfigError(
                f"Cannot join the Ray cluster at RAY_ADDRESS={address}: {exc}. Check that the head node is up "
                "(`ray status` there) and reachable from here; if the cluster uses token authentication, set "
                "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN) here too (docs/scaling.md).") from None
    return ray


def _cpus(ray: Any) -> int:
    """CPUs free in the cluster right now (at least 1)."""
    return max(1, int(ray.available_resources().get("CPU", 0)))


def _alive_nodes(ray: Any) -> list[str]:
    """The ids of the cluster's alive nodes, in a fixed order."""
    return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))


# --- embedding ------------------------------------------------------------------------------------


class _EmbedWorker:
    """A Ray actor holding one embedder (the model loads once per actor, not once per batch)."""

    def __init__(self, factory: Factory) -> None:
        self.embedder = factory()

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.embedder.encode(texts), dtype=np.float32)


class RayEmbedder:
    """An Embedder whose encode spreads batches over Ray actors, one CPU each; pass it to embed_texts.

    Args:
        embedder_factory: picklable callable returning an Embedder (built in each actor; models load lazily).
        batch_size: texts per actor call at most (a call with fewer texts than a batch per actor is shared
            out evenly instead).
        workers: actors (None: the CPUs free in the cluster when the first batch arrives; never more than
            the cluster's CPUs).
    """

    def __init__(self, embedder_factory: Factory, *, batch_size: int = 256, workers: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        self.embedder_factory = embedder_factory
        self.batch_size = batch_size
        self.workers = workers
        # factories build lazily, so this costs no model load; it keeps cache keys identical to in-process runs
        self.model_id = embedder_factory().model_id
        self._actors: list[Any] = []
        self._target: int | None = None

    def _actor_target(self, ray: Any) -> int:
        """How many actors this embedder runs, fixed when the first batch arrives."""
        if self._target is None:
            # each actor reserves a CPU: more than the cluster has would wait forever
            total = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._target = min(self.workers or _cpus(ray), total)
        return self._target

    def _pool(self, ray: Any, batches: int) -> Any:
        """The actors, started as first needed: no more than there are batches to run."""
        actor = ray.remote(num_cpus=1)(_EmbedWorker)
        while len(self._actors) < min(self._actor_target(ray), batches):
            self._actors.append(actor.remote(self.embedder_factory))
        from ray.util import ActorPool

        return ActorPool(self._actors)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (returned in input order), batches spread over the actors."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        ray = ray_module()
        # fewer texts than a full batch per actor are cut finer, so that every actor takes a share
        size = min(self.batch_size, math.ceil(len(texts) / self._actor_target(ray)))
        # longest first, so each batch holds texts of similar length and pads little
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [[texts[i] for i in order[s : s + size]] for s in range(0, len(order), size)]
        pool = self._pool(ray, len(batches))
        vectors = np.concatenate(list(pool.map(lambda actor, batch: actor.encode.remote(batch), batches)))
        out = np.empty_like(vectors)
        out[order] = vectors
        return out

    def close(self) -> None:
        """Stop the actors (their models are freed)."""
        if self._actors:
            ray = ray_module()
            for actor in self._actors:
                ray.kill(actor)
            self._actors, self._target = [], None

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_with_ray(texts: Sequence[str], *, embedder_factory: Factory, batch_size: int = 256,
                   workers: int | None = None) -> np.ndarray:
    """Embed texts on Ray actors (no cache: for cached runs pass a RayEmbedder to embed_texts).

    Args:
        texts: texts to embed.
        embedder_factory: picklable callable returning an Embedder, e.g. SentenceTransformerEmbedder.
        batch_size: texts per actor call.
        workers: actors (None: the CPUs free in the cluster).

    Returns:
        (len(texts), dim) float32 unit vectors in input order.
    """
    with RayEmbedder(embedder_factory, batch_size=batch_size, workers=workers) as embedder:
        return embedder.encode(texts)


def embed_texts_with_ray(texts: Sequence[str], *, embed_model: str | None = None, embedder: Embedder | None = None,
                         cache: EmbeddingCache | None = None, progress: Callable[[int, int], None] | None = None,
                         workers: int | None = None) -> EmbedResult:
    """embed_texts with its cache misses computed on Ray actors; the driver alone reads and writes the cache.

    Args:
        texts: texts to embed.
        embed_model: as for the local engine: None (MiniLM), "minilm-int8", "model2vec", or a
            sentence-transformers name/folder.
        embedder: an Embedder to copy into each actor instead (it must pickle); None builds one from embed_model.
        cache: the EmbeddingCache (default: from the environment).
        progress: called with (done, total) after each cache write.
        workers: actors (None: the CPUs free in the cluster).

    Returns:
        The EmbedResult embed_texts returns.
    """

    factory = functools.partial(embedder_for, embed_model) if embedder is None else functools.partial(_same, embedder)
    with RayEmbedder(factory, workers=workers) as ray_embedder:
        return embed_texts(texts, embedder=ray_embedder, cache=cache, batch_size=suggested_chunk(ray_embedder),
                           progress=progress)


def _same(obj: Any) -> Any:
    """A factory's body that hands back the (unpickled copy of the) object it was given."""
    return obj


# --- units of a run (LLM selection, rating) -------------------------------------------------------


class _UnitWorker:
    """A Ray actor holding one resource (a chat backend); runs several units at once (threads) when allowed."""

    def __init__(self, factory: Factory) -> None:
        self.resource = factory()

    def run(self, work: Callable[[Any, int, Any], Any], index: int, payload: Any) -> Any:
        return work(self.resource, index, payload)


class RayExecutor:
    """An executor for `engines.run_units` whose units run on Ray actors; outcomes come back to the driver.

    Each actor builds its own resource with the factory (a live backend holds locks and clients). The
    backend's `concurrency` (calls in flight in all) is shared out among the actors, each keeping at least
    one call in flight. Only the driver process writes the workspace, so resume and retries behave exactly
    as with threads.

    Args:
        resource_factory: picklable callable returning the resource (see backend_factory_for).
        workers: actors (None: one per alive node), placed on the alive nodes in turn. They reserve no CPU:
            with a remote server they mostly wait; with a local model, give each node one worker.
    """

    def __init__(self, resource_factory: Factory, *, workers: int | None = None) -> None:
        self.resource_factory = resource_factory
        self.workers = workers
        self._actors: list[Any] = []
        self._shape: tuple[int, int] | None = None  # (actors, calls in flight each) of the live actors

    @classmethod
    def for_backend(cls, backend: ChatBackend, *, workers: int | None = None) -> RayExecutor:
        """An executor whose actors rebuild this backend from its settings."""
        return cls(backend_factory_for(backend), workers=workers)

    def map(self, work: Callable[[Any, int, Any], Any], items: Iterable[tuple[int, Any]], *,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
        """Yield work(resource, index, payload) in completion order; after stop() no new unit is sent.

        The actors outlive one map: a tournament's rounds reuse them (and the model each one loaded) until
        `close()`, or until a map is closed early or fails. The work function must pickle (a module-level
        function or a functools.partial of one).
        """
        ray = ray_module()
        items = list(items)
        if not items:
            return
        total = max(1, int(getattr(self.resource_factory(), "concurrency", 1)))
        nodes = _alive_nodes(ray)
        count = max(1, min(self.workers or len(nodes), len(items)))
        per_actor = math.ceil(total / count)  # --concurrency keeps meaning "calls in flight" (at least one each)
        actors = self._actors_for(ray, nodes, count, per_actor)
        load = [0] * count
        pending: dict[Any, int] = {}
        queue = iter(items)
        work_ref = ray.put(work)
        finished = False
        try:
            while True:
                while len(pending) < count * per_actor and not stop() and (item := next(queue, None)) is not None:
                    slot = load.index(min(load))
                    pending[actors[slot].run.remote(work_ref, item[0], item[1])] = slot
                    load[slot] += 1
                if not pending:
                    finished = True
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                load[pending.pop(ready[0])] -= 1
                yield _unwrap(ray, ready[0])
        finally:
            if not finished:  # closed early or failed: calls may still be in flight on these actors
                self.close()

    def _actors_for(self, ray: Any, nodes: list[str], count: int, per_actor: int) -> list[Any]:
        """The live actors when they have this shape, else new ones (the old ones stopped)."""
        if self._shape != (count, per_actor) or not self._actors:
            self.close()
            actor = ray.remote(num_cpus=0, max_concurrency=per_actor)(_UnitWorker)
            self._actors = [actor.options(scheduling_strategy=_on_node(nodes[i % len(nodes)])).remote(
                self.resource_factory) for i in range(count)]
            self._shape = (count, per_actor)
        return self._actors

    def close(self) -> None:
        """Stop the actors (a run ends with this; the next map starts new ones)."""
        if self._actors:
            ray = ray_module()
            for a in self._actors:
                ray.kill(a)
        self._actors, self._shape = [], None


def _on_node(node_id: str) -> Any:
    """Place an actor on this node.

    Measured on a two-node cluster (tests/test_ray_cluster.py's setup), two zero-CPU actors shared one node
    in 4 of 8 tries under Ray's SPREAD strategy and in 3 of 4 under soft node affinity; hard affinity put
    them where asked in 8 of 8. A node lost before its actor starts fails the run with a BackendError; the
    same command resumes it on the nodes that are left.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def _unwrap(ray: Any, ref: Any) -> Any:
    """The result of a task; a worker's exception is raised as itself (a BackendError stays one)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as exc:
        raise BackendError(f"A Ray worker was lost (its node may have left the cluster): {exc}. Run the same "
                           "command again: finished units are kept, and the lost worker's are asked again.") from None


def backend_factory_for(backend: ChatBackend) -> Factory:
    """A picklable recipe that rebuilds a backend inside a Ray worker (a live one holds locks and clients).

    The API key is not shipped unless the backend was given one explicitly: workers read the environment
    variable the backend names (set it on every node, or in Ray's runtime_env).

    Args:
        backend: an OpenAICompatibleBackend or LocalLlamaBackend (rebuilt from its settings), or any backend
            that pickles (copied).

    Returns:
        A zero-argument callable returning an equivalent backend.
    """
    if isinstance(backend, OpenAICompatibleBackend):
        return functools.partial(
            OpenAICompatibleBackend, model=backend.model, base_url=backend.base_url,
            api_key=backend._api_key, api_key_env=backend.api_key_env, timeout=backend.timeout,
            max_retries=backend.max_retries, concurrency=backend.concurrency, json_mode=backend.json_mode)
    if isinstance(backend, LocalLlamaBackend):
        return functools.partial(LocalLlamaBackend, backend.model_path, n_ctx=backend.n_ctx,
                                 n_threads=backend.n_threads, seed=backend.seed)
    try:
        pickle.dumps(backend)
    except (TypeError, AttributeError, pickle.PicklingError):
        raise ConfigError(f"the Ray engine cannot copy a {type(backend).__name__} into its workers; "
                          "pass backend_factory= yourself, or use the local engine.") from None
    return functools.partial(_same, backend)


def suggested_chunk(embedder: RayEmbedder) -> int:
    """embed_texts batch size that keeps every actor busy: 4 batches per actor between cache writes."""
    ray = ray_module()
    return embedder.batch_size * 4 * (embedder.workers or _cpus(ray))


__all__ = ["RayEmbedder", "RayExecutor", "backend_factory_for", "embed_texts_with_ray", "embed_with_ray",
           "ray_module", "suggested_chunk"]
