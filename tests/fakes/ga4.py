"""A Google Analytics Data API (v1beta) on loopback: ``POST /v1beta/properties/{id}:runReport``.

Answers as the real API does, in its JSON (the client library's REST transport parses it):

- ``dimensionHeaders``, ``metricHeaders`` with their ``type`` (enum names, or numbers when the
  client asks ``$alt=json;enum-encoding=int`` as the Python client does), ``rows`` of
  ``dimensionValues``/``metricValues`` (strings), ``rowCount`` (all rows, whatever the page),
  ``metadata`` (``currencyCode``, ``timeZone``, ``samplingMetadatas``,
  ``subjectToThresholding``, ``dataLossFromOtherRow``) and, with ``returnPropertyQuota``,
  ``propertyQuota`` (``tokensPerDay``, ``tokensPerHour``, ``concurrentRequests``,
  ``serverErrorsPerProjectPerHour``, ``potentiallyThresholdedRequestsPerHour``,
  ``tokensPerProjectPerHour``, each ``{consumed, remaining}``). Proto3 JSON: zero values, empty
  lists and false flags are left out; int64 fields (``samplesReadCount``) are strings.
- Paging: ``offset`` (default 0) and ``limit`` (default 10,000, at most 250,000).
  ``orderBys`` on dimensions and metrics; ``dimensionFilter`` (``filter`` with
  ``stringFilter``/``inListFilter``, ``andGroup``, ``orGroup``, ``notExpression``).
- Errors in Google's shape ``{"error": {"code", "message", "status"}}``: 400
  INVALID_ARGUMENT (unknown dimension or metric, too many of them, bad dates), 403
  PERMISSION_DENIED (unknown property), 429 RESOURCE_EXHAUSTED when a token quota cannot pay
  for the request ("Exhausted property tokens per hour." ...), and scripted answers.

Data is deterministic per property and date: every (date, country, deviceCategory) has fixed
base numbers, aggregated over the dimensions asked for. ``late_data`` adds sessions to a day
(data that arrives late), ``sampled``/``thresholded`` dates flag the metadata, and
``other_row_limit`` folds a day's smallest rows into an ``(other)`` row as GA4 does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fakes.loopback import LoopbackServer

PROPERTY_ID = "123456789"
API_SCHEMA = "https://developers.google.com/analytics/devguides/reporting/data/v1/api-schema"
COUNTRIES = ("France", "Germany", "Japan", "United States")
DEVICES = ("desktop", "mobile", "tablet")
DIMENSIONS = ("date", "isoYearIsoWeek", "country", "deviceCategory")
METRIC_TYPES = {
    "sessions": "TYPE_INTEGER",
    "activeUsers": "TYPE_INTEGER",
    "engagedSessions": "TYPE_INTEGER",
    "engagementRate": "TYPE_FLOAT",
    "averageSessionDuration": "TYPE_SECONDS",
    "purchaseRevenue": "TYPE_CURRENCY",
}
METRIC_TYPE_NUMBERS = {"TYPE_INTEGER": 1, "TYPE_FLOAT": 2, "TYPE_SECONDS": 4, "TYPE_CURRENCY": 9}
MATCH_TYPES = {
    0: "EXACT",
    1: "EXACT",
    2: "BEGINS_WITH",
    3: "ENDS_WITH",
    4: "CONTAINS",
    5: "FULL_REGEXP",
    6: "PARTIAL_REGEXP",
}
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 250_000
OTHER = "(other)"
# The messages GA4 gives when a quota cannot pay for a request.
EXHAUSTED = {
    "tokensPerDay": "Exhausted property tokens per day.",
    "tokensPerHour": "Exhausted property tokens per hour.",
    "tokensPerProjectPerHour": "Exhausted property tokens for a project per hour.",
    "concurrentRequests": "Exhausted concurrent requests quota.",
    "potentiallyThresholdedRequestsPerHour": "Exhausted potentially thresholded requests quota.",
}
TOKEN_QUOTAS = ("tokensPerDay", "tokensPerHour", "tokensPerProjectPerHour")


@dataclass(frozen=True)
class Reply:
    """A scripted answer: HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


def google_error(code: int, message: str, status: str) -> Reply:
    """An error in Google's JSON shape."""
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})


def unavailable() -> Reply:
    return google_error(503, "The service is currently unavailable.", "UNAVAILABLE")


def internal_error() -> Reply:
    return google_error(500, "Internal error encountered.", "INTERNAL")


