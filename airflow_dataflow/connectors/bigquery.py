"""The ``bigquery`` connector: streams the rows of a GoogleSQL query, one key per column.

- Standard SQL only (``useLegacySql: false``); ``@name`` parameters always go as typed
  ``queryParameters`` (``bigquery_query.py`` says how types are inferred), never into the text.
- ``cursor: {column, initial}``: the query is wrapped as ``SELECT * FROM (<query>) AS
  dataflow_rows WHERE `column` > @dataflow_cursor ORDER BY `column``` (the ``sql`` connector's
  convention); the candidate cursor is the last (greatest) non-NULL value read, as staged.
- Snapshot: ``@dataflow_snapshot`` is a TIMESTAMP parameter holding the DAG run's start (the same
  for every retry; now outside a DAG run). A query writes ``FROM t FOR SYSTEM_TIME AS OF
  @dataflow_snapshot`` to read its tables as of that instant: every try of a run reads the same
  rows. It is sent only when the query uses it.
- Job ids derive from the route, run id, query text and parameters (cursor start and snapshot
  included), never the try number: a retried extract re-attaches to the job of the earlier try
  (``jobs.insert`` answers 409, the job is fetched and its results read) instead of running the
  query again. When that job failed, the next id of the run's chain (``<id>_2``, ...) starts a
  new one.
- Results are read page by page (``page_size`` rows per ``getQueryResults`` call): memory holds
  one page whatever the result size. Values become JSON-friendly like the ``sql`` connector's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from airflow_dataflow.connectors.base import (
    BadRecord,
    Connector,
    ConnectorSettings,
    Cursor,
    CursorSpec,
    SourceWarning,
)
from airflow_dataflow.connectors.bigquery_query import (
    CURSOR_PARAMETER,
    RESERVED_PARAMETERS,
    SNAPSHOT_PARAMETER,
    ParameterError,
    chained_job_id,
    check_parameter_value,
    cursor_query,
    job_id,
    legacy_sql_problem,
    query_parameter,
    query_parameter_names,
    snapshot_parameter,
)
from airflow_dataflow.connectors.sql import SqlCursor, json_value
from airflow_dataflow.errors import FatalError, RetriableError, SourceError
from airflow_dataflow.templating import check_templates, is_template, render_value

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.bigquery import Client, QueryJob

    from airflow_dataflow.connectors.bigquery_query import QueryParameter

log = logging.getLogger(__name__)

MAX_JOBS_PER_RUN = 10
REQUEST_TIMEOUT_SECONDS = 60.0
# Reasons of BigQuery errors that a later try may not meet (docs: "Troubleshoot errors").
RETRIABLE_REASONS = frozenset(
    {
        "backendError",
        "internalError",
        "rateLimitExceeded",
        "quotaExceeded",
        "badGateway",
        "jobBackendError",
        "jobInternalError",
        "timeout",
    }
)


class BigQueryUnavailableError(SourceError, RetriableError):
    """BigQuery failed in a way a later try may not (5xx, rate limits, network): retried."""


class BigQueryQueryError(SourceError, FatalError):
    """BigQuery refused the query or the connection (bad SQL, no access, no table): not retried."""


class BigQuerySettings(ConnectorSettings):
    """Settings of ``source: {type: bigquery}``; the query names its parameters as ``@name``."""

    type: Literal["bigquery"]
    connection: str = Field(
        min_length=1, description="Airflow connection id (type google_cloud_platform)"
    )
    query: str = Field(
        min_length=1,
        description="GoogleSQL (standard SQL) query; parameters as @name; "
        "FOR SYSTEM_TIME AS OF @dataflow_snapshot reads a table as of the run's start",
    )
    parameters: Annotated[dict[str, Any], AfterValidator(check_templates)] = Field(
        default_factory=dict,
        description="values of the query's @name parameters, sent as typed query parameters "
        "(may be templates like {{ params.x }})",
    )
    cursor: SqlCursor | None = Field(
        default=None,
        description="incremental reads: only rows whose column is greater than the last "
        "committed value (or initial), in the column's order",
    )
    location: str | None = Field(
        default=None,
        min_length=1,
        description="where the query job runs (EU, US, europe-west1, ...); default: the "
        "connection's location extra, else BigQuery's default",
    )
    page_size: int = Field(
        default=10_000,
        ge=1,
        le=100_000,
        description="rows per getQueryResults page (memory holds one page)",
    )

    def cursor_spec(self) -> CursorSpec | None:
        if self.cursor is None:
            return None
        return CursorSpec(field=self.cursor.column, initial=self.cursor.initial)

    @model_validator(mode="after")
    def _standard_sql_and_parameters(self) -> BigQuerySettings:
        problem = legacy_sql_problem(self.query)
        if problem:
            raise ValueError(f"query {problem}")
        reserved = sorted(RESERVED_PARAMETERS & self.parameters.keys())
        if reserved:
            raise ValueError(
                f"parameters may not set {', '.join(reserved)}: the connector sets it "
                f"(@{SNAPSHOT_PARAMETER}: the run's start; @{CURSOR_PARAMETER}: the cursor)"
            )
        used = query_parameter_names(self.query)
        if CURSOR_PARAMETER in used:
            raise ValueError(
                f"query uses @{CURSOR_PARAMETER}, which only the cursor wrap may use: with "
                "cursor: {column, initial} the query needs no cursor placeholder"
            )
        used.discard(SNAPSHOT_PARAMETER)
        missing = sorted(used - self.parameters.keys())
        unused = sorted(self.parameters.keys() - used)
        if missing:
            raise ValueError(f"query uses @{', @'.join(missing)} but parameters does not set it")
        if unused:
            raise ValueError(f"parameters {', '.join(unused)} not used by the query (no @name)")
        for name, value in self.parameters.items():
            if not _has_template(value):
                try:
                    check_parameter_value(value)
                except ParameterError as exc:
                    raise ValueError(f"parameters.{name} is {exc}") from None
        return self


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, list):
        return any(map(_has_template, value))
    if isinstance(value, dict):
        return any(map(_has_template, value.values()))
    return False


class BigQueryConnector(Connector):
    """Reads the rows of ``query`` with the credentials of Airflow connection ``connection``."""

    settings_model: ClassVar[type[ConnectorSettings]] = BigQuerySettings
    settings: BigQuerySettings
    # How long one API call may be retried (the client's backoff) before the try fails as
    # retriable: Airflow's task retries take over and re-attach to the job.
    retry_seconds: ClassVar[float] = 120.0

    def run_cursor(self) -> Cursor | None:
        """The cursor handed in at extract; without one, a cursor starting at ``initial``."""
        spec = self.settings.cursor_spec()
        if spec is None:
            return None
        return self.cursor or Cursor(spec.field, start=spec.initial)

    def snapshot_time(self) -> dt.datetime:
        """The instant ``@dataflow_snapshot`` reads at: the DAG run's start, else now (UTC)."""
        started = self.context.run_started
        if started is None:
            return dt.datetime.now(dt.UTC)
        return started if started.tzinfo else started.replace(tzinfo=dt.UTC)

    def statement(self, cursor: Cursor | None) -> tuple[str, list[QueryParameter]]:
        """The query to run and its typed parameters (wrapped when there is a cursor)."""
        rendered = render_value(self.settings.parameters, self.context.template_vars())
        parameters = []
        for name, value in rendered.items():
            try:
                parameters.append(query_parameter(name, value))
            except ParameterError as exc:
                raise BigQueryQueryError(
                    f"route {self.context.route!r}: source.parameters.{name} is {exc} "
                    f"(rendered from {self.settings.parameters[name]!r})"
                ) from None
        if SNAPSHOT_PARAMETER in query_parameter_names(self.settings.query):
            parameters.append(snapshot_parameter(self.snapshot_time()))
        query = self.settings.query
        if cursor is not None:
            query = cursor_query(query, cursor.field, cursor.start is not None)
            if cursor.start is not None:
                parameters.append(query_parameter(CURSOR_PARAMETER, cursor.start))
        return query, parameters

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
        from google.api_core.exceptions import GoogleAPIError

        client, location = self._client()
        retry = _api_retry(self.retry_seconds)
        cursor = self.run_cursor()
        query, parameters = self.statement(cursor)
        count = nulls = 0
        job: QueryJob | None = None
        try:
            job = self._job(client, location, query, parameters, retry)
            rows = job.result(page_size=self.settings.page_size, retry=retry)
            for row in rows:  # one page at a time: the iterator fetches the next when needed
                count += 1
                record = {name: json_value(value) for name, value in row.items()}
                if cursor is not None:
                    value = record.get(cursor.field)
                    nulls += value is None
                    cursor.advance(value)  # rows come in cursor order: the last is greatest
                yield record
        except (GoogleAPIError, OSError, TimeoutError) as exc:
            raise self._error(exc, count, job) from exc
        log.info("read %d rows from BigQuery job %s", count, job and job.job_id)
        if cursor is not None and nulls:
            yield SourceWarning(_nulls_warning(cursor, nulls))

    # -- the client and the job -----------------------------------------------------------

    def _client(self) -> tuple[Client, str | None]:
        """A client with the connection's credentials, project and endpoint; the job location."""
        from airflow_dataflow.hooks.google import bigquery_client

        conn_id = self.settings.connection
        where = f"route {self.context.route!r}: source.connection {conn_id!r}"
        return bigquery_client(conn_id, self.settings.location, where, BigQueryQueryError)

    def _job(
        self,
        client: Client,
        location: str | None,
        query: str,
        parameters: list[QueryParameter],
        retry: Retry,
    ) -> QueryJob:
        """Start the run's job, or re-attach to the one an earlier try started."""
        from google.api_core.exceptions import Conflict
        from google.cloud.bigquery import QueryJobConfig

        config = QueryJobConfig(use_legacy_sql=False, query_parameters=parameters)
        base = job_id(
            route=self.context.route,
            run_id=self.context.run_id,
            project=client.project,
            location=location,
            query=query,
            parameters=parameters,
        )
        for number in range(1, MAX_JOBS_PER_RUN + 1):
            current = chained_job_id(base, number)
            try:
                job = client.query(
                    query,
                    job_config=config,
                    job_id=current,
                    location=location,
                    retry=retry,
                    timeout=REQUEST_TIMEOUT_SECONDS,
                    job_retry=None,
                )
            except Conflict:
                job = client.get_job(
                    current, location=location, retry=retry, timeout=REQUEST_TIMEOUT_SECONDS
                )
            else:
                log.info("started BigQuery job %s", current)
                return job
            if job.query != query:
                raise BigQueryQueryError(
                    f"route {self.context.route!r}: BigQuery job {current} exists but ran "
                    "another query; job ids of this route are taken by something else"
                )
            if job.state == "DONE" and job.error_result:
                log.warning(
                    "BigQuery job %s of an earlier try failed (%s); starting the next one",
                    current,
                    job.error_result.get("message"),
                )
                continue
            log.info("re-attached to BigQuery job %s (%s) of an earlier try", current, job.state)
            return job
        raise BigQueryQueryError(
            f"route {self.context.route!r}: the {MAX_JOBS_PER_RUN} BigQuery jobs of run "
            f"{self.context.run_id!r} all failed (last: {base}_{MAX_JOBS_PER_RUN}); see their "
            "errors in the BigQuery console and start a new run"
        )

    # -- errors ---------------------------------------------------------------------------

    def _error(self, exc: BaseException, count: int, job: QueryJob | None) -> SourceError:
        reason, message = _reason_and_message(exc)
        where = f"route {self.context.route!r}: source.query on BigQuery"
        if job is not None:
            where += f" (job {job.job_id})"
        after = f" after {count} rows" if count else ""
        text = f"{where} failed{after}: {message}" + (f" [{reason}]" if reason else "")
        hint = self._hint(message)
        if hint:
            text += f". {hint}"
        if _is_retriable(exc, reason):
            return BigQueryUnavailableError(text)
        return BigQueryQueryError(text)

    def _hint(self, message: str) -> str:
        lowered = message.lower()
        if "system_time" in lowered or "time travel" in lowered or "snapshot" in lowered:
            return (
                f"@{SNAPSHOT_PARAMETER} is the DAG run's start ({self.snapshot_time().isoformat()}); "
                "BigQuery time travel reaches back only the dataset's time travel window "
                "(7 days by default): start a new run"
            )
        cursor = self.settings.cursor
        if cursor is not None and f"unrecognized name: {cursor.column.lower()}" in lowered:
            return (
                f"source.cursor.column {cursor.column!r} must be a column of the query's "
                "result, named as the records name it"
            )
        return ""


