"""The ``ga4`` connector: a Google Analytics 4 report (Data API runReport), one record per row.

The date range (``date_range``, end inclusive; relative forms resolved against the run's date)
is cut into chunks of a day or an ISO week; each chunk is one report, paged with offset/limit
until ``rowCount``, rows ordered by every dimension so pages do not overlap. Records are flat:
one key per dimension (GA4's string) and per metric (a number typed by ``metricHeaders``:
``TYPE_INTEGER`` → ``int``, every other type → ``float``); ``(other)`` rows are records too.

Every response's ``propertyQuota`` is read (``ga4_quota.py``): requests slow down when an
hourly quota runs low, and an exhausted quota fails the run naming the property and the quota.
Transient failures (5xx, a 429 with quota left, connection errors) are retried through
``RetryPolicy``. Sampling, thresholding and ``(other)``-row data loss each add a warning naming
the chunk's dates (sampling fails the run with ``on_sampling: fail``).

Incremental: the cursor is the last date read (``YYYY-MM-DD``), advanced after each chunk and
committed after delivery. A run starts at the day after the cursor minus ``lookback_days``
(re-reading late data; with weekly chunks, from the Monday of that week), never before
``date_range.start``. The date dimension tells the re-read days' records apart: a ``database``
destination in ``upsert`` mode keyed by the dimensions replaces them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from airflow_dataflow.connectors.base import (
    BadRecord,
    Connector,
    ConnectorSettings,
    Cursor,
    CursorSpec,
    SourceWarning,
)
from airflow_dataflow.connectors.ga4_dates import (
    DATE_FORMS,
    DATE_PATTERN,
    ChunkSize,
    check_date_form,
    chunk_start,
    chunks,
    is_absolute,
    resolve_date,
    span,
)
from airflow_dataflow.connectors.ga4_quota import (
    QUOTA_NAMES,
    WHEN_BACK,
    QuotaPacer,
    Sleep,
    read_quota,
)
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.policy import RetryPolicy, parse_retry_after
from airflow_dataflow.errors import FatalError, RetriableError, SourceError

if TYPE_CHECKING:
    from airflow_dataflow.hooks.ga4 import GA4Hook

log = logging.getLogger(__name__)

CURSOR_FIELD = "date"
PAGE_SIZE = 10_000  # rows per request (GA4's default; it allows up to 250,000)
MAX_DIMENSIONS = 9
MAX_METRICS = 10
TYPE_INTEGER = 1  # MetricType.TYPE_INTEGER; every other metric type is a float
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_:]*$")
# Dimensions that tell the records of different chunks apart (see ``_date_dimension``).
DAY_DIMENSIONS = ("date", "dateHour", "dateHourMinute")
WEEK_DIMENSIONS = (*DAY_DIMENSIONS, "isoYearIsoWeek")
_FILTER_KINDS = {"andGroup", "orGroup", "notExpression", "filter"}
_SNAKE_FILTER_KINDS = {
    "and_group": "andGroup",
    "or_group": "orGroup",
    "not_expression": "notExpression",
}
API_SCHEMA_URL = "https://developers.google.com/analytics/devguides/reporting/data/v1/api-schema"


class GA4UnavailableError(SourceError, RetriableError):
    """GA4 could not answer now (5xx, a 429 with quota left, no connection): worth retrying."""


class GA4QuotaExhaustedError(SourceError):
    """A property quota is exhausted: the run fails; a later attempt may pass once it returns."""


class GA4RequestError(SourceError, FatalError):
    """GA4 refused the report (unknown names, bad filter, no access): retrying cannot fix it."""


def _names(kind: str, limit: int) -> Any:
    def check(values: list[str]) -> list[str]:
        bad = [value for value in values if not _NAME.match(value)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))} are not GA4 {kind} names (API names such as "
                f"sessionSource or customEvent:plan; see {API_SCHEMA_URL})"
            )
        doubles = sorted({value for value in values if values.count(value) > 1})
        if doubles:
            raise ValueError(f"{kind} {', '.join(doubles)} listed twice")
        if len(values) > limit:
            raise ValueError(f"GA4 allows at most {limit} {kind} in a report, not {len(values)}")
        return values

    return AfterValidator(check)


def _property_id(value: object) -> str:
    text = str(value).strip().removeprefix("properties/") if not isinstance(value, bool) else ""
    if not text.isdigit():
        raise ValueError(
            f"{value!r} is not a GA4 property id: write its number (Admin > Property settings), "
            "e.g. 123456789"
        )
    return text


def _dimension_filter(value: dict[str, Any]) -> dict[str, Any]:
    """GA4's FilterExpression: exactly one of andGroup, orGroup, notExpression or filter."""
    kinds = {_SNAKE_FILTER_KINDS.get(key, key) for key in value}
    if len(value) != 1 or not kinds <= _FILTER_KINDS:
        raise ValueError(
            "a GA4 FilterExpression has exactly one key of andGroup, orGroup, notExpression or "
            f"filter, not {', '.join(value) or 'none'} (e.g. {{filter: {{fieldName: country, "
            "stringFilter: {value: Germany}}}})"
        )
    return value


