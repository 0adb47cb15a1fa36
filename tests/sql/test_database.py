"""The database destination on SQLite, PostgreSQL and MariaDB: exact table contents."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.base import DeliveryResult
from airflow_dataflow.destinations.database import DatabaseDestination, DatabaseSettings
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.hooks.sql import sql_engine

ORDERS = [
    {"id": 1, "amount": 12.5, "country": "DE", "paid": True},
    {"id": 2, "amount": 250, "country": "FR", "paid": False},
    {"id": 3, "amount": None, "country": None, "paid": None},
]


def _deliver(db: Any, context: RunContext, batches: list[list[dict[str, Any]]], **settings: Any):
    values = {"type": "database", "connection": db.conn_id, "table": db.table("orders")}
    destination = DatabaseDestination("warehouse", DatabaseSettings(**values | settings), context)
    return destination.deliver(iter(batches))


def _columns(db: Any, table: str = "orders") -> dict[str, Any]:
    inspector = sa.inspect(db.engine)
    return {c["name"]: c["type"] for c in inspector.get_columns(table, schema=db.schema)}


def _primary_key(db: Any, table: str = "orders") -> list[str]:
    inspector = sa.inspect(db.engine)
    return inspector.get_pk_constraint(table, schema=db.schema)["constrained_columns"]


def _bool(db: Any, value: bool | None) -> bool | int | None:
    """MariaDB has no boolean type: BOOLEAN is TINYINT(1)."""
    return int(value) if db.kind == "mysql" and value is not None else value


def test_insert_creates_the_table_and_writes_the_records(db: Any, context: RunContext) -> None:
    result = _deliver(db, context, [ORDERS[:2], ORDERS[2:]], batch_size=2)
    assert result == DeliveryResult(delivered=3, locations=[f"{db.conn_id}:{db.table('orders')}"])
    assert db.rows("orders") == [
        {"id": 1, "amount": 12.5, "country": "DE", "paid": _bool(db, True)},
        {"id": 2, "amount": 250.0, "country": "FR", "paid": _bool(db, False)},
        {"id": 3, "amount": None, "country": None, "paid": None},
    ]


def test_created_table_has_inferred_types_and_key(db: Any, context: RunContext) -> None:
    records = [{"id": "a-1", "n": 1, "x": 1.5, "ok": True, "doc": {"k": [1]}, "tags": ["x"]}]
    records.append(
        {"id": "a-2", "n": None, "x": 2, "ok": False, "doc": None, "tags": [], "z": None}
    )
    _deliver(db, context, [records], key=["id"])
    types = _columns(db)
    assert list(types) == ["id", "n", "x", "ok", "doc", "tags", "z"]
    assert isinstance(types["id"], sa.String) and types["id"].length == 255
    assert isinstance(types["n"], sa.BigInteger)
    assert isinstance(types["x"], sa.Float)
    assert isinstance(types["ok"], sa.Boolean | sa.dialects.mysql.TINYINT)
    for text_column in ("doc", "tags", "z"):
        assert isinstance(types[text_column], sa.Text | sa.dialects.mysql.LONGTEXT), text_column
    assert _primary_key(db) == ["id"]
    rows = db.rows("orders")
    assert [json.loads(row["doc"]) if row["doc"] else None for row in rows] == [{"k": [1]}, None]
    assert [row["tags"] for row in rows] == ['["x"]', "[]"]


def test_explicit_column_types(db: Any, context: RunContext) -> None:
    records = [{"id": 1, "at": "2024-01-02T03:04:05.25+02:00", "doc": {"a": 1}, "code": 7}]
    records.append({"id": 2, "at": None, "doc": None, "code": None})
    _deliver(
        db, context, [records], key=["id"], columns={"at": "datetime", "doc": "json", "code": "str"}
    )
    types = _columns(db)
    assert isinstance(types["at"], sa.DateTime)
    assert isinstance(types["code"], sa.String)
    rows = db.rows("orders")
    at = rows[0]["at"]
    assert at.replace(tzinfo=None) == dt.datetime(2024, 1, 2, 1, 4, 5, 250000)  # in UTC
    doc = rows[0]["doc"]
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"a": 1}
    assert rows[0]["code"] == "7"
    assert (rows[1]["at"], rows[1]["doc"], rows[1]["code"]) == (None, None, None)


def test_long_text_fits(db: Any, context: RunContext) -> None:
    """Inferred text columns hold more than MySQL's 64 KB TEXT."""
    text = "x" * 100_000
    _deliver(db, context, [[{"id": 1, "body": text, "doc": {"t": text}}]])
    [row] = db.rows("orders")
    assert row["body"] == text
    assert json.loads(row["doc"]) == {"t": text}


