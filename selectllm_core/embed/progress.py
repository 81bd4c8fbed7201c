"""Rows per second and the time left, from the (done, total) reports of `embed_texts`.

    rate = Throughput()
    embed_texts(texts, progress=lambda d, t: bar.progress(d / t, text=rate.sentence(d, t)))
    # "Embedding 12,800 / 1,000,000 rows · 152 rows/s · about 1 h 48 min left"

The rate is measured over the last `window` seconds of reports, from the first finished batch on: the model's
loading (before the first batch) is left out, and a rate that drifts is followed. Misses are embedded longest
first, so later rows go faster and the time left errs long early on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


def duration(seconds: float) -> str:
    """A short human duration: "45 s", "12 min", "1 h 48 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Throughput:
    """Turns (done, total) reports into rows per second and seconds left.

    Args:
        window: seconds of recent reports the rate is measured over.
        clock: seconds, monotonic (a test passes a fake one).
    """

    def __init__(self, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.points: deque[tuple[float, int]] = deque()
        self.done = 0
        self.total = 0

    def update(self, done: int, total: int) -> None:
        """Record one report; a report with fewer rows done than the last starts a new measurement."""
        now = self.clock()
        if self.points and done < self.points[-1][1]:
            self.points.clear()
        if done > 0 or not self.points:
            self.points.append((now, done))
        while len(self.points) > 2 and now - self.points[1][0] > self.window:
            self.points.popleft()
        self.done, self.total = done, total

    @property
    def rate(self) -> float | None:
        """Rows per second over the window; None until two batches have finished."""
        started = [(t, d) for t, d in self.points if d > 0]
        if len(started) < 2 or started[-1][0] <= started[0][0]:
            return None
        (t0, d0), (t1, d1) = started[0], started[-1]
        return (d1 - d0) / (t1 - t0)

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate else None

    def sentence(self, done: int, total: int, *, noun: str = "rows") -> str:
        """Record a report and describe it: rows done, rows per second and the time left once known."""
        self.update(done, total)
        if done == 0:
            return f"Loading the embedding model; {total:,} {noun} to embed"
        text = f"Embedding {done:,} / {total:,} {noun}"
        if done >= total:
            return text
        rate, left = self.rate, self.seconds_left
        if rate is None or left is None:
            return f"{text} · measuring speed"
        return f"{text} · {rate:,.0f} {noun}/s · about {duration(left)} left"
