"""The database destination's mirror mode, column_map, on_new_column, value conversion and
refusals, retries, rate limit and secrets, on SQLite, PostgreSQL and MariaDB (exact contents)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import database
from airflow_dataflow.destinations.base import DeliveryResult
from airflow_dataflow.destinations.database import DatabaseDestination, DatabaseSettings
from airflow_dataflow.errors import DestinationError, RetriableError
from tests.support.databases import Database

ORDERS = [
    {"id": 1, "amount": 12.5, "country": "DE"},
    {"id": 2, "amount": 250.0, "country": "FR"},
    {"id": 3, "amount": 7.0, "country": "IT"},
    {"id": 4, "amount": 1.0, "country": "ES"},
]


def _destination(db: Database, context: RunContext, **settings: Any) -> DatabaseDestination:
    values = {"type": "database", "connection": db.conn_id, "table": db.table("orders")}
    return DatabaseDestination("warehouse", DatabaseSettings(**values | settings), context)


def _deliver(
    db: Database, context: RunContext, records: list[dict[str, Any]], **settings: Any
) -> DeliveryResult:
    return _destination(db, context, **settings).deliver([records])


def _send(
    db: Database, context: RunContext, batches: list[list[dict[str, Any]]], **settings: Any
) -> list[Any]:
    """Batch by batch, as a route run does (``open_batches``); returns the refused records."""
    sender = _destination(db, context, **settings).open_batches(batches)
    assert sender is not None
    refused = []
    with sender:
        offset = 0
        for index, batch in enumerate(batches):
            refused += sender.send(batch, f"key-{index}", "run#1", offset) or []
            offset += len(batch)
    return refused


def _columns(db: Database) -> dict[str, Any]:
    inspector = sa.inspect(db.engine)
    return {c["name"]: c["type"] for c in inspector.get_columns("orders", schema=db.schema)}


# -- mirror ------------------------------------------------------------------------------------


def test_mirror_makes_the_table_hold_exactly_the_snapshot(
    db: Database, context: RunContext
) -> None:
    _deliver(db, context, ORDERS, mode="upsert", key=["id"])
    snapshot = [
        {"id": 2, "amount": 300.0, "country": "FR"},  # changed
        {"id": 3, "country": "IT"},  # a field missing: left as it is
        {"id": 5, "amount": 5.5, "country": "PT"},  # new
    ]
    result = _deliver(db, context, snapshot, mode="mirror", key=["id"], batch_size=2)
    assert result.delivered == 3
    assert db.rows("orders") == [
        {"id": 2, "amount": 300.0, "country": "FR"},
        {"id": 3, "amount": 7.0, "country": "IT"},
        {"id": 5, "amount": 5.5, "country": "PT"},
    ]
    again = _deliver(db, context, snapshot, mode="mirror", key=["id"])  # idempotent
    assert again.delivered == 3
    assert [row["id"] for row in db.rows("orders")] == [2, 3, 5]


def test_mirror_creates_the_table(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS, mode="mirror", key=["id"])
    assert db.rows("orders") == ORDERS
    pk = sa.inspect(db.engine).get_pk_constraint("orders", schema=db.schema)
    assert pk["constrained_columns"] == ["id"]


def test_mirror_on_a_composite_key(db: Database, context: RunContext) -> None:
    rows = [{"day": "2024-01-0" + str(d), "shop": s, "n": d * s} for d in (1, 2) for s in (1, 2)]
    _deliver(db, context, rows, mode="mirror", key=["day", "shop"])
    _deliver(db, context, [rows[0], {**rows[3], "n": 0}], mode="mirror", key=["day", "shop"])
    assert db.rows("orders", order_by="n") == [{**rows[3], "n": 0}, rows[0]]


def test_mirror_is_one_transaction(db: Database, context: RunContext) -> None:
    """A failure after some records were written leaves the table as it was, deletes too."""
    db.execute(
        f"CREATE TABLE {db.table('orders')} (id BIGINT PRIMARY KEY, amount DOUBLE PRECISION, "
        "country VARCHAR(2), CONSTRAINT positive CHECK (amount >= 0))"
    )
    _deliver(db, context, ORDERS, mode="upsert", key=["id"])
    snapshot = [{"id": 1, "amount": 1.0}, {"id": 9, "amount": 9.0}, {"id": 3, "amount": -1.0}]
    with pytest.raises(DestinationError) as raised:
        _deliver(db, context, snapshot, mode="mirror", key=["id"], batch_size=2)
    assert "writing records 2-2 failed" in str(raised.value)
    assert "nothing was written" in str(raised.value)
    assert db.rows("orders") == ORDERS


def test_mirror_keeps_the_rows_of_refused_records(db: Database, context: RunContext) -> None:
    """A record refused (dead letter) is still in the source: its row must not be deleted."""
    _deliver(db, context, ORDERS, mode="upsert", key=["id"])
    snapshot = [{"id": 1, "amount": 2.0}, {"id": 2, "amount": "lots"}, {"id": "x"}]
    result = _deliver(db, context, snapshot, mode="mirror", key=["id"])
    assert result.delivered == 1
    assert [rejection.record for rejection in result.rejections] == snapshot[1:]
    assert "column 'amount': 'lots' is not a number" in result.rejections[0].reason
    assert "column 'id': 'x' is not an integer" in result.rejections[1].reason
    assert db.rows("orders") == [{"id": 1, "amount": 2.0, "country": "DE"}, ORDERS[1]]


def test_mirror_and_replace_are_whole_deliveries(db: Database, context: RunContext) -> None:
    for mode in ("mirror", "replace"):
        assert _destination(db, context, mode=mode, key=["id"]).open_batches([ORDERS]) is None


def test_mirror_needs_a_unique_key_on_an_existing_table(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS)  # created without a key
    with pytest.raises(DestinationError, match=r"mode mirror needs a primary key or unique index"):
        _deliver(db, context, ORDERS, mode="mirror", key=["id"])


# -- column_map --------------------------------------------------------------------------------


def test_column_map_renames_fields(db: Database, context: RunContext) -> None:
    column_map = {"Order ID": "id", "e-mail": "email"}
    records = [{"Order ID": 1, "e-mail": "a@example.com", "total": 3}]
    _deliver(db, context, records, mode="upsert", key=["id"], column_map=column_map)
    assert list(_columns(db)) == ["id", "email", "total"]
    changed = [{"Order ID": 1, "e-mail": "b@example.com"}, {"Order ID": 2, "total": 4}]
    _send(db, context, [changed], mode="upsert", key=["id"], column_map=column_map)
    assert db.rows("orders") == [
        {"id": 1, "email": "b@example.com", "total": 3},
        {"id": 2, "email": None, "total": 4},
    ]


def test_a_record_whose_fields_map_to_one_column_is_refused(
    db: Database, context: RunContext
) -> None:
    records = [{"id": 1, "code": "a"}, {"id": 2, "code": "b", "legacy_code": "c"}]
    result = _deliver(db, context, records, column_map={"legacy_code": "code"})
    assert [rejection.record for rejection in result.rejections] == records[1:]
    assert "two fields map to the same column" in result.rejections[0].reason
    assert db.rows("orders") == [{"id": 1, "code": "a"}]


# -- on_new_column -----------------------------------------------------------------------------


def test_new_fields_fail_by_default_and_name_the_remedy(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS)
    with pytest.raises(DestinationError) as raised:
        _send(db, context, [[{"id": 5}, {"id": 6, "colour": "red"}]])
    message = str(raised.value)
    assert "record 1 has field(s) 'colour' that are not columns" in message
    assert "on_new_column: add" in message and "on_new_column: ignore" in message
    assert [row["id"] for row in db.rows("orders")] == [1, 2, 3, 4]


def test_on_new_column_ignore_drops_the_fields(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS[:1])
    records = [{"id": 5, "colour": "red"}, {"id": 6, "amount": 1.5, "size": 2}]
    assert _send(db, context, [records], on_new_column="ignore") == []
    assert list(_columns(db)) == ["id", "amount", "country"]
    assert db.rows("orders")[1:] == [
        {"id": 5, "amount": None, "country": None},
        {"id": 6, "amount": 1.5, "country": None},
    ]


def test_on_new_column_add_alters_the_table_batch_by_batch(
    db: Database, context: RunContext
) -> None:
    _deliver(db, context, ORDERS[:1], key=["id"])
    batches = [
        [{"id": 5, "amount": 2.0}],
        [{"id": 6, "qty": 3, "note": "x", "vip": True}, {"id": 7, "qty": 4.5, "tags": ["a"]}],
        [{"id": 8, "qty": 1, "note": None, "seen": "2024-05-06T07:08:09Z"}],
    ]
    refused = _send(
        db,
        context,
        batches,
        mode="upsert",
        key=["id"],
        on_new_column="add",
        columns={"seen": "datetime"},
    )
    assert refused == []
    types = _columns(db)
    assert list(types) == ["id", "amount", "country", "qty", "note", "vip", "tags", "seen"]
    assert isinstance(types["qty"], sa.Float)  # 3 and 4.5 in the batch that added it
    assert isinstance(types["note"], sa.Text | sa.dialects.mysql.LONGTEXT)
    assert isinstance(types["vip"], sa.Boolean | sa.dialects.mysql.TINYINT)
    assert isinstance(types["seen"], sa.DateTime)
    rows = db.rows("orders")
    assert [row["qty"] for row in rows] == [None, None, 3.0, 4.5, 1.0]
    assert rows[3]["tags"] == '["a"]'
    assert rows[4]["seen"].replace(tzinfo=None) == dt.datetime(2024, 5, 6, 7, 8, 9)


@pytest.mark.parametrize("mode", ["replace", "mirror"])
def test_on_new_column_add_in_one_transaction(db: Database, context: RunContext, mode: str) -> None:
    _deliver(db, context, ORDERS, key=["id"])
    records = [{"id": 1, "amount": 1.0, "rank": 1}, {"id": 9, "late": "z"}]
    _destination(db, context, mode=mode, key=["id"], on_new_column="add", batch_size=1).deliver(
        [records[:1], records[1:]]
    )
    assert list(_columns(db)) == ["id", "amount", "country", "rank", "late"]
    kept = "DE" if mode == "mirror" else None  # replace: the records are the whole row
    assert db.rows("orders") == [
        {"id": 1, "amount": 1.0, "country": kept, "rank": 1, "late": None},
        {"id": 9, "amount": None, "country": None, "rank": None, "late": "z"},
    ]


def test_a_field_that_cannot_be_a_column_name(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS[:1])
    with pytest.raises(DestinationError) as raised:
        _send(db, context, [[{"id": 2, "first name": "Ann"}]], on_new_column="add")
    assert "'first name' cannot be column names" in str(raised.value)
    assert "column_map" in str(raised.value)
    other = _destination(db, context, table=db.table("other"), mode="replace")
    with pytest.raises(DestinationError, match="'x;y' cannot be column names"):
        other.deliver([[{"id": 1, "x;y": 1}]])  # creating a table


# -- values ------------------------------------------------------------------------------------


def test_values_are_converted_to_the_column_or_refused(db: Database, context: RunContext) -> None:
    db.execute(
        f"CREATE TABLE {db.table('orders')} (id BIGINT PRIMARY KEY, n INTEGER, "
        "x DOUBLE PRECISION, ok BOOLEAN, code VARCHAR(3), doc TEXT)"
    )
    good = [
        {"id": 1, "n": "5", "x": "2.5", "ok": "yes", "code": 7, "doc": {"a": [1]}},
        {"id": 2, "n": 6.0, "x": 3, "ok": 0, "code": "abc", "doc": True},
        {"id": 3, "n": True, "x": None, "ok": "False", "code": None, "doc": 1.5},
    ]
    bad = [
        {"id": 4, "n": 5.5},
        {"id": 5, "n": 2**63},
        {"id": 6, "x": "many"},
        {"id": 7, "x": True},
        {"id": 8, "ok": "perhaps"},
        {"id": 9, "code": "abcd"},
        {"id": "ten"},
    ]
    result = _deliver(db, context, good + bad, mode="upsert", key=["id"])
    assert result.delivered == 3
    reasons = {r.record["id"]: r.reason.split(": record ", 1)[1] for r in result.rejections}
    assert reasons == {
        4: "3: column 'n': 5.5 is not a whole number",
        5: "4: column 'n': 9223372036854775808 is out of the column's range "
        + (
            "-9223372036854775808..9223372036854775807"
            if db.kind == "sqlite"
            else "-2147483648..2147483647"
        ),
        6: "5: column 'x': 'many' is not a number",
        7: "6: column 'x': True is not a number",
        8: "7: column 'ok': 'perhaps' is not a boolean",
        9: "8: column 'code': 'abcd' is 4 characters long; the column holds 3",
        "ten": "9: column 'id': 'ten' is not an integer",
    }
    rows = [
        {**row, "ok": None if row["ok"] is None else bool(row["ok"])} for row in db.rows("orders")
    ]
    assert rows == [
        {"id": 1, "n": 5, "x": 2.5, "ok": True, "code": "7", "doc": '{"a": [1]}'},
        {"id": 2, "n": 6, "x": 3.0, "ok": False, "code": "abc", "doc": "true"},
        {"id": 3, "n": 1, "x": None, "ok": False, "code": None, "doc": "1.5"},
    ]


def test_refused_records_are_dead_letters_batch_by_batch(db: Database, context: RunContext) -> None:
    _deliver(db, context, ORDERS, key=["id"])
    refused = _send(db, context, [[{"id": 5, "amount": "?"}, {"id": 6}], [{"id": 7}]], key=["id"])
    assert [rejection.record for rejection in refused] == [{"id": 5, "amount": "?"}]
    assert "record 0: column 'amount': '?' is not a number" in refused[0].reason
    assert "destination 'warehouse'" in refused[0].reason
    assert [row["id"] for row in db.rows("orders")] == [1, 2, 3, 4, 6, 7]


def test_record_values_are_data_never_templates(db: Database, context: RunContext) -> None:
    records = [{"id": 1, "note": "{{ 7*7 }}", "doc": {"t": "{% raw %}x"}}]
    _deliver(db, context, records, columns={"doc": "json"})
    [row] = db.rows("orders")
    assert row["note"] == "{{ 7*7 }}"
    doc = row["doc"]
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"t": "{% raw %}x"}


# -- retries, rate limit, secrets ----------------------------------------------------------------


def test_an_unreachable_server_is_retried_then_fails_retriably(
    define_conn: Any, context: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = define_conn("postgres://dataflow:S3cr3t-pw@127.0.0.1:1/dwh", "pg")
    waits: list[float] = []
    policy = DatabaseDestination.retry_policy
    monkeypatch.setattr(
        DatabaseDestination,
        "retry_policy",
        lambda self: dataclasses.replace(policy(self), sleep=waits.append),
    )
    settings = DatabaseSettings(type="database", connection=conn_id, table="orders", max_attempts=3)
    with pytest.raises(RetriableError) as raised:
        DatabaseDestination("dwh", settings, context).deliver([[{"id": 1}]])
    message = str(raised.value)
    assert "gave up after 3 attempts" in message
    assert f"destinations.dwh.connection {conn_id!r}" in message
    assert "S3cr3t-pw" not in message
    assert len(waits) == 2

    from airflow.sdk.log import _secrets_masker

    assert "S3cr3t-pw" not in _secrets_masker().redact("the password is S3cr3t-pw")


def test_each_batch_waits_for_the_rate_limit(
    db: Database, context: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    acquired: list[float | None] = []

    class Limiter:
        def __init__(self, rate: float | None) -> None:
            self.rate = rate

        def acquire(self, tokens: float = 1.0) -> float:
            acquired.append(self.rate)
            return 0.0

    monkeypatch.setattr(database, "RateLimiter", Limiter)
    _send(db, context, [ORDERS[:2], ORDERS[2:3], ORDERS[3:]], rate_limit=2.5)
    assert acquired == [2.5, 2.5, 2.5]
    _deliver(db, context, ORDERS, mode="replace", rate_limit=0.5)  # one transaction: one send
    assert acquired[3:] == [0.5]


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"column_map": {"a": "b c"}}, "column_map: 'b c' must match"),
        ({"column_map": {"a": "x", "b": "x"}}, "several fields map to column(s) x"),
        ({"column_map": {"": "x"}}, "a field name is empty"),
        ({"on_new_column": "alter"}, "on_new_column"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"key": ["a" * 64]}, "at most 63 characters"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    values = {"type": "database", "connection": "dwh", "table": "orders"} | settings
    with pytest.raises(ValidationError) as raised:
        DatabaseSettings(**values)
    assert message in str(raised.value)


def test_settings_defaults() -> None:
    settings = DatabaseSettings(type="database", connection="dwh", table="t")
    assert (settings.mode, settings.on_new_column, settings.batch_size) == ("insert", "fail", 1000)
    assert (settings.column_map, settings.max_attempts) == ({}, 5)


def test_the_docs_page_lists_every_setting() -> None:
    page = (Path(__file__).parents[2] / "docs" / "destinations" / "database.md").read_text()
    for name in DatabaseSettings.model_fields:
        assert f"| `{name}` |" in page, name
