"""A BigQuery REST API v2 on loopback, for the real ``google-cloud-bigquery`` client.

Endpoints (under ``/bigquery/v2``), answering as Google documents them:

- ``POST /projects/{p}/jobs`` (jobs.insert): runs the query job (``bigquery_engine.py`` executes
  it for real on SQLite) and returns the job resource; **409** ``duplicate`` ("Already Exists:
  Job p:LOC.id") when the job id is taken. A query that fails gives a job ``DONE`` with
  ``status.errorResult`` (as BigQuery does: the insert itself succeeds). Legacy SQL
  (``useLegacySql`` not false) is refused that way too: the fake runs GoogleSQL only.
- ``GET /projects/{p}/jobs/{id}`` (jobs.get), ``location`` checked when given.
- ``GET /projects/{p}/queries/{id}`` (jobs.getQueryResults): ``maxResults``, ``pageToken``,
  ``startIndex``, ``timeoutMs``, ``formatOptions.useInt64Timestamp``; ``jobComplete: false``
  while the job runs (each job stays RUNNING for ``running_polls`` status reads); the schema
  with field types, ``totalRows``, rows as ``{"f": [{"v": ...}]}``; a failed job answers with
  its error.
- ``POST /projects/{p}/queries`` (jobs.query) is not emulated: 501 (the connector always
  inserts jobs with its own ids).

Errors have Google's JSON shape ``{"error": {"code", "message", "errors": [{"reason", ...}],
"status"}}``. ``fail_requests`` scripts HTTP errors (429, 5xx, ``rateLimitExceeded``...) for the
next calls of a method; ``fail_jobs`` makes the next inserted jobs fail. Every request is
recorded (``requests``), every job inserted is kept (``jobs``, ``inserted`` in order).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.bigquery_engine import Engine, QueryFailed, Result, api_value, utc_now
from tests.fakes.loopback import LoopbackServer

PROJECT = "dataflow-test"
PREFIX = "/bigquery/v2"
DEFAULT_PAGE_SIZE = 1000
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}  # fmt: skip
# The HTTP status getQueryResults answers with for a job that failed for this reason.
_REASON_STATUS = {"invalidQuery": 400, "invalid": 400, "notFound": 404, "accessDenied": 403,
                  "rateLimitExceeded": 403, "quotaExceeded": 403, "backendError": 500,
                  "internalError": 500}  # fmt: skip


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


@dataclass
class Request:
    method: str  # jobs.insert, jobs.get, jobs.getQueryResults, ...
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int = 0


@dataclass
class Job:
    """A query job as the fake keeps it."""

    project: str
    job_id: str
    location: str
    configuration: dict[str, Any]
    created: dt.datetime
    polls_left: int
    error: dict[str, Any] | None = None
    result: Result | None = None
    pages: list[tuple[int, int]] = field(default_factory=list)  # (start, rows) served

    @property
    def query(self) -> str:
        return str(self.configuration["query"]["query"])

    @property
    def parameters(self) -> dict[str, Any]:
        """The query parameters by name, as sent (``parameterValue`` API form)."""
        return {
            p["name"]: p.get("parameterValue")
            for p in self.configuration["query"].get("queryParameters", [])
        }

    @property
    def done(self) -> bool:
        return self.polls_left <= 0

    def resource(self) -> dict[str, Any]:
        millis = str(int(self.created.timestamp() * 1000))
        status: dict[str, Any] = {"state": "DONE" if self.done else "RUNNING"}
        if self.done and self.error:
            status.update(errorResult=self.error, errors=[self.error])
        statistics: dict[str, Any] = {"creationTime": millis, "startTime": millis}
        if self.done:
            statistics.update(
                endTime=millis,
                query={"totalBytesProcessed": "0", "statementType": "SELECT", "cacheHit": False},
            )
        return {
            "kind": "bigquery#job",
            "etag": f"etag-{self.job_id}",
            "id": f"{self.project}:{self.location}.{self.job_id}",
            "selfLink": f"{PREFIX}/projects/{self.project}/jobs/{self.job_id}",
            "user_email": "anonymous@dataflow.test",
            "jobReference": self.reference(),
            "configuration": self.configuration,
            "status": status,
            "statistics": statistics,
        }

    def reference(self) -> dict[str, str]:
        return {"projectId": self.project, "jobId": self.job_id, "location": self.location}


class FakeBigQuery(LoopbackServer):
    """The server; use as a context manager (it listens on 127.0.0.1, a free port)."""

    def __init__(
        self, project: str = PROJECT, location: str = "US", *, running_polls: int = 1
    ) -> None:
        self.project = project
        self.location = location
        self.running_polls = running_polls
        self.engine = Engine(project, location)
        self.jobs: dict[str, Job] = {}
        self.inserted: list[str] = []  # job ids, in the order they were created
        self.requests: list[Request] = []
        self._failing_requests: dict[str, deque[Reply]] = {}
        self._failing_jobs: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._serve_with(_handler(self))

    def connection(self) -> str:
        """An Airflow connection (JSON) of type google_cloud_platform pointing here."""
        extra = {"is_anonymous": True, "project": self.project, "api_endpoint": self.url}
        return json.dumps({"conn_type": "google_cloud_platform", "extra": extra})

    # -- test set-up ------------------------------------------------------------------------

    def create_table(
        self, name: str, columns: dict[str, str], created: dt.datetime | None = None
    ) -> None:
        """``name`` is ``dataset.table``; ``columns`` maps names to GoogleSQL types."""
        with self._lock:
            self.engine.create_table(name, columns, created)

    def insert(self, name: str, rows: list[dict[str, Any]], at: dt.datetime | None = None) -> None:
        """Add rows, visible from ``at`` (default now) on, for time travel too."""
        with self._lock:
            self.engine.insert(name, rows, at)

    def delete(
        self, name: str, column: str, values: list[Any], at: dt.datetime | None = None
    ) -> None:
        """Remove the rows whose ``column`` is in ``values`` from ``at`` (default now) on."""
        with self._lock:
            self.engine.delete(name, column, values, at)

    def fail_requests(
        self, method: str, status: int, reason: str, message: str = "", times: int = 1
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (``jobs.insert``, ``jobs.get``,
        ``jobs.getQueryResults``) with an HTTP error."""
        reply = _error(status, reason, message or f"scripted {reason}")
        with self._lock:
            self._failing_requests.setdefault(method, deque()).extend([reply] * times)

    def fail_jobs(self, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` jobs inserted fail with ``reason`` (their insert succeeds)."""
        with self._lock:
            self._failing_jobs.extend([{"reason": reason, "message": message}] * times)

    def pages_served(self, job_id: str) -> list[tuple[int, int]]:
        """The pages of results the job served: (first row index, rows), in order."""
        with self._lock:
            return list(self.jobs[job_id].pages)

    def calls(self, method: str) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.method == method]

    # -- request handling --------------------------------------------------------------------

    def handle(self, http_method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        parts = path.removeprefix(PREFIX).strip("/").split("/")
        name = _method_name(http_method, parts)
        with self._lock:
            request = Request(name, path, query, body)
            self.requests.append(request)
            reply = self._answer(name, parts, query, body)
            request.status = reply.status
            return reply

    def _answer(self, name: str, parts: list[str], query: dict[str, str], body: Any) -> Reply:
        failing = self._failing_requests.get(name)
        if failing:
            return failing.popleft()
        if name == "unknown":
            return _error(404, "notFound", f"Not found: URL {'/'.join(parts)}")
        if parts[1] != self.project:
            return _error(403, "accessDenied", f"Access Denied: Project {parts[1]}")
        if name == "jobs.query":
            return _error(501, "notImplemented", "the fake does not emulate jobs.query")
        if name == "jobs.insert":
            return self._insert(body if isinstance(body, dict) else {})
        if name == "tables.get":
            return self._table(parts[1], parts[3], parts[5])
        job = self.jobs.get(parts[3])
        location = query.get("location")
        if job is None or (location and location.lower() != job.location.lower()):
            where = location or self.location
            return _error(404, "notFound", f"Not found: Job {parts[1]}:{where}.{parts[3]}")
        if name == "jobs.get":
            job.polls_left -= 1
            return Reply(200, job.resource())
        return self._results(job, query)

    def _table(self, project: str, dataset: str, name: str) -> Reply:
        table = self.engine.tables.get(f"{dataset}.{name}")
        if table is None:
            return _error(404, "notFound", f"Not found: Table {project}:{dataset}.{name}")
        fields = [{"name": column, "type": kind} for column, kind in table.columns.items()]
        return Reply(
            200,
            {
                "kind": "bigquery#table",
                "id": f"{project}:{dataset}.{name}",
                "tableReference": {"projectId": project, "datasetId": dataset, "tableId": name},
                "schema": {"fields": fields},
                "creationTime": str(int(table.created.timestamp() * 1000)),
                "location": self.location,
                "type": "TABLE",
            },
        )

    def _insert(self, body: dict[str, Any]) -> Reply:
        reference = body.get("jobReference") or {}
        job_id = reference.get("jobId")
        configuration = body.get("configuration") or {}
        if not job_id or "query" not in configuration:
            return _error(400, "invalid", "the fake runs query jobs with a jobReference.jobId")
        location = reference.get("location") or self.location
        if job_id in self.jobs:
            where = f"{self.project}:{self.jobs[job_id].location}.{job_id}"
            return _error(409, "duplicate", f"Already Exists: Job {where}")
        job = Job(self.project, job_id, location, configuration, utc_now(), self.running_polls)
        self.jobs[job_id] = job
        self.inserted.append(job_id)
        job.error = self._run(job)
        return Reply(200, job.resource())

    def _run(self, job: Job) -> dict[str, Any] | None:
        config = job.configuration["query"]
        if config.get("useLegacySql", True) is not False:
            return {
                "reason": "invalidQuery",
                "location": "query",
                "message": "the fake runs GoogleSQL only: set useLegacySql to false",
            }
        if self._failing_jobs:
            return self._failing_jobs.popleft()
        try:
            job.result = self.engine.run(job.query, config.get("queryParameters", []))
        except QueryFailed as exc:
            return {"reason": exc.reason, "location": "query", "message": exc.message}
        return None

    def _results(self, job: Job, query: dict[str, str]) -> Reply:
        job.polls_left -= 1
        if not job.done:
            return Reply(
                200,
                {"kind": "bigquery#getQueryResultsResponse", "jobReference": job.reference(),
                 "jobComplete": False},
            )  # fmt: skip
        if job.error:
            status = _REASON_STATUS.get(job.error["reason"], 400)
            return _error(status, job.error["reason"], job.error["message"])
        assert job.result is not None
        result = job.result
        start = _start(job, query)
        if start is None:
            return _error(400, "invalid", "Invalid page token")
        size = int(query.get("maxResults", DEFAULT_PAGE_SIZE))
        rows = result.rows[start : start + size]
        int64 = query.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "etag": f"etag-{job.job_id}-{start}",
            "schema": {
                "fields": [
                    {"name": name, "type": kind, "mode": "NULLABLE"} for name, kind in result.schema
                ]
            },
            "jobReference": job.reference(),
            "totalRows": str(len(result.rows)),
            "totalBytesProcessed": "0",
            "jobComplete": True,
            "cacheHit": False,
        }
        if size > 0:
            body["rows"] = [
                {"f": [{"v": api_value(value, kind, int64_timestamp=int64)}
                       for value, (_, kind) in zip(row, result.schema, strict=True)]}
                for row in rows
            ]  # fmt: skip
            job.pages.append((start, len(rows)))
        if start + max(size, 0) < len(result.rows):
            body["pageToken"] = _token(job.job_id, start + max(size, 0))
        return Reply(200, body)


def _method_name(http_method: str, parts: list[str]) -> str:
    if len(parts) < 3 or parts[0] != "projects":
        return "unknown"
    if http_method == "POST" and parts[2:] == ["jobs"]:
        return "jobs.insert"
    if http_method == "POST" and parts[2:] == ["queries"]:
        return "jobs.query"
    if http_method == "GET" and len(parts) == 4 and parts[2] == "jobs":
        return "jobs.get"
    if http_method == "GET" and len(parts) == 4 and parts[2] == "queries":
        return "jobs.getQueryResults"
    if http_method == "GET" and len(parts) == 6 and parts[2] == "datasets" and parts[4] == "tables":
        return "tables.get"
    return "unknown"


def _token(job_id: str, start: int) -> str:
    return base64.urlsafe_b64encode(f"{job_id}:{start}".encode()).decode()


def _start(job: Job, query: dict[str, str]) -> int | None:
    token = query.get("pageToken")
    if token:
        try:
            owner, start = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 1)
        except ValueError:
            return None
        return int(start) if owner == job.job_id else None
    return int(query.get("startIndex", 0))


def _error(status: int, reason: str, message: str) -> Reply:
    detail = {"message": message, "domain": "global", "reason": reason}
    return Reply(
        status,
        {"error": {"code": status, "message": message, "errors": [detail],
                   "status": _STATUS.get(status, "UNKNOWN")}},
    )  # fmt: skip


def _handler(fake: FakeBigQuery) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            url = urlsplit(self.path)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                reply = _error(400, "parseError", "Parse Error")
            else:
                query = dict(parse_qsl(url.query, keep_blank_values=True))
                reply = fake.handle(method, unquote(url.path), query, body)
            data = json.dumps(reply.body).encode("utf-8")
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
