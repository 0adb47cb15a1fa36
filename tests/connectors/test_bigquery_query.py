"""The bigquery connector's SQL side: parameter names and types, legacy SQL, the wrap, job ids."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from airflow_dataflow.connectors.bigquery_query import (
    ParameterError,
    chained_job_id,
    cursor_query,
    job_id,
    legacy_sql_problem,
    query_parameter,
    query_parameter_names,
    snapshot_parameter,
)


@pytest.mark.parametrize(
    ("value", "api_type", "api_value"),
    [
        (True, {"type": "BOOL"}, {"value": "true"}),
        (42, {"type": "INT64"}, {"value": "42"}),
        (2.5, {"type": "FLOAT64"}, {"value": 2.5}),
        (Decimal("12.50"), {"type": "NUMERIC"}, {"value": "12.50"}),
        ("DE", {"type": "STRING"}, {"value": "DE"}),
        # ISO text stays STRING: BigQuery coerces it where a date or timestamp is expected.
        ("2024-01-02T03:04:05+00:00", {"type": "STRING"}, {"value": "2024-01-02T03:04:05+00:00"}),
        (dt.date(2024, 1, 2), {"type": "DATE"}, {"value": "2024-01-02"}),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5),
            {"type": "DATETIME"},
            {"value": "2024-01-02T03:04:05.000000"},
        ),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            {"type": "TIMESTAMP"},
            {"value": "2024-01-02 03:04:05+00:00"},
        ),
        (None, {"type": "STRING"}, {"value": None}),
        (
            [1, 2],
            {"type": "ARRAY", "arrayType": {"type": "INT64"}},
            {"arrayValues": [{"value": "1"}, {"value": "2"}]},
        ),
        (
            [1, 2.5],
            {"type": "ARRAY", "arrayType": {"type": "FLOAT64"}},
            {"arrayValues": [{"value": 1}, {"value": 2.5}]},
        ),
        ([], {"type": "ARRAY", "arrayType": {"type": "STRING"}}, {"arrayValues": []}),
    ],
)
def test_parameter_types_are_inferred_from_values(
    value: Any, api_type: dict[str, Any], api_value: dict[str, Any]
) -> None:
    api = query_parameter("p", value).to_api_repr()
    assert api["parameterType"] == api_type
    assert api["parameterValue"] == api_value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": 1}, "STRUCT parameters are not supported"),
        ([[1], [2]], "no arrays of arrays"),
        ([1, None], "cannot hold NULL"),
        ([1, "a"], "mixing INT64, STRING"),
        (2**63, "does not fit INT64"),
        (float("nan"), "not a finite number"),
    ],
)
def test_values_without_a_parameter_type_are_refused(value: Any, problem: str) -> None:
    with pytest.raises(ParameterError, match=problem):
        query_parameter("p", value)


def test_parameter_names_skip_strings_comments_quoted_names_and_system_variables() -> None:
    query = """
        SELECT '@not_a' AS a, "@not_b", r'@not_c', '''@not_d''', `@not_e`  -- @not_f
        # @not_g
        /* @not_h */
        FROM t WHERE x = @real AND y IN UNNEST(@ids) AND z = @@dataset_id
    """
    assert query_parameter_names(query) == {"real", "ids"}


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("#legacySQL\nSELECT 1", "starts with #legacySQL"),
        ("SELECT id FROM [my-project:shop.orders]", "legacy SQL table reference"),
        ("SELECT a.id FROM t a JOIN [shop.orders] b ON a.id = b.id", "legacy SQL table reference"),
    ],
)
def test_legacy_sql_is_recognised(query: str, problem: str) -> None:
    assert problem in (legacy_sql_problem(query) or "")


@pytest.mark.parametrize(
    "query",
    [
        "#standardSQL\nSELECT 1",
        "SELECT [1, 2] AS a FROM `p.d.t`",
        "SELECT '[not:a.table]' FROM t -- FROM [x.y]",
    ],
)
def test_standard_sql_is_not_taken_for_legacy(query: str) -> None:
    assert legacy_sql_problem(query) is None


def test_cursor_wrap_filters_on_the_parameter_and_orders() -> None:
    assert cursor_query("SELECT * FROM t;  ", "updated_at", with_start=True) == (
        "SELECT * FROM (\nSELECT * FROM t\n) AS dataflow_rows "
        "WHERE `updated_at` > @dataflow_cursor ORDER BY `updated_at`"
    )
    assert cursor_query("SELECT * FROM t -- note", "id", with_start=False) == (
        "SELECT * FROM (\nSELECT * FROM t -- note\n) AS dataflow_rows ORDER BY `id`"
    )


def test_snapshot_parameter_is_a_utc_timestamp() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    api = snapshot_parameter(dt.datetime(2024, 1, 2, 4, 0, tzinfo=paris)).to_api_repr()
    assert api == {
        "name": "dataflow_snapshot",
        "parameterType": {"type": "TIMESTAMP"},
        "parameterValue": {"value": "2024-01-02 03:00:00+00:00"},
    }


def _job_id(**changes: Any) -> str:
    identity: dict[str, Any] = {
        "route": "orders v2",
        "run_id": "manual__2024-01-01",
        "project": "p",
        "location": "EU",
        "query": "SELECT 1",
        "parameters": [query_parameter("a", 1)],
    }
    return job_id(**(identity | changes))


def test_job_ids_are_deterministic_and_change_with_each_input() -> None:
    first = _job_id()
    assert first == _job_id()
    assert first.startswith("dataflow_orders_v2_")
    assert set(first) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    others = {
        _job_id(route="customers"),
        _job_id(run_id="manual__2024-01-02"),
        _job_id(project="q"),
        _job_id(location="US"),
        _job_id(query="SELECT 2"),
        _job_id(parameters=[query_parameter("a", 2)]),
        _job_id(parameters=[query_parameter("a", 1), query_parameter("dataflow_cursor", 5)]),
    }
    assert first not in others and len(others) == 7
    assert chained_job_id(first, 1) == first
    assert chained_job_id(first, 2) == f"{first}_2"
