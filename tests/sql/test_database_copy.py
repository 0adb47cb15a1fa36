"""The PostgreSQL bulk path: COPY (binary, or text for other column types), then merge.

Every test forces COPY for any group size and checks the table against the same delivery
through INSERT statements, on the real local server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import database_sql
from airflow_dataflow.destinations.database import DatabaseDestination, DatabaseSettings
from airflow_dataflow.hooks.sql import dispose_engines, sql_engine
from tests.support.databases import Database, _postgres

pytestmark = pytest.mark.integration

RECORDS = [
    {"id": 1, "n": 5, "x": 1.5, "ok": True, "s": "plain", "doc": {"a": [1, 2]}},
    {"id": 2, "n": None, "x": 2, "ok": None, "s": "tab\there\nnew line \\ back\\slash"},
    {"id": 3, "n": -(2**63), "x": -0.0, "ok": False, "s": "ünïcødé ✓ 🚀", "doc": [1, "b"]},
    {"id": 4, "n": 2**63 - 1, "x": 1e308, "s": "", "doc": None},
    {"id": 5, "n": "7", "x": "3.25", "ok": "yes", "s": 42, "doc": "text"},
]


COLUMNS = {"n": "int", "x": "float", "ok": "bool", "s": "str", "doc": "json", "at": "datetime"}


@pytest.fixture
def pg(postgres_admin: sa.Engine, define_conn: Callable[..., str]) -> Iterator[Database]:
    yield from _postgres(postgres_admin, define_conn)


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """COPY for every group; returns the COPY statements run."""
    monkeypatch.setattr(database_sql, "COPY_MIN_ROWS", 1)
    statements: list[str] = []
    original = database_sql._Copy._copy

    def spy(self: Any, conn: sa.Connection, into: str, group: Any) -> None:
        statements.append(into)
        original(self, conn, into, group)

    monkeypatch.setattr(database_sql._Copy, "_copy", spy)
    return statements


def _destination(db: Database, table: str, **settings: Any) -> DatabaseDestination:
    values = {"type": "database", "connection": db.conn_id, "table": db.table(table)}
    context = RunContext(route="orders")
    return DatabaseDestination("warehouse", DatabaseSettings(**values | settings), context)


def _both_paths(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    deliveries: list[list[dict[str, Any]]],
    **settings: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each delivery to table ``by_copy`` with COPY and to ``by_insert`` without; both tables."""
    for table, threshold in (("by_copy", 1), ("by_insert", 1 << 40)):
        monkeypatch.setattr(database_sql, "COPY_MIN_ROWS", threshold)
        for records in deliveries:
            _destination(db, table, **settings).deliver([records])
    return db.rows("by_copy"), db.rows("by_insert")


@pytest.mark.parametrize("mode", ["insert", "upsert", "replace", "mirror"])
def test_copy_writes_what_inserts_write(
    pg: Database, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    key = ["id"] if mode in ("upsert", "mirror") else []
    later = [{"id": 2, "s": "changed"}, {"id": 6, "n": 6, "s": "six"}, {"id": 6, "x": 6.5}]
    by_copy, by_insert = _both_paths(
        pg, monkeypatch, [RECORDS, later], mode=mode, key=key, columns=COLUMNS
    )
    assert by_copy == by_insert
    ids = {
        "insert": [1, 2, 2, 3, 4, 5, 6, 6],
        "upsert": [1, 2, 3, 4, 5, 6],
        "replace": [2, 6, 6],
        "mirror": [2, 6],
    }[mode]
    assert [row["id"] for row in by_copy] == ids
    if mode in ("insert", "upsert"):
        first = {}
        for row in by_copy:
            first.setdefault(row["id"], row)
        assert [first[1], first[4], first[5]] == [
            {"id": 1, "n": 5, "x": 1.5, "ok": True, "s": "plain", "doc": {"a": [1, 2]}, "at": None},
            {"id": 4, "n": 2**63 - 1, "x": 1e308, "ok": None, "s": "", "doc": None, "at": None},
            {"id": 5, "n": 7, "x": 3.25, "ok": True, "s": "42", "doc": "text", "at": None},
        ]


def test_copy_is_used_in_binary_and_records_convert_alike(pg: Database, copies: list[str]) -> None:
    destination = _destination(pg, "orders", mode="upsert", key=["id"], columns={"at": "datetime"})
    records = [{"id": 1, "at": "2024-01-02T03:04:05.5+02:00"}, {"id": 2, "at": 1700000000}]
    destination.deliver([records])
    assert len(copies) == 1 and copies[0].startswith("_dataflow_stage_")
    rows = pg.rows("orders")
    assert [row["at"] for row in rows] == [
        dt.datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=dt.timezone.utc),
        dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc),
    ]


def test_columns_without_a_binary_form_are_copied_as_text(pg: Database, copies: list[str]) -> None:
    pg.execute(
        f"CREATE TABLE {pg.table('orders')} (id BIGINT PRIMARY KEY, total NUMERIC(10, 2), "
        "ref UUID, doc JSONB, day DATE, tags TEXT[])"
    )
    records = [
        {"id": 1, "total": 9.99, "ref": "0b9e6c2a-67c6-4b8a-9a43-3a8f2d1c9e01", "doc": {"k": 1}},
        {"id": 2, "total": "12.5", "day": "2024-02-29T10:00:00", "doc": [1]},
        {"id": 3, "total": 3, "ref": None, "doc": None},
    ]
    _destination(pg, "orders", mode="upsert", key=["id"]).deliver([records])
    assert len(copies) == 2  # two groups of fields
    rows = pg.rows("orders")
    assert [str(row["total"]) for row in rows] == ["9.99", "12.50", "3.00"]
    assert str(rows[0]["ref"]) == "0b9e6c2a-67c6-4b8a-9a43-3a8f2d1c9e01"
    assert [row["doc"] for row in rows] == [{"k": 1}, [1], None]
    assert rows[1]["day"] == dt.date(2024, 2, 29)


def test_a_value_postgresql_cannot_store_is_refused_not_copied(
    pg: Database, copies: list[str]
) -> None:
    records = [{"id": 1, "s": "fine"}, {"id": 2, "s": "nul\x00byte"}, {"id": 3, "s": "ok"}]
    result = _destination(pg, "orders").deliver([records])
    assert result.delivered == 2
    assert [r.record["id"] for r in result.rejections] == [2]
    assert "holds a NUL character" in result.rejections[0].reason
    assert [row["id"] for row in pg.rows("orders")] == [1, 3]
    assert copies


STAGES = sa.text(
    "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_dataflow\\_stage\\_%' "
    "AND relpersistence = 't' AND pg_table_is_visible(oid)"
)


def test_the_staging_table_is_dropped_after_the_delivery(pg: Database, copies: list[str]) -> None:
    destination = _destination(pg, "orders", mode="upsert", key=["id"])
    batches = [RECORDS[:2], RECORDS[2:]]
    sender = destination.open_batches(batches)
    assert sender is not None
    with sender:
        for index, batch in enumerate(batches):
            sender.send(batch, f"k{index}", "run#1", 0)
            with sender.conn.begin():  # type: ignore[union-attr]
                staged = sender.conn.execute(STAGES).scalar()  # type: ignore[union-attr]
            assert staged == 1  # one per session, emptied at each commit
        conn = sender.conn
    assert conn is None or conn.closed
    engine = sql_engine(pg.conn_id, route="orders", setting="x")
    with engine.connect() as check:  # the pool's connection, as the next delivery gets it
        left = check.execute(STAGES).scalar()
    assert left == 0
    assert len(pg.rows("orders")) == len(RECORDS)
    dispose_engines()
