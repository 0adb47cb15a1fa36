"""The bigquery connector against a local BigQuery REST API (tests/fakes/bigquery.py).

The real google-cloud-bigquery client talks to the fake through the connection's
``api_endpoint`` extra; queries really run (SQLite, time travel included).
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_dataflow.connectors.base import Cursor, SourceWarning
from airflow_dataflow.connectors.bigquery import (
    BigQueryConnector,
    BigQueryQueryError,
    BigQuerySettings,
    BigQueryUnavailableError,
)
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import FatalError, RetriableError
from tests.fakes.bigquery import FakeBigQuery

TABLE = "shop.orders"
COLUMNS = {"id": "INT64", "country": "STRING", "amount": "NUMERIC", "updated_at": "TIMESTAMP"}
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBigQuery]:
    with FakeBigQuery() as server:
        monkeypatch.setenv("AIRFLOW_CONN_BQ", server.connection())
        yield server


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def orders(fake: FakeBigQuery, now: dt.datetime) -> FakeBigQuery:
    """Ten orders, added two hours ago; ``updated_at`` one hour apart from 2024-01-01."""
    fake.create_table(TABLE, COLUMNS, created=now - 3 * HOUR)
    fake.insert(
        TABLE,
        [
            {
                "id": n,
                "country": "DE" if n % 2 else "FR",
                "amount": f"{n * 10}.50",
                "updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + n * HOUR,
            }
            for n in range(1, 11)
        ],
        at=now - 2 * HOUR,
    )
    return fake


def _settings(query: str, **settings: Any) -> BigQuerySettings:
    return BigQuerySettings(type="bigquery", connection="bq", query=query, **settings)


def _context(
    run_id: str = "run-1", started: dt.datetime | None = None, **params: Any
) -> RunContext:
    return RunContext(route="orders", run_id=run_id, params=params, run_started=started)


def _read(
    settings: BigQuerySettings, context: RunContext, cursor: Cursor | None = None
) -> list[Any]:
    return list(BigQueryConnector(settings, context, cursor).read())


def _only_job(fake: FakeBigQuery) -> Any:
    (job_id,) = fake.inserted
    return fake.jobs[job_id]


def test_parameters_are_typed_and_bound(orders: FakeBigQuery) -> None:
    settings = _settings(
        "SELECT id FROM `shop.orders` WHERE amount > @min AND country IN UNNEST(@countries) "
        "AND @label != country AND @flag ORDER BY id",
        parameters={"min": 55.5, "countries": ["DE"], "label": "x' OR '1'='1", "flag": True},
    )
    assert _read(settings, _context()) == [{"id": 7}, {"id": 9}]
    config = _only_job(orders).configuration["query"]
    assert config["useLegacySql"] is False
    assert config["parameterMode"] == "NAMED"
    typed = {p["name"]: p["parameterType"] for p in config["queryParameters"]}
    assert typed == {
        "min": {"type": "FLOAT64"},
        "countries": {"type": "ARRAY", "arrayType": {"type": "STRING"}},
        "label": {"type": "STRING"},
        "flag": {"type": "BOOL"},
    }
    assert "x' OR" not in config["query"]  # values never go into the text


def test_parameter_values_are_never_sql(orders: FakeBigQuery) -> None:
    settings = _settings(
        "SELECT id FROM `shop.orders` WHERE country = @country",
        parameters={"country": "x' OR '1'='1"},
    )
    assert _read(settings, _context()) == []


def test_parameter_templates_render_once_per_run_to_native_values(orders: FakeBigQuery) -> None:
    settings = _settings(
        "SELECT id FROM `shop.orders` WHERE id > @since ORDER BY id",
        parameters={"since": "{{ params.since }}"},
    )
    assert _read(settings, _context(since=8)) == [{"id": 9}, {"id": 10}]
    [parameter] = _only_job(orders).configuration["query"]["queryParameters"]
    assert parameter["parameterType"] == {"type": "INT64"}


def test_values_become_json_friendly(fake: FakeBigQuery) -> None:
    fake.create_table(
        "shop.kinds",
        {"i": "INT64", "f": "FLOAT64", "n": "NUMERIC", "b": "BOOL", "s": "STRING",
         "ts": "TIMESTAMP", "d": "DATE", "dtm": "DATETIME", "by": "BYTES", "none": "STRING"},
    )  # fmt: skip
    fake.insert(
        "shop.kinds",
        [{"i": 7, "f": 1.25, "n": "12.50", "b": True, "s": "é", "d": "2024-02-03",
          "ts": dt.datetime(2024, 2, 3, 4, 5, 6, 789, tzinfo=dt.UTC),
          "dtm": dt.datetime(2024, 2, 3, 4, 5, 6), "by": b"\x00\xff", "none": None}],
        at=dt.datetime.now(dt.UTC) - HOUR,
    )  # fmt: skip
    [record] = _read(_settings("SELECT * FROM `dataflow-test.shop.kinds`"), _context())
    assert record == {
        "i": 7,
        "f": 1.25,
        "n": 12.5,
        "b": True,
        "s": "é",
        "ts": "2024-02-03T04:05:06.000789+00:00",
        "d": "2024-02-03",
        "dtm": "2024-02-03T04:05:06",
        "by": "AP8=",
        "none": None,
    }


def test_cursor_wraps_the_query_and_reads_after_the_start_in_order(orders: FakeBigQuery) -> None:
    settings = _settings(
        "SELECT id, updated_at FROM `shop.orders` WHERE country = @country;",
        parameters={"country": "DE"},
        cursor={"column": "updated_at", "initial": "2024-01-01T00:00:00+00:00"},
    )
    cursor = Cursor("updated_at", start="2024-01-01T05:00:00+00:00")
    records = _read(settings, _context(), cursor)
    assert [record["id"] for record in records] == [7, 9]
    assert cursor.last_value == "2024-01-01T09:00:00+00:00"
    config = _only_job(orders).configuration["query"]
    assert config["query"] == (
        "SELECT * FROM (\nSELECT id, updated_at FROM `shop.orders` WHERE country = @country\n) "
        "AS dataflow_rows WHERE `updated_at` > @dataflow_cursor ORDER BY `updated_at`"
    )
    sent = {p["name"]: p for p in config["queryParameters"]}
    assert sent["dataflow_cursor"]["parameterType"] == {"type": "STRING"}
    assert sent["dataflow_cursor"]["parameterValue"] == {"value": "2024-01-01T05:00:00+00:00"}


def test_the_committed_cursor_value_reads_nothing_again(orders: FakeBigQuery) -> None:
    """The staged form of a TIMESTAMP, sent back as the start, excludes that very row."""
    settings = _settings(
        "SELECT id, updated_at FROM `shop.orders`", cursor={"column": "updated_at"}
    )
    first = Cursor("updated_at")
    assert len(_read(settings, _context("run-1"), first)) == 10
    again = Cursor("updated_at", start=first.last_value)
    assert _read(settings, _context("run-2"), again) == []
    assert again.last_value is None


def test_a_cursor_column_with_nulls_adds_a_warning(fake: FakeBigQuery) -> None:
    fake.create_table("shop.events", {"id": "INT64", "seq": "INT64"})
    fake.insert("shop.events", [{"id": 1, "seq": None}, {"id": 2, "seq": 5}])
    items = _read(
        _settings("SELECT id, seq FROM `shop.events`", cursor={"column": "seq"}), _context()
    )
    assert items[:2] == [{"id": 1, "seq": None}, {"id": 2, "seq": 5}]
    [warning] = items[2:]
    assert isinstance(warning, SourceWarning) and "was NULL in 1 rows" in warning.message


def test_results_are_read_page_by_page_as_records_are_consumed(fake: FakeBigQuery) -> None:
    fake.create_table("shop.numbers", {"n": "INT64"})
    fake.insert("shop.numbers", [{"n": n} for n in range(45)])
    settings = _settings("SELECT n FROM `shop.numbers` ORDER BY n", page_size=10)
    records = BigQueryConnector(settings, _context()).read()
    assert inspect.isgenerator(records)
    assert next(records) == {"n": 0}
    job_id = fake.inserted[0]
    assert fake.pages_served(job_id) == [(0, 10)]  # one page fetched for the first record
    assert [record["n"] for record in records] == list(range(1, 45))
    assert fake.pages_served(job_id) == [(0, 10), (10, 10), (20, 10), (30, 10), (40, 5)]
    assert all(call.query["maxResults"] == "10" for call in fake.calls("jobs.getQueryResults"))


def test_a_retried_try_re_attaches_to_the_job_of_the_first(orders: FakeBigQuery) -> None:
    settings = _settings("SELECT id FROM `shop.orders` ORDER BY id", page_size=3)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    first_try = BigQueryConnector(settings, _context(started=started)).read()
    assert next(first_try) == {"id": 1}
    first_try.close()  # the task died after the job started

    records = _read(settings, _context(started=started))  # the retry: same run
    assert [record["id"] for record in records] == list(range(1, 11))
    assert len(orders.inserted) == 1  # one job only
    inserts = orders.calls("jobs.insert")
    assert [call.status for call in inserts] == [200, 409]
    job_id = orders.inserted[0]
    assert inserts[1].body is not None
    assert inserts[1].body["jobReference"]["jobId"] == job_id


def test_each_run_gets_its_own_job(orders: FakeBigQuery) -> None:
    settings = _settings("SELECT id FROM `shop.orders` WHERE id = 1")
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    _read(settings, _context("run-1", started))
    _read(settings, _context("run-2", started))
    assert len(set(orders.inserted)) == 2
    assert all(job_id.startswith("dataflow_orders_") for job_id in orders.inserted)


def test_the_snapshot_reads_tables_as_of_the_run_start(
    orders: FakeBigQuery, now: dt.datetime
) -> None:
    settings = _settings(
        "SELECT id FROM `shop.orders` FOR SYSTEM_TIME AS OF @dataflow_snapshot AS o "
        "WHERE o.id > 8 ORDER BY o.id"
    )
    started = now - HOUR
    orders.insert(TABLE, [{"id": 11, "country": "DE", "amount": 1}], at=now - HOUR / 2)
    assert _read(settings, _context("run-1", started)) == [{"id": 9}, {"id": 10}]
    [snapshot] = _only_job(orders).configuration["query"]["queryParameters"]
    assert snapshot["parameterType"] == {"type": "TIMESTAMP"}
    assert snapshot["parameterValue"] == {"value": f"{started:%Y-%m-%d %H:%M:%S}+00:00"}
    # The next run starts later: it sees the row added after the first run's start.
    assert _read(settings, _context("run-2", now)) == [{"id": 9}, {"id": 10}, {"id": 11}]


def test_the_snapshot_stays_the_same_across_retries(orders: FakeBigQuery, now: dt.datetime) -> None:
    settings = _settings(
        "SELECT id FROM `shop.orders` FOR SYSTEM_TIME AS OF @dataflow_snapshot WHERE id > 9"
    )
    started = now - HOUR
    orders.fail_jobs("backendError", "Error encountered during execution. Retrying may solve it.")
    with pytest.raises(BigQueryUnavailableError):
        _read(settings, _context(started=started))
    # Between the tries a row arrives; the retry runs a new job as of the same instant.
    orders.insert(TABLE, [{"id": 12, "country": "FR", "amount": 1}], at=now - HOUR / 2)
    assert _read(settings, _context(started=started)) == [{"id": 10}]
    first, second = (orders.jobs[job_id] for job_id in orders.inserted)
    assert second.job_id == f"{first.job_id}_2"  # the next job of the run's chain
    assert first.parameters == second.parameters


def test_a_failed_job_is_retriable_and_names_the_route_and_message(orders: FakeBigQuery) -> None:
    orders.fail_jobs("backendError", "Error encountered during execution. Retrying may solve it.")
    with pytest.raises(BigQueryUnavailableError) as caught:
        _read(_settings("SELECT id FROM `shop.orders`"), _context())
    message = str(caught.value)
    assert message.startswith("route 'orders': source.query on BigQuery (job dataflow_orders_")
    assert "Error encountered during execution. Retrying may solve it." in message
    assert "[backendError]" in message
    assert isinstance(caught.value, RetriableError)


def test_a_bad_query_is_fatal_with_bigquery_s_message(orders: FakeBigQuery) -> None:
    with pytest.raises(BigQueryQueryError) as caught:
        _read(_settings("SELECT nope FROM `shop.orders`"), _context())
    assert "Unrecognized name: nope" in str(caught.value)
    assert "[invalidQuery]" in str(caught.value)
    assert isinstance(caught.value, FatalError)


def test_a_missing_table_is_fatal(fake: FakeBigQuery) -> None:
    with pytest.raises(BigQueryQueryError, match=r"Not found: Table dataflow-test:shop.gone"):
        _read(_settings("SELECT 1 FROM `shop.gone`"), _context())


def test_a_missing_cursor_column_says_how_to_name_it(orders: FakeBigQuery) -> None:
    settings = _settings("SELECT id FROM `shop.orders`", cursor={"column": "changed"})
    with pytest.raises(BigQueryQueryError, match="must be a column of the query's result"):
        _read(settings, _context())


def test_a_snapshot_out_of_time_travel_says_why(orders: FakeBigQuery, now: dt.datetime) -> None:
    settings = _settings("SELECT id FROM `shop.orders` FOR SYSTEM_TIME AS OF @dataflow_snapshot")
    with pytest.raises(BigQueryQueryError, match="time travel window") as caught:
        _read(settings, _context(started=now - dt.timedelta(days=8)))
    assert "@dataflow_snapshot is the DAG run's start" in str(caught.value)


def test_transient_http_errors_are_retried_by_the_client(orders: FakeBigQuery) -> None:
    orders.fail_requests("jobs.getQueryResults", 503, "backendError", "The service is unavailable")
    assert len(_read(_settings("SELECT id FROM `shop.orders`"), _context())) == 10


def test_http_errors_that_last_fail_the_try_as_retriable(
    orders: FakeBigQuery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BigQueryConnector, "retry_seconds", 0.5)
    orders.fail_requests("jobs.getQueryResults", 429, "rateLimitExceeded", "Too many", times=50)
    with pytest.raises(BigQueryUnavailableError, match=r"Too many.*still failing after retries"):
        _read(_settings("SELECT id FROM `shop.orders`"), _context())


def test_access_denied_is_fatal(orders: FakeBigQuery) -> None:
    orders.fail_requests("jobs.insert", 403, "accessDenied", "Access Denied: Project dataflow-test")
    with pytest.raises(BigQueryQueryError, match=r"Access Denied.*\[accessDenied\]"):
        _read(_settings("SELECT id FROM `shop.orders`"), _context())


def test_an_undefined_connection_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BQ", raising=False)
    with pytest.raises(BigQueryQueryError, match=r"source\.connection 'bq' is not a defined"):
        _read(_settings("SELECT 1"), _context())


def test_a_connection_without_project_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BQ",
        '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}',
    )
    with pytest.raises(BigQueryQueryError, match="names no project"):
        _read(_settings("SELECT 1"), _context())


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("#legacySQL\nSELECT id FROM [shop.orders]", "only GoogleSQL (standard SQL) is supported"),
        ("SELECT id FROM [dataflow-test:shop.orders]", "legacy SQL table reference"),
    ],
)
def test_legacy_sql_is_rejected(query: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        _settings(query)


@pytest.mark.parametrize(
    ("query", "parameters", "problem"),
    [
        ("SELECT @a, @b", {"a": 1}, "query uses @b but parameters does not set it"),
        ("SELECT @a", {"a": 1, "c": 2}, "parameters c not used by the query"),
        ("SELECT @dataflow_snapshot", {"dataflow_snapshot": 1}, "may not set dataflow_snapshot"),
        ("SELECT @dataflow_cursor", {}, "only the cursor wrap may use"),
        ("SELECT @a", {"a": {"x": 1}}, "parameters.a is a map"),
        ("SELECT @a", {"a": [1, "x"]}, "parameters.a is a list mixing"),
    ],
)
def test_parameters_must_match_the_query(
    query: str, parameters: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        _settings(query, parameters=parameters)


def test_a_rendered_parameter_without_a_type_is_refused(orders: FakeBigQuery) -> None:
    settings = _settings("SELECT @a", parameters={"a": "{{ params.a }}"})
    with pytest.raises(BigQueryQueryError, match=r"source.parameters.a is a map"):
        _read(settings, _context(a={"x": 1}))
    assert orders.inserted == []
