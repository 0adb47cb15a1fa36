"""Retry policy and rate limit, in one place for every destination.

DESIGN.md, "Delivery failures": retriable failures (connect errors, timeouts, 408, 429, 5xx)
are retried with backoff; when attempts run out the deliver task fails (so the run fails and
the cursor stays). Other rejections go to the dead letters (``Rejection``).

- ``RetryPolicy.call`` retries a send that raised ``RetriableError``: exponential backoff with
  full jitter (a uniform delay between 0 and ``base * 2**(attempt-1)``, capped), or exactly
  the server's ``Retry-After`` when it gave one (capped by ``max_retry_after``).
- ``RateLimiter`` is a token bucket: ``rate`` sends per second on average, bursts up to
  ``burst``. Clock and sleep are injectable, so tests run on a fake clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from airflow_dataflow.errors import RetriableError

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], None]

RETRIABLE_STATUSES = frozenset({408, 429})


def is_retriable_status(status: int) -> bool:
    """408, 429 and every 5xx are worth retrying; other 4xx are rejections."""
    return status in RETRIABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@dataclass
class RetryPolicy:
    """How often and how long to retry a send that raised ``RetriableError``."""

    max_attempts: int = 5  # counting the first try
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    sleep: Sleep = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling)

    def call(self, send: Callable[[], T], *, what: str = "send") -> T:
        """``send()``, retried on ``RetriableError``; the last error is raised when attempts run out."""
        attempt = 1
        while True:
            try:
                return send()
            except RetriableError as exc:
                if attempt >= self.max_attempts:
                    raise type(exc)(
                        f"{exc} (gave up after {attempt} attempts of {what})",
                        retry_after=exc.retry_after,
                    ) from exc
                self.sleep(self.delay(attempt, exc.retry_after))
                attempt += 1


class RateLimiter:
    """Token bucket: at most ``rate`` acquisitions per second on average, ``burst`` at once."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else (rate or 1.0))
        self.clock = clock
        self.sleep = sleep
        self.tokens = self.capacity
        self.updated = clock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Wait until ``tokens`` are available and take them; returns the seconds waited."""
        if not self.rate:
            return 0.0
        waited = 0.0
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            # The tolerance ends the wait when float rounding leaves a shortfall too small for
            # the clock to move by (a pause of 1e-16 s would loop forever).
            if self.tokens >= tokens - 1e-9:
                self.tokens = max(0.0, self.tokens - tokens)
                return waited
            pause = (tokens - self.tokens) / self.rate
            self.sleep(pause)
            waited += pause