def exhausted(quota: str) -> Reply:
    """GA4's 429 for ``quota`` (a PropertyQuota field name)."""
    return google_error(429, EXHAUSTED[quota], "RESOURCE_EXHAUSTED")


@dataclass
class Quota:
    """What is left of a property's quotas (GA4's standard property limits by default)."""

    tokensPerDay: int = 200_000
    tokensPerHour: int = 40_000
    tokensPerProjectPerHour: int = 14_000
    concurrentRequests: int = 10
    serverErrorsPerProjectPerHour: int = 10
    potentiallyThresholdedRequestsPerHour: int = 120


@dataclass
class Request:
    """One runReport the server received, and its answer's status."""

    property_id: str
    body: dict[str, Any]
    query: str
    status: int = 0

    @property
    def dates(self) -> tuple[str, str]:
        (date_range,) = self.body["dateRanges"]
        return date_range["startDate"], date_range["endDate"]

    @property
    def offset(self) -> int:
        return int(self.body.get("offset", 0))

    @property
    def limit(self) -> int:
        return int(self.body.get("limit", DEFAULT_LIMIT))


class BadRequest(Exception):
    """A request GA4 refuses with 400 INVALID_ARGUMENT."""


@dataclass
class FakeGA4(LoopbackServer):
    """The server; use as a context manager (it listens on 127.0.0.1, a free port)."""

    properties: set[str] = field(default_factory=lambda: {PROPERTY_ID})
    token_cost: int = 10  # tokens each runReport consumes from each token quota
    quota: Quota = field(default_factory=Quota)
    late_data: dict[str, int] = field(default_factory=dict)  # ISO date -> extra sessions
    sampled: set[str] = field(default_factory=set)  # ISO dates whose reports are sampled
    thresholded: set[str] = field(default_factory=set)  # ISO dates subject to thresholding
    other_row_limit: int | None = None  # rows per day before GA4 folds the rest into (other)
    today: dt.date = field(default_factory=dt.date.today)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._serve_with(_handler(self))

    def connection(self, project: str = "dataflow-test") -> dict[str, Any]:
        """An Airflow connection (JSON form) pointing the real client at this server."""
        return {
            "conn_type": "google_cloud_platform",
            "extra": {"is_anonymous": True, "project": project, "api_endpoint": self.url},
        }

    def script(self, *replies: Reply) -> None:
        """Answer the next runReport requests with ``replies`` (then normally again)."""
        with self._lock:
            self._script.extend(replies)

    def pages(self) -> list[tuple[str, str, int]]:
        """``(startDate, endDate, offset)`` of every request answered with 200, in order."""
        return [(*r.dates, r.offset) for r in self.requests if r.status == 200]

    # -- data ------------------------------------------------------------------------------

    def base_rows(self, property_id: str, day: dt.date) -> Iterator[dict[str, Any]]:
        """The day's finest rows: dimension values and additive base numbers."""
        for country in COUNTRIES:
            for device in DEVICES:
                seed = zlib.crc32(f"{property_id}|{day}|{country}|{device}".encode())
                sessions = 20 + seed % 180
                if country == COUNTRIES[0] and device == DEVICES[0]:
                    sessions += self.late_data.get(day.isoformat(), 0)
                engaged = sessions * (40 + seed % 50) // 100
                yield {
                    "date": day.strftime("%Y%m%d"),
                    "isoYearIsoWeek": day.strftime("%G%V"),
                    "country": country,
                    "deviceCategory": device,
                    "sessions": sessions,
                    "activeUsers": max(1, sessions - seed % 15),
                    "engagedSessions": engaged,
                    "duration": sessions * (30 + seed % 240),
                    "revenue": round(sessions * (seed % 13) * 1.25, 2),
                }

    def report(
        self, property_id: str, first: dt.date, last: dt.date, dims: list[str], body: dict[str, Any]
    ) -> tuple[list[tuple[list[str], dict[str, float]]], bool]:
        """The report's rows (dimension values, base sums) and whether (other) took some."""
        check = _filter(body.get("dimensionFilter"))
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        rows: list[tuple[list[str], dict[str, float]]] = []
        lost = False
        for day in days:
            groups: dict[tuple[str, ...], dict[str, float]] = {}
            for base in self.base_rows(property_id, day):
                if not check(base):
                    continue
                key = tuple(base[name] for name in dims)
                sums = groups.setdefault(key, dict.fromkeys(_ADDITIVE, 0.0))
                for name in _ADDITIVE:
                    sums[name] += base[name]
            day_rows = [(list(key), sums) for key, sums in groups.items()]
            if self.other_row_limit is not None and len(day_rows) > self.other_row_limit:
                lost = True
                day_rows = _fold_other(day_rows, dims, self.other_row_limit)
            rows.extend(day_rows)
        merged: dict[tuple[str, ...], dict[str, float]] = {}
        for values, sums in rows:  # a multi-day report without date merges the days
            into = merged.setdefault(tuple(values), dict.fromkeys(_ADDITIVE, 0.0))
            for name in _ADDITIVE:
                into[name] += sums[name]
        return [(list(key), sums) for key, sums in merged.items()], lost

    # -- request handling (called from the server's threads) ---------------------------------

    def handle(self, path: str, query: str, body: Any) -> Reply:
        match = re.fullmatch(r"/v1beta/properties/([^/:]+):runReport", unquote(path))
        if match is None:
            return google_error(404, f"Method not found: {path}", "NOT_FOUND")
        with self._lock:
            request = Request(match[1], body if isinstance(body, dict) else {}, query)
            self.requests.append(request)
            reply = self._answer(request, body)
            request.status = reply.status
            return reply

    def _answer(self, request: Request, body: Any) -> Reply:
        if self._script:
            return self._script.popleft()
        if not isinstance(body, dict):
            return google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        if request.property_id not in self.properties:
            return google_error(
                403,
                "User does not have sufficient permissions for this property. To learn more "
                "about Property ID, see https://developers.google.com/analytics/devguides/"
                "reporting/data/v1/property-id.",
                "PERMISSION_DENIED",
            )
        try:
            return self._run_report(
                request.property_id, body, "enum-encoding=int" in query_alt(request.query)
            )
        except BadRequest as exc:
            return google_error(400, str(exc), "INVALID_ARGUMENT")

    def _run_report(self, property_id: str, body: dict[str, Any], enum_numbers: bool) -> Reply:
        dims = [item.get("name", "") for item in body.get("dimensions", [])]
        metrics = [item.get("name", "") for item in body.get("metrics", [])]
        _check_names(dims, metrics)
        first, last = self._date_range(body)
        for name in TOKEN_QUOTAS:
            if getattr(self.quota, name) < self.token_cost:
                return exhausted(name)
        thresholded = any(_overlaps(first, last, day) for day in self.thresholded)
        if thresholded and self.quota.potentiallyThresholdedRequestsPerHour <= 0:
            return exhausted("potentiallyThresholdedRequestsPerHour")
        rows, lost = self.report(property_id, first, last, dims, body)
        rows = _order(rows, dims, metrics, body.get("orderBys"))
        offset = int(body.get("offset", 0))
        limit = min(int(body.get("limit", DEFAULT_LIMIT)) or DEFAULT_LIMIT, MAX_LIMIT)
        if offset < 0 or limit < 0:
            raise BadRequest("offset and limit must not be negative.")
        page = rows[offset : offset + limit]
        answer: dict[str, Any] = {
            "dimensionHeaders": [{"name": name} for name in dims],
            "metricHeaders": [
                {"name": name, "type": _type(METRIC_TYPES[name], enum_numbers)} for name in metrics
            ],
        }
        if page:
            answer["rows"] = [
                {
                    "dimensionValues": [{"value": value} for value in values],
                    "metricValues": [{"value": _metric(name, sums)} for name in metrics],
                }
                for values, sums in page
            ]
        if rows:
            answer["rowCount"] = len(rows)
        answer["metadata"] = self._metadata(first, last, thresholded, lost)
        consumed = self._consume(thresholded)
        if body.get("returnPropertyQuota"):
            answer["propertyQuota"] = consumed
        answer["kind"] = "analyticsData#runReport"
        return Reply(200, answer)

    def _date_range(self, body: dict[str, Any]) -> tuple[dt.date, dt.date]:
        ranges = body.get("dateRanges") or []
        if len(ranges) != 1:
            raise BadRequest("This fake answers reports of exactly one date range.")
        first = _day(ranges[0].get("startDate", ""), self.today)
        last = _day(ranges[0].get("endDate", ""), self.today)
        if first > last:
            raise BadRequest(f"Invalid date range: start date {first} is after end date {last}.")
        return first, last

    def _metadata(
        self, first: dt.date, last: dt.date, thresholded: bool, lost: bool
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"currencyCode": "USD", "timeZone": "Europe/Berlin"}
        sampled = sorted(day for day in self.sampled if _overlaps(first, last, day))
        if sampled:
            metadata["samplingMetadatas"] = [
                {"samplesReadCount": "2500000", "samplingSpaceSize": "10000000"}
            ]
        if thresholded:
            metadata["subjectToThresholding"] = True
        if lost:
            metadata["dataLossFromOtherRow"] = True
        return metadata

    def _consume(self, thresholded: bool) -> dict[str, Any]:
        quota = self.quota
        for name in TOKEN_QUOTAS:
            setattr(quota, name, getattr(quota, name) - self.token_cost)
        if thresholded:
            quota.potentiallyThresholdedRequestsPerHour -= 1
        tokens = {"consumed": self.token_cost}
        return _drop_zeros(
            {
                "tokensPerDay": {**tokens, "remaining": quota.tokensPerDay},
                "tokensPerHour": {**tokens, "remaining": quota.tokensPerHour},
                "concurrentRequests": {"remaining": quota.concurrentRequests},
                "serverErrorsPerProjectPerHour": {"remaining": quota.serverErrorsPerProjectPerHour},
                "potentiallyThresholdedRequestsPerHour": {
                    "consumed": int(thresholded),
                    "remaining": quota.potentiallyThresholdedRequestsPerHour,
                },
                "tokensPerProjectPerHour": {**tokens, "remaining": quota.tokensPerProjectPerHour},
            }
        )


