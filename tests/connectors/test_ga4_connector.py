"""The ga4 connector through the real Data API client (REST) against the local fake."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from airflow_dataflow.connectors.base import Cursor
from airflow_dataflow.connectors.ga4 import GA4RequestError
from airflow_dataflow.errors import FatalError, SourceError
from tests.connectors import ga4_support
from tests.connectors.ga4_support import connector, read, records, warnings
from tests.fakes.ga4 import FakeGA4, expected_rows
from tests.support.databases import DefineConn

ga4 = ga4_support.ga4  # fixtures
ga4_conn = ga4_support.ga4_conn

DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]


def test_records_are_flat_with_metrics_typed_by_metric_headers(ga4_conn: str) -> None:
    metrics = ["sessions", "engagementRate", "averageSessionDuration", "purchaseRevenue"]
    got = records(
        read(ga4_conn, metrics=metrics, date_range={"start": "2024-03-01", "end": "2024-03-01"})
    )
    first = got[0]
    assert list(first) == ["date", "country", *metrics]  # one key per dimension and metric
    assert first["date"] == "20240301" and isinstance(first["country"], str)
    assert isinstance(first["sessions"], int)  # TYPE_INTEGER
    for name in ("engagementRate", "averageSessionDuration", "purchaseRevenue"):
        assert isinstance(first[name], float)  # TYPE_FLOAT, TYPE_SECONDS, TYPE_CURRENCY
    assert got == expected_rows(FakeGA4(), DAYS[:1], ["date", "country"], metrics)


def test_metric_types_arrive_as_enum_numbers_from_the_real_client(
    ga4: FakeGA4, ga4_conn: str
) -> None:
    read(ga4_conn)
    assert all("enum-encoding=int" in request.query.replace("%3D", "=") for request in ga4.requests)


def test_pages_with_offset_and_limit_until_row_count(ga4: FakeGA4, ga4_conn: str) -> None:
    got = records(read(ga4_conn, page_size=5, dimensions=["date", "country", "deviceCategory"]))
    assert got == expected_rows(
        ga4, DAYS, ["date", "country", "deviceCategory"], ["sessions", "engagementRate"]
    )
    # 12 rows a day (4 countries x 3 devices): pages at offsets 0, 5, 10, each row once.
    assert ga4.pages() == [(d.isoformat(), d.isoformat(), o) for d in DAYS for o in (0, 5, 10)]
    assert {request.limit for request in ga4.requests} == {5}


def test_rows_are_ordered_by_every_dimension(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn)
    assert ga4.requests[0].body["orderBys"] == [
        {"dimension": {"dimensionName": "date"}},
        {"dimension": {"dimensionName": "country"}},
    ]


def test_one_report_per_day(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn)
    assert [request.dates for request in ga4.requests] == [
        ("2024-03-01", "2024-03-01"),
        ("2024-03-02", "2024-03-02"),
        ("2024-03-03", "2024-03-03"),
    ]


def test_weekly_chunks_are_iso_weeks_clipped_to_the_range(ga4: FakeGA4, ga4_conn: str) -> None:
    # 2024-03-01 is a Friday: Fri..Sun, then Mon..Sun, then Mon..Wed.
    got = records(
        read(ga4_conn, chunk="week", date_range={"start": "2024-03-01", "end": "2024-03-13"})
    )
    assert [request.dates for request in ga4.requests] == [
        ("2024-03-01", "2024-03-03"),
        ("2024-03-04", "2024-03-10"),
        ("2024-03-11", "2024-03-13"),
    ]
    assert len(got) == 13 * 4  # date is a dimension: one row per day and country


def test_relative_dates_resolve_against_the_run_date(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn, ds="2024-03-20", date_range={"start": "3daysAgo", "end": "yesterday"})
    assert [request.dates[0] for request in ga4.requests] == [
        "2024-03-17",
        "2024-03-18",
        "2024-03-19",
    ]


def test_a_range_ending_before_it_starts_for_this_run_is_an_error(ga4_conn: str) -> None:
    with pytest.raises(
        SourceError,
        match=r"source.date_range starts on 2024-03-19 \('yesterday'\) after it ends on 2024-03-15",
    ):
        read(ga4_conn, ds="2024-03-20", date_range={"start": "yesterday", "end": "2024-03-15"})


def test_dimension_filter_is_sent_as_ga4_json(ga4: FakeGA4, ga4_conn: str) -> None:
    expression = {
        "andGroup": {
            "expressions": [
                {
                    "filter": {
                        "fieldName": "country",
                        "stringFilter": {"matchType": "BEGINS_WITH", "value": "g"},
                    }
                },
                {
                    "notExpression": {
                        "filter": {
                            "fieldName": "deviceCategory",
                            "inListFilter": {"values": ["tablet"]},
                        }
                    }
                },
            ]
        }
    }
    got = records(
        read(
            ga4_conn, dimension_filter=expression, dimensions=["date", "country", "deviceCategory"]
        )
    )
    assert {(r["country"], r["deviceCategory"]) for r in got} == {
        ("Germany", "desktop"),
        ("Germany", "mobile"),
    }
    sent = ga4.requests[0].body["dimensionFilter"]["andGroup"]["expressions"][0]["filter"]
    assert sent["stringFilter"]["value"] == "g"


def test_a_filter_ga4_would_not_parse_fails_before_any_request(ga4: FakeGA4, ga4_conn: str) -> None:
    with pytest.raises(
        GA4RequestError, match=r"source.dimension_filter is not a GA4 FilterExpression"
    ):
        read(
            ga4_conn,
            dimension_filter={"filter": {"fieldName": "country", "stringFiltre": {"value": "x"}}},
        )
    assert ga4.requests == []


def test_other_rows_are_delivered_like_any_other(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.other_row_limit = 3
    got = records(read(ga4_conn, date_range={"start": "2024-03-01", "end": "2024-03-01"}))
    assert len(got) == 3
    other = [record for record in got if record["country"] == "(other)"]
    assert len(other) == 1 and other[0]["sessions"] > 0


def test_reads_stream_page_by_page(ga4: FakeGA4, ga4_conn: str) -> None:
    items = connector(ga4_conn, page_size=2).read()
    next(items)
    assert len(ga4.requests) == 1  # one page fetched for the first record, not the whole range
    assert len(list(items)) == 3 * 4 - 1


def test_unknown_metric_fails_with_ga4s_message_and_the_settings(
    ga4: FakeGA4, ga4_conn: str
) -> None:
    with pytest.raises(GA4RequestError) as caught:
        read(ga4_conn, metrics=["sessions", "bounces"])
    message = str(caught.value)
    assert "route 'ga4_daily': GA4 property 123456789 refused the report for 2024-03-01" in message
    assert "Field bounces is not a valid metric" in message
    assert "source.metrics" in message
    assert isinstance(caught.value, FatalError)  # not retried
    assert len(ga4.requests) == 1


def test_a_property_the_account_cannot_read_names_the_connection(
    ga4: FakeGA4, ga4_conn: str
) -> None:
    with pytest.raises(
        GA4RequestError, match=rf"cannot be read with source.connection '{ga4_conn}' \(403\)"
    ):
        read(ga4_conn, property_id="555")


def test_a_missing_connection_is_named(ga4: FakeGA4) -> None:
    with pytest.raises(
        SourceError,
        match=r"source.connection names Airflow connection 'nope', which is not defined",
    ):
        read("nope")


def test_a_connection_of_another_type_is_refused(define_conn: DefineConn) -> None:
    conn_id = define_conn(json.dumps({"conn_type": "postgres", "host": "localhost"}))
    with pytest.raises(
        SourceError, match="has connection type 'postgres'; GA4 needs a 'google_cloud_platform'"
    ):
        read(conn_id)


def test_advances_the_cursor_to_the_last_date_read(ga4_conn: str) -> None:
    cursor = Cursor("date")
    items = read(ga4_conn, cursor)
    assert cursor.last_value == "2024-03-03"
    assert warnings(items) == []