def _api_retry(seconds: float) -> Retry:
    """The client's own retry (backoff with jitter on 5xx, 429, rate limits), bounded."""
    from google.cloud.bigquery import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(seconds)


def _reason_and_message(exc: BaseException) -> tuple[str | None, str]:
    from google.api_core.exceptions import GoogleAPICallError, RetryError

    if isinstance(exc, RetryError) and exc.cause is not None:
        reason, message = _reason_and_message(exc.cause)
        return reason, f"{message} (still failing after retries)"
    if isinstance(exc, GoogleAPICallError):
        errors = exc.errors or []
        reason = errors[0].get("reason") if errors and isinstance(errors[0], dict) else None
        message = (exc.message or str(exc)).strip()
        return reason, " ".join(message.split())
    return None, f"{type(exc).__name__}: {exc}"


def _is_retriable(exc: BaseException, reason: str | None) -> bool:
    from google.api_core import exceptions as api

    if reason in RETRIABLE_REASONS:
        return True
    if isinstance(exc, api.RetryError):
        return True
    if isinstance(exc, api.GoogleAPICallError):
        return isinstance(
            exc,
            api.TooManyRequests
            | api.InternalServerError
            | api.BadGateway
            | api.ServiceUnavailable
            | api.GatewayTimeout,
        )
    return True  # network errors and timeouts


def _nulls_warning(cursor: Cursor, nulls: int) -> str:
    return (
        f"source.cursor.column {cursor.field!r} was NULL in {nulls} rows: they were read this "
        "time, but a NULL is never greater than a cursor, so later runs will not read such rows "
        "(give the column a value, e.g. COALESCE in the query)"
    )
