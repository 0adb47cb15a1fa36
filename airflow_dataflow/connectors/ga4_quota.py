"""GA4 property quotas: read from every response (``returnPropertyQuota``), paced, and named.

Each runReport answer carries ``propertyQuota``: for each quota, the tokens (or requests) this
request ``consumed`` and what ``remaining`` is left. ``QuotaPacer`` keeps the last reading and:

- paces hourly quotas (``tokensPerHour``, ``tokensPerProjectPerHour``,
  ``potentiallyThresholdedRequestsPerHour``): when fewer than ``LOW_WATER_REQUESTS`` requests'
  worth remain, it sleeps ``3600 s / requests left`` (at most ``MAX_PAUSE``) before the next
  request, spreading what is left over the hour instead of running into a 429;
- warns once when ``tokensPerDay`` runs low (waiting cannot help: it returns the next day);
- tells a 429 RESOURCE_EXHAUSTED apart: an exhausted quota (named by GA4's message, else by the
  last reading) fails the run; a 429 with quota left (``concurrentRequests``, or nothing
  exhausted) is transient and retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]

# The PropertyQuota fields (JSON names) and how messages name them.
QUOTA_NAMES = {
    "tokensPerDay": "tokens per day",
    "tokensPerHour": "tokens per hour",
    "tokensPerProjectPerHour": "tokens per project per hour",
    "concurrentRequests": "concurrent requests",
    "serverErrorsPerProjectPerHour": "server errors per project per hour",
    "potentiallyThresholdedRequestsPerHour": "potentially thresholded requests per hour",
}
_PROTO_FIELDS = {
    "tokensPerDay": "tokens_per_day",
    "tokensPerHour": "tokens_per_hour",
    "tokensPerProjectPerHour": "tokens_per_project_per_hour",
    "concurrentRequests": "concurrent_requests",
    "serverErrorsPerProjectPerHour": "server_errors_per_project_per_hour",
    "potentiallyThresholdedRequestsPerHour": "potentially_thresholded_requests_per_hour",
}
HOURLY = ("tokensPerHour", "tokensPerProjectPerHour", "potentiallyThresholdedRequestsPerHour")
DAILY = "tokensPerDay"
# Quotas whose exhaustion passes within seconds: a 429 naming them is retried.
TRANSIENT = frozenset({"concurrentRequests"})
# GA4's 429 messages ("Exhausted property tokens per day.", ...), most specific first.
_MESSAGE_PATTERNS = (
    ("tokens for a project per hour", "tokensPerProjectPerHour"),
    ("tokens per project per hour", "tokensPerProjectPerHour"),
    ("tokens per day", "tokensPerDay"),
    ("tokens per hour", "tokensPerHour"),
    ("concurrent requests", "concurrentRequests"),
    ("potentially thresholded", "potentiallyThresholdedRequestsPerHour"),
    ("server errors", "serverErrorsPerProjectPerHour"),
)
LOW_WATER_REQUESTS = 100
MAX_PAUSE = 300.0
HOUR = 3600.0
WHEN_BACK = {
    "tokensPerDay": "it returns the next day (midnight in the property's time zone)",
    "tokensPerHour": "it returns within the hour",
    "tokensPerProjectPerHour": "it returns within the hour (it is shared by every app of the "
    "Google Cloud project on this property)",
    "potentiallyThresholdedRequestsPerHour": "it returns within the hour",
    "serverErrorsPerProjectPerHour": "it returns within the hour",
}


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """One quota of one response: what the request consumed and what remains."""

    consumed: int
    remaining: int


def read_quota(property_quota: Any) -> dict[str, QuotaStatus]:
    """The quotas of a response's ``property_quota`` (raw protobuf), by JSON name; set ones only."""
    statuses: dict[str, QuotaStatus] = {}
    if property_quota is None:
        return statuses
    for name, proto_field in _PROTO_FIELDS.items():
        if property_quota.HasField(proto_field):
            status = getattr(property_quota, proto_field)
            statuses[name] = QuotaStatus(int(status.consumed), int(status.remaining))
    return statuses


def quota_in_message(message: str) -> str | None:
    """The quota a GA4 RESOURCE_EXHAUSTED message names, if it names one."""
    lowered = message.lower()
    for pattern, name in _MESSAGE_PATTERNS:
        if pattern in lowered:
            return name
    return None


@dataclass
class QuotaPacer:
    """Paces requests on the quotas one property reports (see the module docstring)."""

    sleep: Sleep
    low_water_requests: int = LOW_WATER_REQUESTS
    max_pause: float = MAX_PAUSE
    last: dict[str, QuotaStatus] = field(default_factory=dict)
    pause: float = 0.0  # before the next request
    paused: float = 0.0  # in total
    pauses: int = 0
    daily_warned: bool = False

    def observe(self, statuses: dict[str, QuotaStatus]) -> str | None:
        """Take a response's quotas; returns a warning the first time the daily quota runs low."""
        if not statuses:
            return None
        self.last = dict(statuses)
        self.pause = max(
            (self._hourly_pause(statuses[name]) for name in HOURLY if name in statuses), default=0.0
        )
        daily = statuses.get(DAILY)
        if daily is None or self.daily_warned or _requests_left(daily) >= self.low_water_requests:
            return None
        self.daily_warned = True
        return (
            f"only {daily.remaining} of its tokens per day are left (about "
            f"{_requests_left(daily)} more requests like the last); when they run out, runs "
            f"fail until the quota returns the next day"
        )

    def wait(self) -> None:
        """Sleep the pause the last reading called for (none when quotas are plentiful)."""
        if self.pause <= 0:
            return
        log.info("GA4 quota running low: pausing %.1f s before the next request", self.pause)
        self.sleep(self.pause)
        self.paused += self.pause
        self.pauses += 1

    def exhausted(self, message: str) -> str | None:
        """The quota a 429 RESOURCE_EXHAUSTED says is exhausted; ``None`` when it is transient.

        GA4's message names the quota; without a name, the last reading decides: a quota with
        nothing remaining is the one, otherwise there was quota left and a retry may pass.
        """
        named = quota_in_message(message)
        if named is not None:
            return None if named in TRANSIENT else named
        for name, status in self.last.items():
            if name not in TRANSIENT and status.remaining <= 0:
                return name
        return None

    def _hourly_pause(self, status: QuotaStatus) -> float:
        left = _requests_left(status)
        if left >= self.low_water_requests:
            return 0.0
        return min(self.max_pause, HOUR / max(left, 1))


def _requests_left(status: QuotaStatus) -> int:
    """How many more requests costing what the last one did the remaining tokens allow."""
    return max(status.remaining, 0) // max(status.consumed, 1)