def test_upsert_updates_existing_rows_and_inserts_new_ones(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS], key=["id"])
    changes = [
        {"id": 2, "amount": 300, "country": "FR", "paid": True},
        {"id": 4, "amount": 1.25, "country": "IT", "paid": False},
        {"id": 4, "country": "ES"},  # same key later in the batch: merged, later fields win
    ]
    result = _deliver(db, context, [changes], mode="upsert", key=["id"], batch_size=10)
    assert result.delivered == 3
    assert db.rows("orders") == [
        {"id": 1, "amount": 12.5, "country": "DE", "paid": _bool(db, True)},
        {"id": 2, "amount": 300.0, "country": "FR", "paid": _bool(db, True)},
        {"id": 3, "amount": None, "country": None, "paid": None},
        {"id": 4, "amount": 1.25, "country": "ES", "paid": _bool(db, False)},
    ]


def test_upsert_leaves_fields_missing_from_a_record_unchanged(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS], key=["id"])
    _deliver(db, context, [[{"id": 1, "country": "AT"}, {"id": 3}]], mode="upsert", key=["id"])
    assert db.rows("orders")[0] == {
        "id": 1,
        "amount": 12.5,
        "country": "AT",
        "paid": _bool(db, True),
    }
    assert db.rows("orders")[2] == {"id": 3, "amount": None, "country": None, "paid": None}


def test_upsert_on_a_composite_key(db: Any, context: RunContext) -> None:
    rows = [{"day": "2024-01-01", "shop": 1, "n": 1}, {"day": "2024-01-01", "shop": 2, "n": 2}]
    _deliver(db, context, [rows], mode="upsert", key=["day", "shop"])
    _deliver(
        db,
        context,
        [[{"day": "2024-01-01", "shop": 2, "n": 5}]],
        mode="upsert",
        key=["day", "shop"],
    )
    assert _primary_key(db) == ["day", "shop"]
    assert db.rows("orders", order_by="shop") == [
        {"day": "2024-01-01", "shop": 1, "n": 1},
        {"day": "2024-01-01", "shop": 2, "n": 5},
    ]


def test_replace_swaps_the_whole_contents(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS])
    new = [{"id": 9, "amount": 1.0, "country": "PL", "paid": True}]
    result = _deliver(db, context, [new, [{"id": 10}]], mode="replace", batch_size=1)
    assert result.delivered == 2
    assert db.rows("orders") == [
        {"id": 9, "amount": 1.0, "country": "PL", "paid": _bool(db, True)},
        {"id": 10, "amount": None, "country": None, "paid": None},
    ]


def test_replace_is_one_transaction(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS], key=["id"])
    broken = [{"id": 7}, {"id": 7}]  # duplicate primary key fails the second batch
    with pytest.raises(
        DestinationError, match=r"writing records 1-1 failed: .*nothing was written"
    ):
        _deliver(db, context, [broken], mode="replace", key=["id"], batch_size=1)
    assert [row["id"] for row in db.rows("orders")] == [1, 2, 3]


def test_insert_is_one_transaction(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS[:1]], key=["id"])
    records = [{"id": 5}, {"id": 6}, {"id": 1}, {"id": 8}]  # third record: duplicate key
    with pytest.raises(DestinationError) as raised:
        _deliver(db, context, [records], key=["id"], batch_size=2)
    message = str(raised.value)
    assert "writing records 2-3 failed: " in message
    assert "rolled back: nothing was written, a retry re-sends every record" in message
    assert [row["id"] for row in db.rows("orders")] == [1]


def test_a_record_refused_in_a_later_batch_rolls_back_earlier_ones(
    db: Any, context: RunContext
) -> None:
    _deliver(db, context, [ORDERS])
    records = [{"id": 5}, {"id": 6}, {"id": 7, "colour": "red"}]
    with pytest.raises(DestinationError) as raised:
        _deliver(db, context, [records[:1], records[1:]], batch_size=1)
    message = str(raised.value)
    assert "record 2 has field(s) 'colour'" in message
    assert "nothing was written" in message
    assert [row["id"] for row in db.rows("orders")] == [1, 2, 3]


class _Batches:
    """A re-iterable of batches, like ``StagedBatches``: each iteration re-reads them."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        for batch in self.batches:
            yield [dict(record) for record in batch]


def _fail_the_nth_write(db: Any, n: int) -> list[int]:
    """Makes the ``n``-th INSERT on the destination's engine fail once; returns the counter."""
    engine = sql_engine(db.conn_id, route="orders", setting="x", error_class=DestinationError)
    seen = [0]

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            seen[0] += 1
            if seen[0] == n:
                raise engine.dialect.loaded_dbapi.OperationalError("injected failure")

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen


