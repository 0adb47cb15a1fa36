"""GA4 incremental reads: the cursor is the last date read; lookback re-reads late data."""

from __future__ import annotations

import pytest

from airflow_dataflow.connectors.base import Cursor
from airflow_dataflow.connectors.ga4 import GA4RequestError
from airflow_dataflow.errors import SourceError
from tests.connectors import ga4_support
from tests.connectors.ga4_support import read, records
from tests.fakes.ga4 import FakeGA4, google_error

ga4 = ga4_support.ga4  # fixtures
ga4_conn = ga4_support.ga4_conn
WIDE = {"start": "2024-03-01", "end": "2024-03-10"}


def _days(ga4: FakeGA4) -> list[str]:
    return [request.dates[0] for request in ga4.requests]


def test_the_first_run_reads_the_whole_range(ga4: FakeGA4, ga4_conn: str) -> None:
    cursor = Cursor("date")
    read(ga4_conn, cursor, date_range=WIDE)
    assert _days(ga4)[0] == "2024-03-01" and len(ga4.requests) == 10
    assert cursor.last_value == "2024-03-10"


def test_the_next_run_re_reads_lookback_days_before_the_cursor(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn, Cursor("date", start="2024-03-06"), date_range=WIDE)
    assert _days(ga4) == [
        "2024-03-05",
        "2024-03-06",
        "2024-03-07",
        "2024-03-08",
        "2024-03-09",
        "2024-03-10",
    ]


def test_lookback_zero_reads_only_days_after_the_cursor(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn, Cursor("date", start="2024-03-08"), date_range=WIDE, lookback_days=0)
    assert _days(ga4) == ["2024-03-09", "2024-03-10"]


def test_late_data_of_re_read_days_comes_in_with_the_same_keys(ga4: FakeGA4, ga4_conn: str) -> None:
    first = records(read(ga4_conn, Cursor("date"), date_range=WIDE))
    ga4.late_data["2024-03-10"] = 1000  # GA4 settles the last days later
    again = records(read(ga4_conn, Cursor("date", start="2024-03-10"), date_range=WIDE))
    keys = {(r["date"], r["country"]) for r in again}
    assert keys == {
        (r["date"], r["country"]) for r in first if r["date"] in ("20240309", "20240310")
    }
    before = {(r["date"], r["country"]): r["sessions"] for r in first}
    changed = [r for r in again if r["sessions"] != before[(r["date"], r["country"])]]
    assert [(r["date"], r["country"]) for r in changed] == [("20240310", "France")]


def test_weekly_chunks_re_read_from_the_monday_of_the_week(ga4: FakeGA4, ga4_conn: str) -> None:
    # cursor Thursday 2024-03-07, lookback 2: from Wednesday, i.e. from Monday 2024-03-04.
    cursor = Cursor("date", start="2024-03-07")
    read(ga4_conn, cursor, chunk="week", date_range={"start": "2024-02-01", "end": "2024-03-13"})
    assert [request.dates for request in ga4.requests] == [
        ("2024-03-04", "2024-03-10"),
        ("2024-03-11", "2024-03-13"),
    ]
    assert cursor.last_value == "2024-03-13"


def test_never_reads_before_the_start_of_the_range(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn, Cursor("date", start="2024-01-01"), date_range=WIDE)
    assert _days(ga4)[0] == "2024-03-01"


def test_relative_start_and_cursor_together(ga4: FakeGA4, ga4_conn: str) -> None:
    cursor = Cursor("date", start="2024-03-18")
    read(ga4_conn, cursor, ds="2024-03-21", date_range={"start": "30daysAgo", "end": "yesterday"})
    assert _days(ga4) == ["2024-03-17", "2024-03-18", "2024-03-19", "2024-03-20"]
    assert cursor.last_value == "2024-03-20"


def test_nothing_to_read_makes_no_request_and_no_cursor(ga4: FakeGA4, ga4_conn: str) -> None:
    cursor = Cursor("date", start="2024-03-12")
    assert read(ga4_conn, cursor, date_range=WIDE, lookback_days=1) == []
    assert ga4.requests == [] and cursor.last_value is None


def test_a_failure_leaves_the_cursor_at_the_last_whole_chunk(ga4: FakeGA4, ga4_conn: str) -> None:
    cursor = Cursor("date")
    items = ga4_support.connector(ga4_conn, cursor, page_size=3).read()
    got = [next(items) for _ in range(4 + 3)]  # all of day 1 (4 rows), a page of day 2
    assert cursor.last_value == "2024-03-01"
    ga4.script(google_error(400, "Field sessions is not a valid metric.", "INVALID_ARGUMENT"))
    with pytest.raises(GA4RequestError):
        list(items)
    assert len(got) == 7 and cursor.last_value == "2024-03-01"  # day 2 is read again next time


def test_since_param_reads_as_if_it_were_the_cursor(ga4: FakeGA4, ga4_conn: str) -> None:
    read(
        ga4_conn,
        Cursor("date", start="7daysAgo"),
        ds="2024-03-10",
        date_range=WIDE,
        lookback_days=0,
    )
    assert _days(ga4) == [
        "2024-03-04",
        "2024-03-05",
        "2024-03-06",
        "2024-03-07",
        "2024-03-08",
        "2024-03-09",
        "2024-03-10",
    ]


def test_a_cursor_that_is_not_a_date_fails_with_the_remedy(ga4: FakeGA4, ga4_conn: str) -> None:
    with pytest.raises(SourceError) as caught:
        read(ga4_conn, Cursor("date", start=17))
    message = str(caught.value)
    assert "the cursor (the last date read) is 17, which is not a date" in message
    assert "airflow-dataflow cursor reset ga4_daily" in message
    assert ga4.requests == []
