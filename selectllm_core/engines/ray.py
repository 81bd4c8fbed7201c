"""An optional Ray engine for the two heavy stages: embedding and LLM selection over a Ray cluster.

Workers compute; the driver writes. Ray actors return vectors and subset outcomes, and only the driver
touches the embedding cache and the workspace, so caching, resume and retries behave exactly as with the
default in-process engine. Needs `pip install ray` (see requirements-scale.txt); `ray.init()` joins the
cluster named by $RAY_ADDRESS, else starts a local one.

    vectors = embed_with_ray(texts, embedder_factory=SentenceTransformerEmbedder, batch_size=256)
    for outcome in select_with_ray(subsets, backend_factory=factory, k=3, prompt=spec, seed=0, shuffle=True):
        ...
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from selectllm_core.errors import BackendError, ConfigError
from selectllm_core.select.listwise import (
    MAX_CONSECUTIVE_ERRORS,
    Candidate,
    Progress,
    PromptSpec,
    SubsetOutcome,
    record,
    select_subset,
)

ENGINES = ("local", "ray")
Factory = Callable[[], Any]


def ray_module() -> Any:
    """The ray module, connected: joins $RAY_ADDRESS when set, else starts a local Ray (once per process)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: run `pip install -r requirements-scale.txt`, "
                          "or leave the option out to run in this process.") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)
    return ray


def _cpus(ray: Any) -> int:
    """CPUs free in the cluster right now (at least 1)."""
    return max(1, int(ray.available_resources().get("CPU", 0)))


def _nodes(ray: Any) -> int:
    """Alive nodes in the cluster."""
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


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
        batch_size: texts per actor call.
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

    def _pool(self, batches: int) -> Any:
        """The actors, started as first needed: no more than there are batches to run."""
        ray = ray_module()
        if self._target is None:
            # each actor reserves a CPU: more than the cluster has would wait forever
            total = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._target = min(self.workers or _cpus(ray), total)
        actor = ray.remote(num_cpus=1)(_EmbedWorker)
        while len(self._actors) < min(self._target, batches):
            self._actors.append(actor.remote(self.embedder_factory))
        from ray.util import ActorPool

        return ActorPool(self._actors)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (returned in input order), batches spread over the actors."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        # longest first, so each batch holds texts of similar length and pads little
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [[texts[i] for i in order[s : s + self.batch_size]] for s in range(0, len(order), self.batch_size)]
        pool = self._pool(len(batches))
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


def embed_texts_with_ray(texts: Sequence[str], *, embed_model: str | None = None, embedder: Any = None,
                         cache: Any = None, progress: Any = None, workers: int | None = None) -> Any:
    """embed_texts with its cache misses computed on Ray actors; the driver alone reads and writes the cache.

    Args:
        texts: texts to embed.
        embed_model: as for the local engine: None (MiniLM), "model2vec", or a sentence-transformers name/folder.
        embedder: an Embedder to copy into each actor instead (it must pickle); None builds one from embed_model.
        cache: the EmbeddingCache (default: from the environment).
        progress: called with (done, total) after each cache write.
        workers: actors (None: the CPUs free in the cluster).

    Returns:
        The EmbedResult embed_texts returns.
    """
    from selectllm_core.embed import embed_texts, embedder_for

    factory = functools.partial(embedder_for, embed_model) if embedder is None else functools.partial(_same, embedder)
    with RayEmbedder(factory, workers=workers) as ray_embedder:
        return embed_texts(texts, embedder=ray_embedder, cache=cache, batch_size=suggested_chunk(ray_embedder),
                           progress=progress)


def _same(obj: Any) -> Any:
    """A factory's body that hands back the (unpickled copy of the) object it was given."""
    return obj


# --- LLM selection --------------------------------------------------------------------------------


class _SelectWorker:
    """A Ray actor holding one chat backend; runs several subsets at once (threads) when it allows."""

    def __init__(self, factory: Factory) -> None:
        self.backend = factory()

    def run(self, members: list[Candidate], subset: int, k: int, prompt: PromptSpec, seed: int,
            shuffle: bool) -> SubsetOutcome:
        return select_subset(self.backend, members, subset=subset, k=k, prompt=prompt, seed=seed, shuffle=shuffle)