@pytest.mark.parametrize("mode", ["insert", "upsert", "replace"])
def test_retry_after_a_failed_later_batch_delivers_exactly_once(
    db: Any, context: RunContext, mode: str
) -> None:
    """DESIGN.md: a retried deliver task must not deliver twice."""
    key = ["id"] if mode == "upsert" else []
    _deliver(db, context, [ORDERS], key=key)
    before = db.rows("orders")
    changes = [
        {"id": 2, "amount": 2.5, "country": "PT", "paid": True},
        {"id": 4, "amount": 4.0, "country": "IT", "paid": False},
        {"id": 5, "amount": 5.0, "country": "ES", "paid": True},
        {"id": 6, "amount": 6.0, "country": "NL", "paid": True},
    ]
    batches = _Batches([changes[:1], changes[1:3], changes[3:]])
    settings = {"mode": mode, "key": key, "batch_size": 2}
    seen = _fail_the_nth_write(db, 2)
    with pytest.raises(DestinationError) as raised:
        _deliver_batches(db, context, batches, **settings)
    assert seen[0] == 2  # the first batch was executed before the second failed
    assert "writing records 2-3 failed: injected failure" in str(raised.value)
    assert "nothing was written" in str(raised.value)
    assert db.rows("orders") == before

    result = _deliver_batches(db, context, batches, **settings)  # Airflow's retry
    assert result.delivered == 4
    as_rows = [{**row, "paid": _bool(db, row["paid"])} for row in changes]
    expected = {
        "insert": [*before[:2], as_rows[0], *before[2:], *as_rows[1:]],
        "upsert": [before[0], as_rows[0], before[2], *as_rows[1:]],
        "replace": as_rows,
    }[mode]
    assert db.rows("orders") == expected


def _deliver_batches(db: Any, context: RunContext, batches: Any, **settings: Any):
    values = {"type": "database", "connection": db.conn_id, "table": db.table("orders")}
    destination = DatabaseDestination("warehouse", DatabaseSettings(**values | settings), context)
    return destination.deliver(batches)


def test_created_table_has_a_column_for_a_field_first_seen_late(
    db: Any, context: RunContext
) -> None:
    """Columns come from every record, not only the first batch."""
    batches = _Batches(
        [
            [{"id": 1, "n": 1, "mix": 1}, {"id": 2, "n": None, "mix": "a"}],
            [{"id": 3, "n": 2.5}, {"id": 4, "flag": None}],
            [{"id": 5, "late": "x", "flag": True, "doc": {"a": 1}}],
        ]
    )
    result = _deliver_batches(db, context, batches, batch_size=2)
    assert result.delivered == 5
    assert batches.passes == 2  # one pass to infer the columns, one to write
    types = _columns(db)
    assert list(types) == ["id", "n", "mix", "flag", "late", "doc"]
    assert isinstance(types["id"], sa.BigInteger)
    assert isinstance(types["n"], sa.Float)  # int and float values: float
    assert isinstance(types["mix"], sa.Text | sa.dialects.mysql.LONGTEXT)  # int and str: text
    assert isinstance(types["flag"], sa.Boolean | sa.dialects.mysql.TINYINT)
    assert isinstance(types["late"], sa.Text | sa.dialects.mysql.LONGTEXT)
    assert isinstance(types["doc"], sa.Text | sa.dialects.mysql.LONGTEXT)
    rows = db.rows("orders")
    assert [row["n"] for row in rows] == [1.0, None, 2.5, None, None]
    assert [row["mix"] for row in rows] == ["1", "a", None, None, None]
    assert rows[4] == {
        "id": 5,
        "n": None,
        "mix": None,
        "flag": _bool(db, True),
        "late": "x",
        "doc": '{"a": 1}',
    }


def test_one_shot_iterator_of_batches_still_creates_every_column(
    db: Any, context: RunContext
) -> None:
    batches = iter([[{"id": 1}], [{"id": 2, "late": "x"}]])
    assert _deliver_batches(db, context, batches, batch_size=1).delivered == 2
    assert db.rows("orders") == [{"id": 1, "late": None}, {"id": 2, "late": "x"}]


def test_no_path_sqlite_connection_is_refused(define_conn: Any, context: RunContext) -> None:
    conn_id = define_conn("sqlite://", "dwh")
    settings = DatabaseSettings(type="database", connection=conn_id, table="orders")
    with pytest.raises(DestinationError) as raised:
        DatabaseDestination("eu", settings, context).deliver([[{"id": 1}]])
    message = str(raised.value)
    assert "route 'orders'" in message
    assert f"destinations.eu.connection {conn_id!r}" in message
    assert "without a database file path" in message
    assert "in-memory" in message
    assert f"airflow connections add {conn_id} --conn-uri sqlite:////" in message


