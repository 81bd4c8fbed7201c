"""Rows per second and the time left, as the pages show embedding progress (a fake clock)."""

from __future__ import annotations

import pytest

from selectllm_core.embed import Throughput
from selectllm_core.embed.progress import duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_leaves_out_the_model_loading_and_the_time_left_follows_it() -> None:
    clock = Clock()
    rate = Throughput(clock=clock)
    assert rate.sentence(0, 1_000_000) == "Loading the embedding model; 1,000,000 rows to embed"
    clock.now += 30  # loading the model and the first batch
    assert rate.sentence(256, 1_000_000) == "Embedding 256 / 1,000,000 rows · measuring speed"
    for _ in range(4):
        clock.now += 2
        text = rate.sentence(rate.done + 256, 1_000_000)
    assert rate.rate == pytest.approx(128.0)  # 256 rows per 2 s, from the first stored batch on
    assert rate.seconds_left == pytest.approx((1_000_000 - 1280) / 128)
    assert text == "Embedding 1,280 / 1,000,000 rows · 128 rows/s · about 2 h 10 min left"
    assert rate.sentence(1_000_000, 1_000_000) == "Embedding 1,000,000 / 1,000,000 rows"


def test_the_rate_is_measured_over_the_recent_window_and_restarts_when_the_count_goes_back() -> None:
    clock = Clock()
    rate = Throughput(window=10, clock=clock)
    rate.update(0, 10_000)
    for _ in range(10):  # 100 rows/s for 20 s, then 400 rows/s for 15 s
        clock.now += 2
        rate.update(rate.done + 200, 10_000)
    clock.now += 1
    rate.update(rate.done + 400, 10_000)
    assert rate.rate == pytest.approx((2400 - 1000) / 11)  # from the last report at least 10 s old
    for _ in range(14):
        clock.now += 1
        rate.update(rate.done + 400, 10_000)
    assert rate.rate == pytest.approx(400.0)  # only the last 10 s and the report before them
    rate.update(0, 5_000)  # a new call (a resumed pool): the old reports no longer count
    assert rate.rate is None and rate.seconds_left is None


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (59, "59 s"), (61, "1 min"), (3599, "1 h 00 min"),
                                               (3600 * 1.7, "1 h 42 min"), (-5, "0 s")])
def test_durations_read_plainly(seconds: float, text: str) -> None:
    assert duration(seconds) == text
