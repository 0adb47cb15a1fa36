"""GA4 settings: what a route may write under ``source: {type: ga4}``, and what it may not."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_dataflow.config import load_route_text
from airflow_dataflow.connectors.ga4 import GA4Settings
from airflow_dataflow.errors import RouteConfigError
from tests.connectors.ga4_support import settings


def _error(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        settings("ga4", **overrides)
    return str(caught.value)


def test_defaults() -> None:
    loaded = settings("ga4")
    assert (loaded.chunk, loaded.lookback_days, loaded.on_sampling) == ("day", 2, "warn")
    assert loaded.dimension_filter is None
    spec = loaded.cursor_spec()
    assert spec is not None and (spec.field, spec.initial) == ("date", None)


@pytest.mark.parametrize(
    "value", ["2024-03-01", "today", "yesterday", "7daysAgo", "0daysAgo", dt.date(2024, 3, 1)]
)
def test_date_range_accepts_ga4_date_forms(value: Any) -> None:
    loaded = settings("ga4", date_range={"start": value, "end": "today"})
    assert loaded.date_range.start == (value.isoformat() if isinstance(value, dt.date) else value)


@pytest.mark.parametrize("value", ["2024-02-30", "last week", "7 days ago", "-1daysAgo", 20240301])
def test_date_range_refuses_other_forms(value: Any) -> None:
    assert "date" in _error(date_range={"start": value, "end": "today"})


def test_date_range_end_defaults_to_yesterday() -> None:
    assert settings("ga4", date_range={"start": "30daysAgo"}).date_range.end == "yesterday"


def test_date_range_start_after_end_is_refused() -> None:
    assert "start 2024-03-05 is after end 2024-03-01" in _error(
        date_range={"start": "2024-03-05", "end": "2024-03-01"}
    )


@pytest.mark.parametrize("value", [123456789, "123456789", "properties/123456789"])
def test_property_id_is_the_number(value: Any) -> None:
    assert settings("ga4", property_id=value).property_id == "123456789"


@pytest.mark.parametrize("value", ["GA-1234", "", "properties/", True])
def test_property_id_must_be_a_number(value: Any) -> None:
    assert "is not a GA4 property id" in _error(property_id=value)


def test_dimensions_must_tell_the_days_apart() -> None:
    message = _error(dimensions=["country"])
    assert "dimensions must include date or dateHour or dateHourMinute" in message
    assert "upsert" in message


def test_weekly_chunks_may_use_the_iso_week_dimension() -> None:
    assert settings("ga4", chunk="week", dimensions=["isoYearIsoWeek", "country"]).chunk == "week"
    assert "isoYearIsoWeek" not in settings("ga4").dimensions
    assert "dimensions must include" in _error(dimensions=["isoYearIsoWeek", "country"])


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"dimensions": ["date", "country", "date"]}, "dimensions date listed twice"),
        ({"metrics": ["sessions", "bounce rate"]}, "are not GA4 metrics names"),
        ({"dimensions": ["date", *[f"customEvent:p{n}" for n in range(9)]]}, "at most 9"),
        ({"metrics": [f"customEvent:m{n}" for n in range(11)]}, "at most 10"),
        ({"metrics": []}, "at least 1"),
        ({"dimensions": ["date", "sessions"]}, "sessions is both a dimension and a metric"),
        ({"chunk": "month"}, "'day' or 'week'"),
        ({"lookback_days": -1}, "greater than or equal to 0"),
        ({"on_sampling": "ignore"}, "'warn' or 'fail'"),
        ({"page_size": 10}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, Any], problem: str) -> None:
    assert problem in _error(**overrides)


def test_dimension_filter_takes_ga4_filter_expression_json() -> None:
    expression = {
        "andGroup": {
            "expressions": [
                {"filter": {"fieldName": "country", "stringFilter": {"value": "Germany"}}},
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
    assert settings("ga4", dimension_filter=expression).dimension_filter == expression


def test_dimension_filter_must_have_one_expression_kind() -> None:
    message = _error(dimension_filter={"fieldName": "country", "stringFilter": {"value": "DE"}})
    assert "exactly one key of andGroup, orGroup, notExpression or filter" in message


def test_a_route_file_reports_the_setting_and_its_line() -> None:
    text = """
source:
  type: ga4
  connection: ga4
  property_id: 123456789
  dimensions: [date]
  metrics: [sessions]
  date_range: {start: last monday}
destinations:
  out: {type: file, path: out.jsonl}
"""
    with pytest.raises(RouteConfigError) as caught:
        load_route_text(text, "ga4.route.yaml")
    assert "source.date_range.start" in str(caught.value)
    assert "YYYY-MM-DD, today, yesterday or NdaysAgo" in str(caught.value)


def test_settings_schema_documents_the_date_forms() -> None:
    schema = GA4Settings.model_json_schema()
    start = schema["$defs"]["DateRange"]["properties"]["start"]
    assert start["pattern"].startswith("^(")
