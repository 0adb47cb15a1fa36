"""The delivery ledger on its own, on SQLite and PostgreSQL state stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from airflow_dataflow.state.ledger import (
    COMMITTED_RETENTION,
    DeliveryLedger,
    batch_key,
    ledger_entries,
    settle_run,
)
from airflow_dataflow.state.migrate import state_engine, upgrade
from airflow_dataflow.state.schema import delivery_ledger
from tests.state.test_migrations import postgres_state, sqlite_state, state_store  # noqa: F401


@pytest.fixture
def engine(state_store: str) -> sa.Engine:  # noqa: F811
    """The state store's engine, migrated (the default SQLite one, or PostgreSQL's)."""
    migrated = state_engine()
    upgrade(migrated)
    return migrated


def _statuses(engine: sa.Engine, route: str = "orders") -> dict[str, tuple[str, str, int]]:
    return {
        str(row["batch_key"]): (str(row["status"]), str(row["run_id"]), int(row["attempts"]))  # type: ignore[call-overload]
        for row in ledger_entries(engine, route)
    }


def test_batch_keys_depend_on_content_target_and_position_not_on_the_run() -> None:
    lines = [b'{"id":1}\n', b'{"id":2}\n']
    key = batch_key("orders", "dwh", "conn:t", 0, lines)
    assert key == batch_key("orders", "dwh", "conn:t", 0, list(lines))
    assert len(key) == 64
    assert key != batch_key("orders", "dwh", "conn:t", 1, lines)
    assert key != batch_key("orders", "dwh", "conn:other", 0, lines)
    assert key != batch_key("orders", "lake", "conn:t", 0, lines)
    assert key != batch_key("orders", "dwh", "conn:t", 0, lines[:1])
    # the separators keep ("ab", "c") and ("a", "bc") apart
    assert batch_key("ab", "c", "", 0, []) != batch_key("a", "bc", "", 0, [])


def test_before_and_after_each_batch(engine: sa.Engine) -> None:
    ledger = DeliveryLedger(engine, "orders", "dwh", "run-1")
    first = ledger.begin("k1", 10)
    assert first.token == "run-1#1"
    assert _statuses(engine) == {"k1": ("sending", "run-1", 1)}
    ledger.delivered("k1")
    ledger.begin("k2", 5)  # writes k1's "delivered" in the same transaction
    assert _statuses(engine) == {"k1": ("delivered", "run-1", 1), "k2": ("sending", "run-1", 1)}
    ledger.failed("k2", "DestinationError: refused")
    rows = {row["batch_key"]: row for row in ledger_entries(engine, "orders")}
    assert rows["k2"]["status"] == "failed"
    assert rows["k2"]["last_error"] == "DestinationError: refused"
    assert rows["k2"]["records"] == 5


def test_a_retry_sees_what_the_first_attempt_did(engine: sa.Engine) -> None:
    first = DeliveryLedger(engine, "orders", "dwh", "run-1")
    first.begin("k1", 10)
    first.delivered("k1")
    first.begin("k2", 10)  # then the process dies: k2 stays "sending"
    retry = DeliveryLedger(engine, "orders", "dwh", "run-1")
    assert retry.entry("k1") is not None and retry.entry("k1").status == "delivered"  # type: ignore[union-attr]
    uncertain = retry.entry("k2")
    assert uncertain is not None and uncertain.status == "sending"
    assert uncertain.token == "run-1#1"
    again = retry.begin("k2", 10)
    assert again.token == "run-1#2"
    assert _statuses(engine)["k2"] == ("sending", "run-1", 2)
    assert DeliveryLedger(engine, "orders", "other", "run-1").entry("k1") is None


def test_a_later_run_takes_over_the_batches_it_skips_and_its_commit_settles_them(
    engine: sa.Engine,
) -> None:
    failed_run = DeliveryLedger(engine, "orders", "dwh", "run-1")
    failed_run.begin("k1", 10)
    failed_run.delivered("k1")
    failed_run.flush()
    later = DeliveryLedger(engine, "orders", "dwh", "run-2")
    later.adopt("k1")
    later.begin("k2", 10)
    later.delivered("k2")
    later.flush()
    assert _statuses(engine) == {"k1": ("delivered", "run-2", 1), "k2": ("delivered", "run-2", 1)}
    assert settle_run(engine, "orders", "run-1") == 0
    assert settle_run(engine, "orders", "run-2") == 2
    assert {status for status, _, _ in _statuses(engine).values()} == {"committed"}
    # committed batches never make a later run skip: same content later is a new delivery
    assert DeliveryLedger(engine, "orders", "dwh", "run-3").entry("k1") is None


def test_committed_entries_are_forgotten_after_the_retention(engine: sa.Engine) -> None:
    ledger = DeliveryLedger(engine, "orders", "dwh", "run-1")
    for key in ("old", "new"):
        ledger.begin(key, 1)
        ledger.delivered(key)
    ledger.flush()
    settle_run(engine, "orders", "run-1")
    long_ago = datetime.now(timezone.utc) - COMMITTED_RETENTION - timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(
            sa.update(delivery_ledger)
            .where(delivery_ledger.c.batch_key == "old")
            .values(updated_at=long_ago)
        )
    settle_run(engine, "orders", "run-2")
    assert set(_statuses(engine)) == {"new"}
