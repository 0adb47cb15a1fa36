"""The sql connector's cursor: the wrapped query, its settings, and incremental reads on each database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_dataflow.connectors.base import Cursor, CursorSpec, SourceWarning
from airflow_dataflow.connectors.sql import SqlConnector, SqlSettings, cursor_query
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from tests.support.databases import Database


def _settings(query: str = "SELECT * FROM events", **cursor: Any) -> SqlSettings:
    return SqlSettings.model_validate(
        {
            "type": "sql",
            "connection": "db",
            "query": query,
            **({"cursor": cursor} if cursor else {}),
        }
    )


# --- the wrapped query ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "quoted"),
    [
        (sqlite.dialect(), '"updated_at"'),
        (postgresql.dialect(), '"updated_at"'),
        (mysql.dialect(), "`updated_at`"),
    ],
)
def test_the_query_is_wrapped_with_the_dialects_quoting(dialect: sa.Dialect, quoted: str) -> None:
    settings = _settings(column="updated_at")
    connector = SqlConnector(settings, RunContext(route="r"), Cursor("updated_at", start="2024"))
    query, parameters = connector.statement(dialect, connector.run_cursor())
    assert query == (
        f"SELECT * FROM (\nSELECT * FROM events\n) AS dataflow_rows "
        f"WHERE {quoted} > :dataflow_cursor ORDER BY {quoted}"
    )
    assert parameters == {"dataflow_cursor": "2024"}


def test_without_a_start_value_every_row_is_read_in_cursor_order() -> None:
    assert cursor_query("SELECT a FROM t", '"a"', None) == (
        'SELECT * FROM (\nSELECT a FROM t\n) AS dataflow_rows ORDER BY "a"'
    )


def test_a_trailing_semicolon_and_comment_do_not_break_the_wrapping() -> None:
    wrapped = cursor_query("SELECT a FROM t -- all of them\n;  ", '"a"', "c")
    assert wrapped == (
        'SELECT * FROM (\nSELECT a FROM t -- all of them\n) AS dataflow_rows WHERE "a" > :c ORDER BY "a"'
    )


def test_the_cursor_parameter_never_clashes_with_the_users_parameters() -> None:
    settings = SqlSettings.model_validate(
        {
            "type": "sql",
            "connection": "db",
            "query": "SELECT * FROM t WHERE a = :dataflow_cursor AND b = :dataflow_cursor_2",
            "parameters": {"dataflow_cursor": 1, "dataflow_cursor_2": 2},
            "cursor": {"column": "id"},
        }
    )
    connector = SqlConnector(settings, RunContext(route="r"), Cursor("id", start=10))
    query, parameters = connector.statement(sqlite.dialect(), connector.run_cursor())
    assert query.endswith('WHERE "id" > :dataflow_cursor_3 ORDER BY "id"')
    assert parameters == {"dataflow_cursor": 1, "dataflow_cursor_2": 2, "dataflow_cursor_3": 10}


def test_without_a_cursor_the_query_runs_as_written() -> None:
    connector = SqlConnector(_settings(), RunContext(route="r"))
    assert connector.run_cursor() is None
    assert connector.statement(sqlite.dialect(), None) == ("SELECT * FROM events", {})


def test_a_connector_handed_no_cursor_starts_at_initial() -> None:
    connector = SqlConnector(_settings(column="id", initial=5), RunContext(route="r"))
    assert connector.run_cursor() == Cursor("id", start=5)


# --- settings -------------------------------------------------------------------------------


def test_cursor_settings_give_the_connectors_cursor_spec() -> None:
    assert _settings(column="updated_at", initial="2024-01-01").cursor_spec() == CursorSpec(
        "updated_at", "2024-01-01"
    )
    assert _settings().cursor_spec() is None


def test_a_yaml_date_as_initial_becomes_its_iso_string() -> None:
    settings = _settings(column="at", initial=dt.datetime(2024, 1, 2, 3, 4, 5))
    assert settings.cursor_spec() == CursorSpec("at", "2024-01-02T03:04:05")


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        ({"column": "t.updated_at"}, "is not a plain column name"),
        ({"column": "updated at"}, "is not a plain column name"),
        ({"column": "1st"}, "is not a plain column name"),
        ({"column": 'a"; DROP TABLE t; --'}, "is not a plain column name"),
        ({"column": "id", "initail": 0}, "initail"),
        ({"initial": 0}, "column"),
        ({"column": "id", "initial": [1]}, "must be a string or a number"),
        ({"column": "id", "initial": {"a": 1}}, "must be a string or a number"),
        ({"column": "id", "initial": float("inf")}, "must be a string or a number"),
    ],
)
def test_bad_cursor_settings_are_refused(cursor: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**cursor)


def test_parameters_are_still_checked_against_the_query_with_a_cursor() -> None:
    with pytest.raises(ValidationError, match="query uses :since but parameters does not set it"):
        _settings("SELECT * FROM t WHERE a > :since", column="id")


# --- reads on SQLite, PostgreSQL and MariaDB ------------------------------------------------


def _create_events(db: Database, rows: list[tuple[Any, ...]]) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("amount", sa.Numeric(10, 2)),
        schema=db.schema,
    )
    metadata.create_all(db.engine, checkfirst=True)
    _insert(db, rows)


def _insert(db: Database, rows: list[tuple[Any, ...]]) -> None:
    table = sa.Table("events", sa.MetaData(), schema=db.schema, autoload_with=db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [dict(zip(["id", "updated_at", "amount"], row, strict=True)) for row in rows],
        )


def _at(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, 30, 15)


def _read(db: Database, column: str, start: Any = None, **extra: Any) -> tuple[list[Any], Cursor]:
    settings = SqlSettings.model_validate(
        {
            "type": "sql",
            "connection": db.conn_id,
            "query": f"SELECT id, updated_at, amount FROM {db.table('events')}",
            "cursor": {"column": column, **extra},
        }
    )
    cursor = Cursor(column, start=start)
    items = list(SqlConnector(settings, RunContext(route="events"), cursor).read())
    return items, cursor


def test_timestamp_cursor_reads_only_newer_rows_in_order(db: Database) -> None:
    _create_events(db, [(1, _at(3), 1), (2, _at(1), 2), (3, _at(2), 3)])

    first, cursor = _read(db, "updated_at")
    assert [record["id"] for record in first] == [2, 3, 1]  # in the cursor's order
    assert cursor.last_value == first[-1]["updated_at"]  # as staged: an ISO/text string

    _insert(db, [(4, _at(5), 4), (5, _at(3, 12), 5), (6, _at(2), 6)])  # 6: older, never read
    second, cursor = _read(db, "updated_at", start=cursor.last_value)
    assert [record["id"] for record in second] == [5, 4]
    assert cursor.last_value == second[-1]["updated_at"]

    third, cursor = _read(db, "updated_at", start=cursor.last_value)
    assert third == [] and cursor.last_value is None  # nothing read: no candidate


def test_number_cursor_reads_strictly_greater_values(db: Database) -> None:
    _create_events(
        db, [(1, None, Decimal("10.50")), (2, None, Decimal("7")), (3, None, Decimal("10.5"))]
    )
    records, cursor = _read(db, "id", start=1)
    assert [record["id"] for record in records] == [2, 3]
    assert cursor.last_value == 3

    records, cursor = _read(db, "amount", start=7)
    assert [record["id"] for record in records] in ([1, 3], [3, 1])  # equal amounts: any order
    assert cursor.last_value == 10.5
    records, cursor = _read(db, "amount", start=10.5)
    assert records == [] and cursor.last_value is None


def test_null_cursor_values_are_read_once_with_a_warning_and_never_become_the_cursor(
    db: Database,
) -> None:
    _create_events(db, [(1, _at(1), 1), (2, None, 2), (3, _at(2), 3), (4, None, 4)])
    items, cursor = _read(db, "updated_at")
    warnings = [item for item in items if isinstance(item, SourceWarning)]
    records = [item for item in items if not isinstance(item, SourceWarning)]
    assert sorted(record["id"] for record in records) == [1, 2, 3, 4]
    assert cursor.last_value == next(r["updated_at"] for r in records if r["id"] == 3)
    assert len(warnings) == 1
    assert "'updated_at' was NULL in 2 rows" in warnings[0].message
    assert items[-1] is warnings[0]  # after the records

    first = next(record["updated_at"] for record in records if record["id"] == 1)
    items, _ = _read(db, "updated_at", start=first)  # with a start, NULL is never greater
    assert [item["id"] for item in items] == [3]


def test_a_cursor_column_missing_from_the_result_is_named(db: Database) -> None:
    _create_events(db, [(1, _at(1), 1)])
    with pytest.raises(SourceError) as raised:
        _read(db, "updated", start="2024-01-01")
    message = str(raised.value)
    assert "route 'events'" in message
    if db.kind == "sqlite":  # SQLite takes "updated" for a string: the connector catches it
        assert "source.cursor.column 'updated' is not a column of the query's result" in message
    else:
        assert "updated" in message and "failed after 0 rows" in message


@pytest.mark.integration
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_postgres_refusing_the_cursor_value_names_route_value_and_remedy(db: Database) -> None:
    _create_events(db, [(1, _at(1), 1)])
    with pytest.raises(SourceError) as raised:
        _read(db, "updated_at", start="not a timestamp")
    message = str(raised.value)
    assert "route 'events'" in message
    assert "'not a timestamp'" in message
    assert "invalid input syntax for type timestamp" in message
    assert "airflow-dataflow cursor reset events" in message
    assert '{"reset_cursor": true}' in message
