"""GA4 date forms and chunks (plain functions, no server)."""

from __future__ import annotations

import datetime as dt

from airflow_dataflow.connectors.ga4_dates import chunk_start, chunks, resolve_date, span

D = dt.date


def test_relative_forms_resolve_against_the_run_date() -> None:
    today = D(2024, 3, 20)
    assert resolve_date("today", today) == today
    assert resolve_date("yesterday", today) == D(2024, 3, 19)
    assert resolve_date("30daysAgo", today) == D(2024, 2, 19)
    assert resolve_date("2024-01-05", today) == D(2024, 1, 5)


def test_daily_chunks() -> None:
    assert list(chunks(D(2024, 2, 28), D(2024, 3, 1), "day")) == [
        (D(2024, 2, 28), D(2024, 2, 28)),
        (D(2024, 2, 29), D(2024, 2, 29)),
        (D(2024, 3, 1), D(2024, 3, 1)),
    ]


def test_weekly_chunks_follow_iso_weeks() -> None:
    assert list(chunks(D(2024, 12, 28), D(2025, 1, 7), "week")) == [
        (D(2024, 12, 28), D(2024, 12, 29)),
        (D(2024, 12, 30), D(2025, 1, 5)),
        (D(2025, 1, 6), D(2025, 1, 7)),
    ]
    assert chunk_start(D(2025, 1, 1), "week") == D(2024, 12, 30)
    assert chunk_start(D(2025, 1, 1), "day") == D(2025, 1, 1)


def test_span_names_a_chunk() -> None:
    assert span(D(2024, 3, 1), D(2024, 3, 1)) == "2024-03-01"
    assert span(D(2024, 3, 4), D(2024, 3, 10)) == "2024-03-04..2024-03-10"