_ADDITIVE = ("sessions", "activeUsers", "engagedSessions", "duration", "revenue")


def query_alt(query: str) -> str:
    """The ``$alt`` parameter of a query string (``json;enum-encoding=int``)."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote(name) == "$alt":
            return unquote(value)
    return ""


def _check_names(dims: list[str], metrics: list[str]) -> None:
    for name in dims:
        if name not in DIMENSIONS:
            raise BadRequest(
                f"Field {name} is not a valid dimension. For a list of valid dimensions and "
                f"metrics, see {API_SCHEMA} "
            )
    for name in metrics:
        if name not in METRIC_TYPES:
            raise BadRequest(
                f"Field {name} is not a valid metric. For a list of valid dimensions and "
                f"metrics, see {API_SCHEMA} "
            )
    if not metrics and not dims:
        raise BadRequest("At least one dimension or metric must be requested.")
    if len(dims) > 9:
        raise BadRequest(f"Requests are limited to 9 dimensions, but {len(dims)} were requested.")
    if len(metrics) > 10:
        raise BadRequest(f"Requests are limited to 10 metrics, but {len(metrics)} were requested.")


def _day(text: str, today: dt.date) -> dt.date:
    if text == "today":
        return today
    if text == "yesterday":
        return today - dt.timedelta(days=1)
    match = re.fullmatch(r"(\d+)daysAgo", text)
    if match:
        return today - dt.timedelta(days=int(match[1]))
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"Invalid date: {text!r}. Dates are YYYY-MM-DD, NdaysAgo, yesterday, or today."
        ) from None


def _overlaps(first: dt.date, last: dt.date, day: str) -> bool:
    return first <= dt.date.fromisoformat(day) <= last


def _type(name: str, as_number: bool) -> str | int:
    return METRIC_TYPE_NUMBERS[name] if as_number else name


def _metric(name: str, sums: dict[str, float]) -> str:
    sessions = sums["sessions"]
    if name in ("sessions", "activeUsers", "engagedSessions"):
        return str(int(sums[name]))
    if name == "engagementRate":
        return repr(sums["engagedSessions"] / sessions if sessions else 0.0)
    if name == "averageSessionDuration":
        return repr(sums["duration"] / sessions if sessions else 0.0)
    return repr(round(sums["revenue"], 2))


def _fold_other(
    rows: list[tuple[list[str], dict[str, float]]], dims: list[str], limit: int
) -> list[tuple[list[str], dict[str, float]]]:
    """The ``limit - 1`` largest rows (by sessions), the rest summed into one (other) row."""
    ranked = sorted(rows, key=lambda row: (-row[1]["sessions"], row[0]))
    kept, rest = ranked[: limit - 1], ranked[limit - 1 :]
    other = dict.fromkeys(_ADDITIVE, 0.0)
    for _, sums in rest:
        for name in _ADDITIVE:
            other[name] += sums[name]
    sample = rest[0][0]
    values = [
        value if name in ("date", "isoYearIsoWeek") else OTHER
        for name, value in zip(dims, sample, strict=True)
    ]
    return [*kept, (values, other)]


def _order(
    rows: list[tuple[list[str], dict[str, float]]],
    dims: list[str],
    metrics: list[str],
    order_bys: list[dict[str, Any]] | None,
) -> list[tuple[list[str], dict[str, float]]]:
    """Rows sorted by ``orderBys`` (stable, last key first); by sessions descending without."""
    if not order_bys:
        return sorted(rows, key=lambda row: (-row[1]["sessions"], row[0]))
    ordered = list(rows)
    for order in reversed(order_bys):
        desc = bool(order.get("desc"))
        if "dimension" in order:
            index = dims.index(order["dimension"]["dimensionName"])
            ordered.sort(key=lambda row, i=index: row[0][i], reverse=desc)
        elif "metric" in order:
            name = order["metric"]["metricName"]
            if name not in metrics:
                raise BadRequest(f"Field {name} in orderBys is not a metric of the request.")
            ordered.sort(key=lambda row, n=name: float(_metric(n, row[1])), reverse=desc)
    return ordered


def _filter(expression: dict[str, Any] | None) -> Any:
    """A predicate over base rows for a FilterExpression (dimension filters)."""
    if not expression:
        return lambda row: True
    if "andGroup" in expression:
        parts = [_filter(item) for item in expression["andGroup"].get("expressions", [])]
        return lambda row: all(part(row) for part in parts)
    if "orGroup" in expression:
        parts = [_filter(item) for item in expression["orGroup"].get("expressions", [])]
        return lambda row: any(part(row) for part in parts)
    if "notExpression" in expression:
        inner = _filter(expression["notExpression"])
        return lambda row: not inner(row)
    spec = expression.get("filter", {})
    name = spec.get("fieldName", "")
    if name not in DIMENSIONS:
        raise BadRequest(f"Field {name} is not a valid dimension for a dimension filter.")
    if "stringFilter" in spec:
        return _string_filter(name, spec["stringFilter"])
    if "inListFilter" in spec:
        in_list = spec["inListFilter"]
        case = bool(in_list.get("caseSensitive"))
        values = {v if case else v.lower() for v in in_list.get("values", [])}
        return lambda row: (row[name] if case else row[name].lower()) in values
    raise BadRequest("A dimension filter needs a stringFilter or an inListFilter.")


def _string_filter(name: str, spec: dict[str, Any]) -> Any:
    match_type = spec.get("matchType", "EXACT")
    kind = MATCH_TYPES.get(match_type, match_type) if isinstance(match_type, int) else match_type
    case = bool(spec.get("caseSensitive"))
    wanted = spec.get("value", "") if case else spec.get("value", "").lower()

    def check(row: dict[str, Any]) -> bool:
        value = row[name] if case else row[name].lower()
        if kind == "EXACT":
            return bool(value == wanted)
        if kind == "BEGINS_WITH":
            return bool(value.startswith(wanted))
        if kind == "ENDS_WITH":
            return bool(value.endswith(wanted))
        if kind == "CONTAINS":
            return wanted in value
        if kind == "FULL_REGEXP":
            return re.fullmatch(wanted, value) is not None
        return re.search(wanted, value) is not None

    return check


def _drop_zeros(value: Any) -> Any:
    """Proto3 JSON leaves zero numbers out."""
    if isinstance(value, dict):
        return {k: _drop_zeros(v) for k, v in value.items() if v != 0}
    return value


def _handler(fake: FakeGA4) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            try:
                body: Any = json.loads(raw) if raw else {}
            except ValueError:
                body = raw
            url = urlsplit(self.path)
            reply = fake.handle(url.path, url.query, body)
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def expected_rows(
    fake: FakeGA4, days: Iterable[dt.date], dims: list[str], metrics: list[str]
) -> list[dict[str, Any]]:
    """The records a daily report of ``dims`` and ``metrics`` gives, per day, for assertions."""
    records = []
    for day in days:
        rows, _ = fake.report(PROPERTY_ID, day, day, dims, {})
        for values, sums in sorted(rows, key=lambda row: row[0]):
            record: dict[str, Any] = dict(zip(dims, values, strict=True))
            for name in metrics:
                text = _metric(name, sums)
                record[name] = int(text) if METRIC_TYPES[name] == "TYPE_INTEGER" else float(text)
            records.append(record)
    return records


@contextmanager
def fake_ga4(**settings: Any) -> Iterator[FakeGA4]:
    with FakeGA4(**settings) as server:
        yield server