def test_no_records_creates_and_changes_nothing(db: Any, context: RunContext) -> None:
    result = _deliver(db, context, [[], []], mode="replace")
    assert result.delivered == 0
    assert not sa.inspect(db.engine).has_table("orders", schema=db.schema)


def test_fields_that_are_not_columns_are_an_error(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS])
    with pytest.raises(DestinationError) as raised:
        _deliver(db, context, [[{"id": 4, "colour": "red", "size": 2}]])
    message = str(raised.value)
    assert f"table {db.table('orders')!r}" in message
    assert "'colour', 'size' that are not columns" in message
    assert "destination 'warehouse'" in message


def test_upsert_needs_a_unique_key_on_an_existing_table(db: Any, context: RunContext) -> None:
    _deliver(db, context, [ORDERS])  # created without a key
    with pytest.raises(DestinationError, match=r"needs a primary key or unique index on \(id\)"):
        _deliver(db, context, [ORDERS], mode="upsert", key=["id"])


def test_upsert_record_without_key_value_is_refused(db: Any, context: RunContext) -> None:
    """A record without its key cannot be upserted: a dead letter, the rest is written."""
    records = [{"id": 1}, {"amount": 2}, {"id": None, "amount": 3}]
    result = _deliver(db, context, [records], mode="upsert", key=["id"])
    assert result.delivered == 1
    assert [rejection.record for rejection in result.rejections] == records[1:]
    reasons = [rejection.reason for rejection in result.rejections]
    assert reasons[0].endswith("record 1: no value for key column(s) id")
    assert reasons[1].endswith("record 2: no value for key column id")
    assert [row["id"] for row in db.rows("orders")] == [1]


def test_missing_connection(context: RunContext) -> None:
    settings = DatabaseSettings(type="database", connection="dwh_absent", table="t")
    with pytest.raises(DestinationError) as raised:
        DatabaseDestination("eu", settings, context).deliver([[{"id": 1}]])
    assert "destinations.eu.connection" in str(raised.value)
    assert "AIRFLOW_CONN_DWH_ABSENT" in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"table": "orders; DROP TABLE x"}, "must be NAME or SCHEMA.NAME"),
        ({"table": "a.b.c"}, "must be NAME or SCHEMA.NAME"),
        ({"table": "1orders"}, "must be NAME or SCHEMA.NAME"),
        ({"table": 'sales."orders"'}, "must be NAME or SCHEMA.NAME"),
        ({"key": ["id", "bad-name"]}, "key: 'bad-name' must match"),
        ({"key": ["id", "id"]}, "names a column twice"),
        ({"columns": {"a b": "int"}}, "columns: 'a b' must match"),
        ({"columns": {"a": "decimal"}}, "columns.a"),
        ({"mode": "upsert"}, "mode upsert needs key"),
        ({"mode": "mirror"}, "mode mirror needs key"),
        ({"mode": "merge"}, "mode"),
        ({"batch_size": 0}, "batch_size"),
        ({"keys": ["id"]}, "keys"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    values = {"type": "database", "connection": "dwh", "table": "orders"} | settings
    with pytest.raises(ValidationError, match=message):
        DatabaseSettings(**values)


def test_schema_qualified_table_setting() -> None:
    settings = DatabaseSettings(type="database", connection="dwh", table="sales.orders")
    assert (settings.schema_name, settings.table_name) == ("sales", "orders")


def test_existing_table_columns_take_record_values(db: Any, context: RunContext) -> None:
    """A table made elsewhere: JSON, DATE and TIMESTAMP columns get converted values."""
    metadata = sa.MetaData()
    sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("doc", sa.JSON),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.DateTime),
        sa.Column("total", sa.Numeric(10, 2)),
        schema=db.schema,
    )
    metadata.create_all(db.engine)
    records = [
        {"id": 1, "doc": {"a": [1, 2]}, "day": "2024-03-04", "at": "2024-03-04T05:06:07Z"},
        {"id": 2, "doc": None, "day": None, "at": None, "total": 9.99},
    ]
    _deliver(db, context, [records], mode="upsert", key=["id"])
    rows = db.rows("orders")
    doc = rows[0]["doc"]
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"a": [1, 2]}
    assert rows[0]["day"] == dt.date(2024, 3, 4)
    assert rows[0]["at"] == dt.datetime(2024, 3, 4, 5, 6, 7)
    assert str(rows[1]["total"]) == "9.99"
    with db.engine.connect() as conn:
        table = sa.Table("orders", sa.MetaData(), schema=db.schema, autoload_with=conn)
        nulls = conn.execute(sa.select(sa.func.count()).where(table.c.doc.is_(None))).scalar()
    assert nulls == 1  # SQL NULL, not the JSON text 'null'
