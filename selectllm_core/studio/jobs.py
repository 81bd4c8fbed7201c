"""Background runs: one thread per run in the server process, each with its own workspace connection.

The thread calls `pipeline.run` (or `retry_failed`, or another selection method through `methods.run_method`); every subset outcome lands in the workspace as soon as it
is known, so a page reads progress from the store (subset results against the plan) and the progress survives
page switches and reloads. Starting a run that is already running here returns the running job (a no-op).
If the server stops, the run resumes where it left off when started again (finished subsets are kept).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selectllm_core import methods, pipeline
from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import RunStopped, SelectLLMError
from selectllm_core.llm import ChatBackend
from selectllm_core.pool.load import Pool
from selectllm_core.store import Store

log = logging.getLogger(__name__)

_JOBS: dict[str, Job] = {}
_LOCK = threading.Lock()


@dataclass
class Job:
    """One background run or retry; `error` holds the message shown to the curator when it failed."""

    run_id: str
    kind: str
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stage: str = "starting"
    done: int = 0
    total: int = 0
    error: str | None = None
    summary: dict | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)  # the curator's Stop
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def start_run(*, workspace: Path | str, pool_id: str, config: pipeline.RunConfig, backend: ChatBackend, embedder: Any = None,
              cache_root: Path | str | None = None, max_cost: float | None = None, responses: bool = True) -> Job:
    """Start (or resume) a SelectLLM run in a background thread; a no-op while the same run is running.

    Args:
        workspace: the workspace file; the thread opens its own Store on it.
        pool_id: a pool stored in the workspace.
        config: a pipeline.RunConfig.
        backend: the chat backend (it may hold an API key in memory; the store only sees describe()).
        embedder: the embedder (default: the bundled model).
        cache_root: the embedding cache folder (default: from the environment).
        max_cost: the run's spending cap (see `pipeline.run`).
        responses: read and fill the response cache of the cache folder.

    Returns:
        The Job (the running one when this run was already started); `stop(run_id)` stops it cleanly.
    """
    pool = _read_pool(workspace, pool_id)  # read once: the id needs it, and so does the run
    run_id = pipeline.run_id_of(pool, config, backend)

    def work(job: Job) -> None:
        store = Store(workspace)
        try:
            result = pipeline.run(pool, config, store=store, backend=backend, embedder=embedder,
                                  cache=EmbeddingCache(cache_root), max_cost=max_cost, cancel=job.cancel,
                                  responses=responses,
                                  progress=lambda stage, _d, _t: _set_stage(job, stage))
            job.summary = result.summary
        finally:
            store.close()

    return _start(run_id, "run", work)


def start_retry(*, workspace: Path | str, run_id: str, backend: ChatBackend, subsets: list[int] | None = None,
                responses: bool = True) -> Job:
    """Call a run's failed (or the given) subsets again in a background thread; a no-op while it runs."""

    def work(job: Job) -> None:
        store = Store(workspace)
        try:
            job.stage = "select"
            job.summary = pipeline.retry_failed(store, run_id, backend=backend, subsets=subsets, cancel=job.cancel,
                                                responses=responses)
        finally:
            store.close()

    return _start(run_id, "retry", work)


def start_method(*, workspace: Path | str, pool_id: str, name: str, budget: int, params: dict, backend: Any = None,
                 embedder: Any = None, cache_root: Path | str | None = None, responses: bool = True) -> Job:
    """Run another selection method (see `selectllm_core.methods`) in a background thread.

    The job is keyed by the run id the method run will have, so a page can find it again; while it works its
    stage names the step ("embed", "rate") and done / total count it; when it is done its summary holds
    selected, short_by and flags.
    """
    pool = _read_pool(workspace, pool_id)
    run_id = methods.run_id(name, pool, budget=budget, embedder=embedder, backend=backend, **params)

    def work(job: Job) -> None:
        store = Store(workspace)
        try:
            result = methods.run_method(name, pool, budget=budget, store=store,
                                        embedder=embedder, cache=EmbeddingCache(cache_root), backend=backend,
                                        progress=lambda stage, d, t: _set_stage(job, stage, d, t),
                                        cancel=job.cancel, responses=responses, **params)
            job.summary = {"selected": result.selected, "short_by": result.short_by, "flags": result.flags}
        finally:
            store.close()

    return _start(run_id, "method", work)


def _read_pool(workspace: Path | str, pool_id: str) -> Pool:
    """A stored pool, read with a Store of its own (the page's Store belongs to the page's thread)."""
    reader = Store(workspace)
    try:
        return reader.load_pool(pool_id)
    finally:
        reader.close()


def _start(run_id: str, kind: str, work: Any) -> Job:
    """Register and start a job unless one for this run is alive."""
    with _LOCK:
        current = _JOBS.get(run_id)
        if current is not None and current.running:
            return current
        job = Job(run_id=run_id, kind=kind)
        job.thread = threading.Thread(target=_guarded, args=(job, work), name=f"selectllm-{kind}-{run_id}",
                                      daemon=True)
        _JOBS[run_id] = job
        job.thread.start()
        return job


def _guarded(job: Job, work: Any) -> None:
    """Run a job, keeping its error for the page instead of losing it in a thread."""
    try:
        work(job)
        job.stage = "done"
    except RunStopped as exc:  # the curator's Stop: not a failure, the run resumes
        job.error, job.stage = str(exc), "stopped"
    except SelectLLMError as exc:
        job.error, job.stage = str(exc), "failed"
    except Exception as exc:  # the thread is a boundary: anything unexpected must reach the curator
        log.exception("background %s of %s failed", job.kind, job.run_id)
        job.error, job.stage = f"Unexpected error ({type(exc).__name__}: {exc}). See the server log.", "failed"
    finally:
        job.finished = time.time()


def _set_stage(job: Job, stage: str, done: int = 0, total: int = 0) -> None:
    job.stage, job.done, job.total = stage, done, total


def get(run_id: str) -> Job | None:
    """The latest job of a run started in this server process, if any."""
    with _LOCK:
        return _JOBS.get(run_id)


def is_running(run_id: str) -> bool:
    """True while a run or retry of this run is working in this process."""
    job = get(run_id)
    return job is not None and job.running


def stop(run_id: str) -> bool:
    """Ask a running job to stop: no new call starts, calls in flight finish and are kept. False if none runs."""
    job = get(run_id)
    if job is None or not job.running:
        return False
    job.cancel.set()
    return True


def wait(run_id: str, timeout: float | None = None) -> Job | None:
    """Block until the run's job ends (tests, scripts); returns the job."""
    job = get(run_id)
    if job is not None and job.thread is not None:
        job.thread.join(timeout)
    return job