GA4Date = Annotated[
    str,
    BeforeValidator(check_date_form),
    Field(json_schema_extra={"pattern": DATE_PATTERN}),
]


class DateRange(BaseModel):
    """``date_range: {start, end}``: both days included; absolute or relative to the run's date."""

    model_config = ConfigDict(extra="forbid")
    start: GA4Date = Field(description=f"first day read: {DATE_FORMS}")
    end: GA4Date = Field(default="yesterday", description=f"last day read (included): {DATE_FORMS}")

    @model_validator(mode="after")
    def _in_order(self) -> DateRange:
        if is_absolute(self.start) and is_absolute(self.end) and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class GA4Settings(ConnectorSettings):
    """Settings of ``source: {type: ga4}``."""

    type: Literal["ga4"]
    connection: str = Field(
        min_length=1, description="Airflow connection id of type google_cloud_platform"
    )
    property_id: Annotated[
        str,
        BeforeValidator(_property_id),
        WithJsonSchema({"type": ["string", "integer"], "pattern": r"^(properties/)?\d+$"}),
    ] = Field(description="the GA4 property's number (properties/123 is accepted too)")
    dimensions: Annotated[list[str], _names("dimensions", MAX_DIMENSIONS)] = Field(
        min_length=1,
        description="GA4 API dimension names; must include date (or dateHour, dateHourMinute; "
        "with chunk: week also isoYearIsoWeek)",
    )
    metrics: Annotated[list[str], _names("metrics", MAX_METRICS)] = Field(
        min_length=1, description="GA4 API metric names"
    )
    date_range: DateRange = Field(description="days to read: {start, end}, end included")
    chunk: ChunkSize = Field(
        default="day", description="one report per day or per ISO week (Monday to Sunday)"
    )
    lookback_days: int = Field(
        default=2,
        ge=0,
        le=365,
        description="days already read that each run reads again (GA4 data settles late)",
    )
    dimension_filter: Annotated[dict[str, Any], AfterValidator(_dimension_filter)] | None = Field(
        default=None, description="GA4 FilterExpression (its JSON shape) on dimensions"
    )
    on_sampling: Literal["warn", "fail"] = Field(
        default="warn", description="a sampled chunk adds a warning (warn) or fails the run (fail)"
    )

    def cursor_spec(self) -> CursorSpec | None:
        return CursorSpec(field=CURSOR_FIELD, initial=None)

    @model_validator(mode="after")
    def _date_dimension(self) -> GA4Settings:
        """Records of different chunks must differ by a date dimension, or re-reads collide."""
        allowed = DAY_DIMENSIONS if self.chunk == "day" else WEEK_DIMENSIONS
        if not set(allowed) & set(self.dimensions):
            raise ValueError(
                f"dimensions must include {' or '.join(allowed)}: the report is read per "
                f"{self.chunk} and re-read after lookback_days, and only a date dimension tells "
                "the records of different days apart (and lets a destination replace re-read "
                "days, e.g. database mode: upsert with the dimensions as key)"
            )
        both = sorted(set(self.dimensions) & set(self.metrics))
        if both:
            raise ValueError(f"{', '.join(both)} is both a dimension and a metric")
        return self


