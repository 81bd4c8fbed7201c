"""Units computed by threads of this process: at most `workers` in flight, yielded as each completes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any


class ThreadExecutor:
    """An executor over threads sharing one resource (a chat backend that allows `workers` calls at once).

    Args:
        resource: handed to every work call (a ChatBackend, a list of (backend, weight) models).
        workers: units in flight (None: the resource's `concurrency`, else 1).
    """

    def __init__(self, resource: Any, *, workers: int | None = None) -> None:
        self.resource = resource
        self.workers = max(1, int(workers if workers is not None else getattr(resource, "concurrency", 1)))

    def map(self, work: Callable[[Any, int, Any], Any], items: Iterable[tuple[int, Any]], *,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
        """Yield work(resource, index, payload) in completion order; after stop() no new unit starts.

        One worker runs the units in the calling thread, one after another, so Ctrl-C stops at once.
        """
        if self.workers == 1:
            for index, payload in items:
                if stop():
                    return
                yield work(self.resource, index, payload)
            return
        queue = iter(items)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: set[Future] = set()
            try:
                while True:
                    while len(pending) < self.workers and not stop() and (item := next(queue, None)) is not None:
                        pending.add(pool.submit(work, self.resource, *item))
                    if not pending:
                        return
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        yield fut.result()
            finally:
                for fut in pending:  # the caller stopped early (an error): nothing queued starts
                    fut.cancel()