def select_with_ray(
    subsets: Mapping[int, list[Candidate]] | Iterable[tuple[int, list[Candidate]]], *, backend_factory: Factory,
    k: int, prompt: PromptSpec, seed: int = 0, shuffle: bool = True, workers: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[SubsetOutcome]:
    """Ask the model about each subset on Ray actors; yield outcomes as they finish (nothing is stored).

    Each actor builds its own backend; the backend's `concurrency` (calls in flight in all) is shared out
    among the actors, each keeping at least one call in flight. Closing the iterator early stops the actors.

    Args:
        subsets: subset index -> rows, or (index, rows) pairs.
        backend_factory: picklable callable returning a ChatBackend (see backend_factory_for).
        k: picks per subset.
        prompt: the prompt side of the run.
        seed: shuffle seed.
        shuffle: shuffle candidates.
        workers: actors (None: one per alive node). They reserve no CPU: with a remote server they mostly wait;
            with a local model, give each node one worker.
        stop: checked before each new subset is sent; once it returns True no more are sent, and the calls
            already in flight still finish and are yielded (they are paid for).

    Returns:
        An iterator of SubsetOutcome in completion order.
    """
    ray = ray_module()
    items = list(subsets.items()) if isinstance(subsets, Mapping) else list(subsets)
    total = max(1, int(getattr(backend_factory(), "concurrency", 1)))
    count = max(1, min(workers or _nodes(ray), len(items)))
    per_actor = math.ceil(total / count)  # --concurrency keeps meaning "calls in flight" (at least one per actor)
    actor = ray.remote(num_cpus=0, max_concurrency=per_actor, scheduling_strategy="SPREAD")(_SelectWorker)
    actors = [actor.remote(backend_factory) for _ in range(count)]
    load = [0] * count
    pending: dict[Any, int] = {}
    queue = iter(items)
    try:
        while True:
            while (len(pending) < count * per_actor and not (stop and stop())
                   and (item := next(queue, None)) is not None):
                slot = load.index(min(load))
                pending[actors[slot].run.remote(item[1], item[0], k, prompt, seed, shuffle)] = slot
                load[slot] += 1
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            load[pending.pop(ready[0])] -= 1
            yield _unwrap(ray, ready[0])
    finally:
        for a in actors:
            ray.kill(a)


def _unwrap(ray: Any, ref: Any) -> SubsetOutcome:
    """The result of a task; a worker's exception is raised as itself (a BackendError stays one)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None


def execute_with_ray(
    store: Any, run_id: str, subsets: dict[int, list[Candidate]], *, backend: Any = None,
    backend_factory: Factory | None = None, k: int, prompt: PromptSpec, seed: int = 0, shuffle: bool = True,
    progress: Progress | None = None, workers: int | None = None,
) -> dict:
    """selection.execute on Ray: same skipping of finished subsets, same storage, same stop after errors.

    Args:
        store: the workspace (written by this driver process only).
        run_id: the run (already created).
        subsets: subset index -> its rows.
        backend: the run's ChatBackend, rebuilt in each worker by backend_factory_for (same call as execute).
        backend_factory: picklable callable returning the backend, instead of `backend`.
        k: picks per subset.
        prompt: the prompt side of the run.
        seed: shuffle seed.
        shuffle: shuffle candidates.
        progress: called with (done, total, counts) after each subset.
        workers: Ray actors (None: one per alive node).

    Returns:
        Counts of outcomes in this call: {"ok", "failed", "error", "skipped", "called"}.
    """
    if backend_factory is None:
        backend_factory = backend_factory_for(backend)
    done = store.done_subsets(run_id)
    todo = [(s, subsets[s]) for s in sorted(subsets) if s not in done]
    counts = {"ok": 0, "failed": 0, "error": 0, "skipped": 0, "called": 0}
    total, finished, streak = len(subsets), len(done), 0
    store.set_run_status(run_id, "running")
    if progress:
        progress(finished, total, dict(counts))
    stopping, last_error = False, None
    outcomes = select_with_ray(todo, backend_factory=backend_factory, k=k, prompt=prompt, seed=seed,
                               shuffle=shuffle, workers=workers, stop=lambda: stopping) if todo else iter(())
    for o in outcomes:  # after a stop, the calls still in flight arrive here too and are kept
        record(store, run_id, o, counts)
        finished += 1
        streak = streak + 1 if o.status == "error" else 0
        if progress:
            progress(finished, total, dict(counts))
        if streak >= MAX_CONSECUTIVE_ERRORS and not stopping:
            stopping, last_error = True, o.error
    if stopping:
        store.set_run_status(run_id, "interrupted")
        raise BackendError(
            f"Stopped: {MAX_CONSECUTIVE_ERRORS} subsets in a row could not reach the model. Last error: "
            f"{last_error} Fix the backend and run the same command again: finished subsets are kept."
        )
    return counts


def backend_factory_for(backend: Any) -> Factory:
    """A picklable recipe that rebuilds a backend inside a Ray worker (a live one holds locks and clients).

    The API key is not shipped unless the backend was given one explicitly: workers read the environment
    variable the backend names (set it on every node, or in Ray's runtime_env).

    Args:
        backend: an OpenAICompatibleBackend or LocalLlamaBackend (rebuilt from its settings), or any backend
            that pickles (copied).

    Returns:
        A zero-argument callable returning an equivalent backend.
    """
    from selectllm_core.llm.local import LocalLlamaBackend
    from selectllm_core.llm.openai_compat import OpenAICompatibleBackend

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


__all__ = ["ENGINES", "RayEmbedder", "backend_factory_for", "embed_texts_with_ray", "embed_with_ray",
           "execute_with_ray", "ray_module", "select_with_ray", "suggested_chunk"]
