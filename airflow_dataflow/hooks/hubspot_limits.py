"""HubSpot's answers as plain Python: errors, rate-limit headers and the pacer.

No Airflow import here, so connectors can name these while route files are validated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_dataflow.destinations.policy import Clock, RateLimiter, Sleep
from airflow_dataflow.errors import DataflowError, RetriableError

log = logging.getLogger(__name__)

# HubSpot's default for private apps: 100 requests per rolling 10 seconds (until headers say).
DEFAULT_MAX_REQUESTS = 100
DEFAULT_INTERVAL_SECONDS = 10.0
SEARCH_REQUESTS_PER_SECOND = 5.0  # CRM search endpoints, per account; no headers tell it
PACE = 0.95  # the share of a limit used: the margin absorbs clock jitter between us and HubSpot
RESERVE = 1  # "Remaining" at or below this: someone else uses the account's quota too; wait


class HubSpotError(DataflowError):
    """Root of the hook's errors: a misconfigured connection or a refused request."""


class HubSpotApiError(HubSpotError):
    """HubSpot refused a request; carries its JSON error (status, category, message, ...)."""

    def __init__(
        self, what: str, status: int, body: str | bytes | None, headers: Mapping[str, str]
    ) -> None:
        self.status = status
        self.error = _error_body(body)
        self.category = str(self.error.get("category") or "")
        self.correlation_id = str(self.error.get("correlationId") or "")
        message = str(self.error.get("message") or body or "no details")
        detail = f" [{self.category}]" if self.category else ""
        correlation = f" (correlationId {self.correlation_id})" if self.correlation_id else ""
        super().__init__(f"{what} failed: HTTP {status}{detail}: {message}{correlation}")


class HubSpotAuthError(HubSpotApiError):
    """HubSpot refused the credentials (401), after a token refresh for OAuth connections."""


class HubSpotRetriableError(RetriableError):
    """429, 5xx or a connection failure: worth retrying (``retry_after`` when HubSpot said)."""


@dataclass(frozen=True, slots=True)
class HubSpotResponse:
    """One answer: HTTP status, headers (lower-case names) and the decoded JSON body."""

    status: int
    headers: Mapping[str, str]
    data: Any


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What ``X-HubSpot-RateLimit-*`` headers say (``None``: not sent, as on search answers)."""

    max: int | None
    interval_seconds: float | None
    remaining: int | None
    secondly: int | None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        def number(name: str) -> int | None:
            value = headers.get(f"x-hubspot-ratelimit-{name}")
            try:
                return int(value) if value is not None else None
            except ValueError:
                return None

        interval = number("interval-milliseconds")
        return cls(
            max=number("max"),
            interval_seconds=interval / 1000 if interval else None,
            remaining=number("remaining"),
            secondly=number("secondly"),
        )

    def rate(self) -> float | None:
        """Requests per second the account allows (the tighter of the window and per-second)."""
        rates = []
        if self.max and self.interval_seconds:
            rates.append(self.max / self.interval_seconds)
        if self.secondly:
            rates.append(float(self.secondly))
        return min(rates) if rates else None


class HubSpotPacer:
    """Keeps requests under the account's limits: one token bucket for every request, one more
    for search. Rates start at HubSpot's defaults and follow the rate-limit headers."""

    def __init__(
        self,
        search_rate: float = SEARCH_REQUESTS_PER_SECOND,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.sleep = sleep
        default = DEFAULT_MAX_REQUESTS / DEFAULT_INTERVAL_SECONDS
        self.general = RateLimiter(default * PACE, burst=1, clock=clock, sleep=sleep)
        self.search = RateLimiter(search_rate * PACE, burst=1, clock=clock, sleep=sleep)
        self.waited = 0.0

    def before(self, *, search: bool) -> None:
        """Wait for a free slot (search requests count against both limits)."""
        if search:
            self.waited += self.search.acquire()
        self.waited += self.general.acquire()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Follow the limit the headers announce; pause when the window is nearly used up."""
        limits = RateLimitHeaders.parse(headers)
        rate = limits.rate()
        if rate:
            self.general.rate = rate * PACE
        if limits.remaining is not None and limits.remaining <= RESERVE:
            slot = (limits.interval_seconds or DEFAULT_INTERVAL_SECONDS) / (
                limits.max or DEFAULT_MAX_REQUESTS
            )
            pause = slot * (RESERVE + 1 - limits.remaining)
            log.info("HubSpot rate limit: %s requests left, pausing %.2fs", limits.remaining, pause)
            self.sleep(pause)
            self.waited += pause


def lower_headers(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


def _error_body(body: str | bytes | None) -> dict[str, Any]:
    """HubSpot's JSON error (``{status, message, correlationId, category, ...}``), or ``{}``."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
