"""The retry policy and the rate limiter every destination shares (fake clock, no sleeping)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from airflow_dataflow.destinations.policy import (
    RateLimiter,
    RetryPolicy,
    is_retriable_status,
    parse_retry_after,
)
from airflow_dataflow.errors import DestinationError, RetriableError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("status", "retriable"),
    [(408, True), (429, True), (500, True), (503, True), (599, True), (400, False), (404, False),
     (409, False), (422, False), (200, False)],
)  # fmt: skip
def test_retriable_statuses(status: int, retriable: bool) -> None:
    assert is_retriable_status(status) is retriable


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None


def test_backoff_is_full_jitter_capped_and_retry_after_wins() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8, rng=random.Random(3))
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (4, 8), (9, 8)):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # spread over the whole range
    assert policy.delay(2, retry_after=12.5) == 12.5
    assert RetryPolicy(max_retry_after=60).delay(1, retry_after=3600) == 60


def test_retries_retriable_errors_then_succeeds() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def send() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetriableError(
                "503 from the receiver", retry_after=2 if len(calls) == 2 else None
            )
        return "ok"

    policy = RetryPolicy(max_attempts=5, base_delay=1, sleep=clock.sleep, rng=random.Random(1))
    assert policy.call(send) == "ok"
    assert len(calls) == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[1] == 2  # the second wait is Retry-After


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()

    def send() -> None:
        raise RetriableError("timeout")

    policy = RetryPolicy(max_attempts=3, sleep=clock.sleep)
    with pytest.raises(RetriableError, match=r"timeout \(gave up after 3 attempts of POST\)"):
        policy.call(send, what="POST")
    assert len(clock.sleeps) == 2


def test_other_errors_are_not_retried() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def send() -> None:
        calls.append(1)
        raise DestinationError("400 bad request")

    with pytest.raises(DestinationError):
        RetryPolicy(sleep=clock.sleep).call(send)
    assert calls == [1] and clock.sleeps == []


def test_token_bucket_paces_to_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=2, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(10):
        limiter.acquire()
    # 2 at once (burst), then one every 0.5 s
    assert clock.now - start == pytest.approx(4.0)
    clock.now += 10  # idle: the bucket refills, but only up to the burst
    before = clock.now
    for _ in range(3):
        limiter.acquire()
    assert clock.now - before == pytest.approx(0.5)


def test_no_rate_means_no_waiting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        assert limiter.acquire() == 0
    assert clock.sleeps == []


def test_rate_limiter_wait_ends_when_float_rounding_leaves_a_tiny_shortfall() -> None:
    """A slow rate on a clock far from zero: after sleeping the computed pause, rounding can
    leave the bucket a hair short of a token; the wait must end instead of sleeping 1e-16 s
    (which does not move the clock) forever."""
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    rate = 2 / 60 * 0.95
    limiter = RateLimiter(rate, burst=1, clock=lambda: now[0], sleep=sleep)
    waited = [limiter.acquire() for _ in range(4)]
    assert waited[0] == 0.0
    assert waited[1:] == pytest.approx([1 / rate] * 3)
