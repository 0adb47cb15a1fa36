"""Committed cursors in the state store: the envelope, and every kind of corruption refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.connectors.base import CursorSpec
from airflow_dataflow.state.cursors import CursorError, CursorStore
from airflow_dataflow.state.schema import sync_cursors
from tests.support.databases import Database


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CursorStore:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    return CursorStore.open()


def _set_raw(store: CursorStore, text: str, route: str = "orders") -> None:
    """What a hand edit does: replace the stored JSON text."""
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE dataflow_sync_cursors SET cursor = :text WHERE route = :route"),
            {"text": text, "route": route},
        )


def test_a_saved_cursor_reads_back_with_its_column_and_run(store: CursorStore) -> None:
    assert store.get("orders") is None
    store.save("orders", "updated_at", "2024-01-02T03:04:05", run_id="run-1")
    committed = store.get("orders", CursorSpec("updated_at", "2024-01-01"))
    assert committed is not None
    assert (committed.column, committed.value, committed.run_id) == (
        "updated_at",
        "2024-01-02T03:04:05",
        "run-1",
    )
    assert committed.updated_at is not None and committed.updated_at.tzinfo is not None
    stored = store.stored("orders")
    assert stored is not None
    assert json.loads(stored.text) == {"column": "updated_at", "value": "2024-01-02T03:04:05"}


def test_saving_again_replaces_and_routes_are_apart(store: CursorStore) -> None:
    store.save("orders", "id", 5, run_id="run-1")
    store.save("orders", "id", 9, run_id="run-2")
    store.save("other", "id", 1, run_id="run-x")
    committed = store.get("orders", CursorSpec("id", 0))
    assert committed is not None and (committed.value, committed.run_id) == (9, "run-2")
    assert store.delete("orders") is True
    assert store.get("orders") is None
    assert store.delete("orders") is False
    other = store.get("other")
    assert other is not None and other.value == 1


def test_only_scalar_values_are_saved(store: CursorStore) -> None:
    with pytest.raises(CursorError, match="a cursor is a string, a finite number or a boolean"):
        store.save("orders", "id", [1], run_id="r")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "spec", "problem"),
    [
        ("not json at all", None, "is not valid JSON"),
        ('{"column": "id", "value": 5', None, "is not valid JSON"),
        ("5", None, 'is not a cursor of the form {"column": "...", "value": ...}'),
        ('{"value": 5}', None, "is not a cursor of the form"),
        ('{"column": "id", "value": 5, "extra": 1}', None, "is not a cursor of the form"),
        ('{"column": 7, "value": 5}', None, "is not a cursor of the form"),
        ('{"column": "id", "value": [5]}', None, "has an array value"),
        ('{"column": "id", "value": {"a": 1}}', None, "has an object value"),
        ('{"column": "id", "value": null}', None, "has a null value"),
        ('{"column": "id", "value": NaN}', None, "is not valid JSON"),
        ('{"column": "id", "value": "5"}', CursorSpec("id", 0), "has a string value, but source"),
        ('{"column": "at", "value": 5}', CursorSpec("at", "2024"), "has a number value, but"),
        (
            '{"column": "id", "value": 5}',
            CursorSpec("updated_at"),
            "was committed for column 'id', but source.cursor.column is now 'updated_at'",
        ),
    ],
)
def test_a_corrupted_cursor_fails_naming_route_stream_value_and_remedy(
    store: CursorStore, text: str, spec: CursorSpec | None, problem: str
) -> None:
    store.save("orders", "id", 1, run_id="run-1")
    _set_raw(store, text)
    with pytest.raises(CursorError) as raised:
        store.get("orders", spec)
    message = str(raised.value)
    assert message.startswith("route 'orders': the committed cursor of stream 'source' is ")
    assert repr(text) in message
    assert problem in message
    assert "never re-reads from the beginning or skips ahead" in message
    assert "`airflow-dataflow cursor reset orders`" in message
    assert "`airflow-dataflow cursor reset orders --to VALUE`" in message
    assert '{"reset_cursor": true}' in message and '{"since": VALUE}' in message


def test_a_value_of_the_type_of_initial_is_accepted(store: CursorStore) -> None:
    store.save("orders", "amount", 10.5, run_id="r")
    committed = store.get("orders", CursorSpec("amount", 0))  # int and float: both numbers
    assert committed is not None and committed.value == 10.5
    committed = store.get("orders", CursorSpec("amount"))  # no initial: no type to compare
    assert committed is not None


def test_cursors_on_each_database(db: Database) -> None:
    """The raw read (the JSON column cast to text) works on SQLite, PostgreSQL and MariaDB."""
    engine = db.engine.execution_options(schema_translate_map={None: db.schema})
    sync_cursors.metadata.create_all(engine, tables=[sync_cursors])
    store = CursorStore(engine)
    store.save("orders", "updated_at", "2024-01-02 03:04:05", run_id="r1")
    store.save("orders", "updated_at", "2024-01-03 00:00:00", run_id="r2")
    committed = store.get("orders", CursorSpec("updated_at", "2024-01-01"))
    assert committed is not None
    assert (committed.value, committed.run_id) == ("2024-01-03 00:00:00", "r2")
    with pytest.raises(CursorError, match=r"has a string value, but source\.cursor\.initial"):
        store.get("orders", CursorSpec("updated_at", 0))
    assert store.delete("orders") and store.get("orders") is None