class GA4Connector(Connector):
    """Reads a GA4 report of property ``property_id`` through Airflow connection ``connection``."""

    settings_model: ClassVar[type[ConnectorSettings]] = GA4Settings
    settings: GA4Settings

    def __init__(
        self,
        settings: ConnectorSettings,
        context: RunContext,
        cursor: Cursor | None = None,
        *,
        sleep: Sleep = time.sleep,
        page_size: int = PAGE_SIZE,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(settings, context, cursor)
        self.sleep = sleep
        self.page_size = page_size
        self.retry = retry or RetryPolicy(base_delay=1.0, max_delay=60.0, sleep=sleep)

    @property
    def where(self) -> str:
        return f"route {self.context.route!r}: GA4 property {self.settings.property_id}"

    def run_date(self) -> dt.date:
        """The date relative forms are resolved against: the run's ``ds``."""
        return dt.date.fromisoformat(self.context.ds)

    def window(self, cursor: Cursor) -> tuple[dt.date, dt.date]:
        """The first and last day this run reads (first > last: nothing to read)."""
        today = self.run_date()
        dates = self.settings.date_range
        start, end = resolve_date(dates.start, today), resolve_date(dates.end, today)
        if start > end:
            raise SourceError(
                f"route {self.context.route!r}: source.date_range starts on {start} "
                f"({dates.start!r}) after it ends on {end} ({dates.end!r}) for the run of "
                f"{today}; make start earlier than end"
            )
        if cursor.start is None:
            return start, end
        resume = self._cursor_date(cursor.start, today) + dt.timedelta(
            days=1 - self.settings.lookback_days
        )
        return max(start, chunk_start(resume, self.settings.chunk)), end

    def _cursor_date(self, value: Any, today: dt.date) -> dt.date:
        from airflow_dataflow.state.cursors import reset_remedy

        try:
            return resolve_date(check_date_form(value), today)
        except ValueError as exc:
            raise SourceError(
                f"route {self.context.route!r}: the cursor (the last date read) is {value!r}, "
                f"which is not a date ({exc}). {reset_remedy(self.context.route)}"
            ) from None

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
        cursor = self.cursor or Cursor(CURSOR_FIELD)
        first_day, last_day = self.window(cursor)
        if first_day > last_day:
            log.info("%s: nothing to read after %s", self.where, cursor.start)
            return
        report = _Report(self, self._hook())
        for first, last in chunks(first_day, last_day, self.settings.chunk):
            yield from report.read_chunk(first, last)
            cursor.advance(last.isoformat())
        if report.pacer.pauses:
            yield SourceWarning(
                f"{self.where}: an hourly quota ran low, so requests were slowed down "
                f"({report.pacer.pauses} pauses, {report.pacer.paused:.0f} s in all)"
            )

    def _hook(self) -> GA4Hook:
        """The hook of ``source.connection``, its client built (credentials checked)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from airflow_dataflow.hooks.ga4 import GA4Hook

        conn_id, route = self.settings.connection, self.context.route
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException as exc:
            raise SourceError(
                f"route {route!r}: source.connection names Airflow connection {conn_id!r}, which "
                f"is not defined; define it (type google_cloud_platform) with `airflow "
                f"connections add` or the environment variable AIRFLOW_CONN_{conn_id.upper()}"
            ) from exc
        if conn.conn_type != GA4Hook.conn_type:
            raise SourceError(
                f"route {route!r}: source.connection {conn_id!r} has connection type "
                f"{conn.conn_type!r}; GA4 needs a {GA4Hook.conn_type!r} connection"
            )
        hook = GA4Hook(gcp_conn_id=conn_id)
        try:
            hook.client  # noqa: B018 - builds the client: credentials problems surface here
        except Exception as exc:  # google.auth and the provider raise several kinds
            raise SourceError(
                f"route {route!r}: source.connection {conn_id!r} gives no usable Google "
                f"credentials: {exc}"
            ) from exc
        return hook


class _Report:
    """One run's report requests: paging, typing, quota pacing, retries and warnings."""

    def __init__(self, connector: GA4Connector, hook: GA4Hook) -> None:
        self.connector = connector
        self.settings = connector.settings
        self.where = connector.where
        self.hook = hook
        self.pacer = QuotaPacer(sleep=connector.sleep)
        self.template = self._template()

    def _template(self) -> dict[str, Any]:
        settings = self.settings
        body: dict[str, Any] = {
            "property": f"properties/{settings.property_id}",
            "dimensions": [{"name": name} for name in settings.dimensions],
            "metrics": [{"name": name} for name in settings.metrics],
            # Ordered by every dimension: offset paging sees each row once.
            "orderBys": [{"dimension": {"dimensionName": name}} for name in settings.dimensions],
            "limit": str(self.connector.page_size),
            "returnPropertyQuota": True,
        }
        if settings.dimension_filter is not None:
            body["dimensionFilter"] = settings.dimension_filter
        return body

    def request(self, first: dt.date, last: dt.date, offset: int) -> Any:
        from google.analytics.data_v1beta import RunReportRequest

        body = {
            **self.template,
            "dateRanges": [{"startDate": first.isoformat(), "endDate": last.isoformat()}],
            "offset": str(offset),
        }
        try:
            return RunReportRequest.from_json(json.dumps(body))
        except Exception as exc:  # json_format.ParseError: a filter GA4 would not understand
            raise GA4RequestError(
                f"route {self.connector.context.route!r}: source.dimension_filter is not a GA4 "
                f"FilterExpression: {exc}"
            ) from exc

    def read_chunk(
        self, first: dt.date, last: dt.date
    ) -> Iterator[Any | BadRecord | SourceWarning]:
        """The records of the days ``first``..``last``, page after page, and their warnings."""
        dates = span(first, last)
        offset, warned, count = 0, False, 0
        while True:
            response = self.fetch(first, last, offset, dates)
            raw = type(response).pb(response)
            yield from self.quota_warnings(raw)
            if not warned:
                warned = True
                yield from self.chunk_warnings(raw.metadata, dates)
            types = [header.type_ for header in raw.metric_headers]
            dimensions = [header.name for header in raw.dimension_headers]
            metrics = [header.name for header in raw.metric_headers]
            for index, row in enumerate(raw.rows):
                yield _record(
                    row, dimensions, metrics, types, f"{self.where} {dates} row {offset + index}"
                )
            count += len(raw.rows)
            offset += len(raw.rows)
            if not raw.rows or offset >= raw.row_count:
                break
        log.info("%s: read %d rows for %s", self.where, count, dates)

    def fetch(self, first: dt.date, last: dt.date, offset: int, dates: str) -> Any:
        """One page: paced by the quotas, retried when transient; its quotas read."""
        request = self.request(first, last, offset)
        self.pacer.wait()
        return self.connector.retry.call(
            lambda: self.call(request, dates), what=f"GA4 runReport for {dates}"
        )

    def quota_warnings(self, raw: Any) -> Iterator[SourceWarning]:
        """Reads a response's ``propertyQuota`` into the pacer; warns when the day's runs low."""
        warning = self.pacer.observe(read_quota(raw.property_quota))
        if warning:
            log.warning("%s: %s", self.where, warning)
            yield SourceWarning(f"{self.where}: {warning}")

    def call(self, request: Any, dates: str) -> Any:
        """``runReport``, its failures mapped onto the package's error tree."""
        import requests
        from google.api_core import exceptions as google

        try:
            return self.hook.run_report(request)
        except google.GoogleAPICallError as exc:
            raise self.error(exc, dates) from exc
        except requests.RequestException as exc:
            raise GA4UnavailableError(f"{self.where} could not be reached: {exc}") from exc

    def error(self, exc: Any, dates: str) -> SourceError:
        """The package's error for a failed runReport (``exc``: a google.api_core error)."""
        from google.api_core import exceptions as google

        message = _google_message(exc)
        if isinstance(exc, google.TooManyRequests):
            quota = self.pacer.exhausted(message)
            if quota is not None:
                return GA4QuotaExhaustedError(
                    f"{self.where} has exhausted its {QUOTA_NAMES[quota]} quota ({quota}) "
                    f"reading {dates} ({message!r}): {WHEN_BACK.get(quota, 'it returns later')}. The run failed "
                    "and its cursor did not move: the next run reads these days again. Fewer "
                    "dimensions, shorter chunks or fewer runs use fewer tokens"
                )
            return GA4UnavailableError(
                f"{self.where} is busy (429, quota left) reading {dates}: {message}",
                retry_after=_retry_after(exc),
            )
        if isinstance(exc, google.ServerError):
            return GA4UnavailableError(
                f"{self.where} failed reading {dates} ({exc.code}): {message}",
                retry_after=_retry_after(exc),
            )
        if isinstance(exc, google.BadRequest):
            return GA4RequestError(
                f"{self.where} refused the report for {dates}: {message} (check "
                f"source.dimensions, source.metrics and source.dimension_filter against "
                f"{API_SCHEMA_URL})"
            )
        if isinstance(exc, google.Unauthorized | google.Forbidden | google.NotFound):
            return GA4RequestError(
                f"{self.where} cannot be read with source.connection "
                f"{self.settings.connection!r} ({exc.code}): {message} (give the connection's "
                "account Viewer access to the property, and check property_id)"
            )
        return SourceError(f"{self.where} failed reading {dates} ({exc.code}): {message}")

    def chunk_warnings(self, metadata: Any, dates: str) -> Iterator[SourceWarning]:
        """Sampling, thresholding and (other)-row data loss of one chunk, as warnings."""
        if metadata.sampling_metadatas:
            read = sum(item.samples_read_count for item in metadata.sampling_metadatas)
            space = sum(item.sampling_space_size for item in metadata.sampling_metadatas)
            share = f", {100 * read / space:.1f}%" if space else ""
            message = (
                f"{self.where} sampled the report for {dates} ({read:,} of {space:,} "
                f"samples read{share}): its metrics are estimates"
            )
            if self.settings.on_sampling == "fail":
                raise SourceError(
                    f"{message}; source.on_sampling is fail. Use chunk: day or fewer "
                    "dimensions to stay under GA4's sampling limit, or on_sampling: warn to "
                    "accept estimates"
                )
            yield SourceWarning(f"{message} (shorter chunks or fewer dimensions may avoid it)")
        if metadata.subject_to_thresholding:
            yield SourceWarning(
                f"{self.where} applied thresholding to the report for {dates}: rows with few "
                "users may be withheld, so totals can be lower than the property's real ones"
            )
        if metadata.data_loss_from_other_row:
            yield SourceWarning(
                f"{self.where} grouped rows into (other) for {dates} (dataLossFromOtherRow): "
                "some dimension values were aggregated into an (other) row, delivered like any "
                "other; fewer or less detailed dimensions avoid it"
            )


def _record(
    row: Any, dimensions: list[str], metrics: list[str], types: list[int], position: str
) -> dict[str, Any] | BadRecord:
    record: dict[str, Any] = {
        name: value.value for name, value in zip(dimensions, row.dimension_values, strict=True)
    }
    try:
        for name, kind, value in zip(metrics, types, row.metric_values, strict=True):
            record[name] = int(value.value) if kind == TYPE_INTEGER else float(value.value)
    except ValueError as exc:
        raw = dict(record)
        raw.update(
            {name: value.value for name, value in zip(metrics, row.metric_values, strict=True)}
        )
        return BadRecord(position=position, error=f"a metric is not a number: {exc}", raw=raw)
    return record


def _google_message(exc: Any) -> str:
    """The ``error.message`` of Google's JSON answer (the exception's text adds the URL)."""
    try:
        return str(exc.response.json()["error"]["message"]).strip()
    except Exception:  # no JSON body, or another shape
        return str(exc.message)


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return parse_retry_after(headers.get("Retry-After"))
