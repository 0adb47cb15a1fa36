"""Delivery through the ledger: crashes, retries and re-runs deliver every record exactly once.

The deliver phase runs as a plain function against real databases (SQLite, PostgreSQL,
MariaDB) and files; faults are injected by a destination that fails on its Nth batch, by a
process killed mid-delivery (SIGKILL, in a subprocess), and by a PostgreSQL trigger that
terminates the loading connection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.destinations import database
from airflow_dataflow.errors import DestinationError, RetriableError
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.state.ledger import ledger_entries, settle_run
from airflow_dataflow.state.migrate import state_engine
from tests.support.databases import Database
from tests.support.faults import deliver_and_get_killed, fail_on_call
from tests.support.routes import read_jsonl, stage_partition

RECORDS = 1000
BATCH = 100


pytestmark = pytest.mark.usefixtures("own_state_store")


def _database_destination(db: Database, mode: str = "insert", **extra: Any) -> str:
    key = ", key: [id]" if mode in ("upsert", "mirror") else ""
    batch_size = extra.pop("batch_size", BATCH)
    more = "".join(f", {name}: {value}" for name, value in extra.items())
    return (
        f"{{type: database, connection: {db.conn_id}, table: {db.table('orders')}, "
        f"mode: {mode}, batch_size: {batch_size}{key}{more}}}"
    )


def _ids(db: Database) -> list[int]:
    return [row["id"] for row in db.rows("orders")]


def test_a_retried_task_skips_the_batches_already_written(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, context, partition = stage_partition(tmp_path, _database_destination(db), "run-1")
    with monkeypatch.context() as patch:
        fail_on_call(patch, database._TableBatchSender, "send", failing_call=4)
        with pytest.raises(DestinationError, match="injected failure"):
            deliver(route, "out", context, partition)
    assert _ids(db) == list(range(300))  # three batches committed, each in its own transaction
    outcome = deliver(route, "out", context, partition)  # the task's retry
    assert outcome["delivered"] == RECORDS
    assert (outcome["batches"], outcome["skipped"]) == (10, 3)
    assert _ids(db) == list(range(RECORDS))
    statuses = [entry["status"] for entry in ledger_entries(state_engine(), "orders")]
    assert statuses == ["delivered"] * 10


def test_a_later_run_after_a_partial_failure_delivers_the_rest_once(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = _database_destination(db)
    route, context, partition = stage_partition(tmp_path, destination, "run-1")
    with monkeypatch.context() as patch:
        fail_on_call(patch, database._TableBatchSender, "send", failing_call=6)
        with pytest.raises(DestinationError):
            deliver(route, "out", context, partition)  # retries exhausted: run-1 fails
    # run-2 re-reads the same records (the cursor did not move) and stages them anew
    route, context, partition = stage_partition(tmp_path, destination, "run-2")
    outcome = deliver(route, "out", context, partition)
    assert outcome["skipped"] == 5
    assert _ids(db) == list(range(RECORDS))
    assert settle_run(state_engine(), "orders", "run-2") == 10
    # once run-2 committed, the same content again is a new delivery (no cursor: re-read)
    route, context, partition = stage_partition(tmp_path, destination, "run-3")
    assert deliver(route, "out", context, partition)["skipped"] == 0
    assert len(_ids(db)) == 2 * RECORDS


def test_changed_content_is_sent_even_at_the_same_position(db: Database, tmp_path: Path) -> None:
    destination = _database_destination(db)
    route, context, partition = stage_partition(tmp_path, destination, "run-1", records=150)
    deliver(route, "out", context, partition)
    # not committed, and the next read has more records: batch 0 is the same, batch 1 differs
    route, context, partition = stage_partition(tmp_path, destination, "run-2", records=250)
    outcome = deliver(route, "out", context, partition)
    assert (outcome["batches"], outcome["skipped"]) == (3, 1)
    # batch 1 (100-149 before, 100-199 now) is sent again in full: an insert duplicates
    # 100-149, which is why the cursor only moves once every delivery of a run succeeded
    assert _ids(db) == sorted([*range(250), *range(100, 150)])


def test_upsert_needs_no_marker_table(db: Database, tmp_path: Path) -> None:
    route, context, partition = stage_partition(
        tmp_path, _database_destination(db, "upsert"), "run-1"
    )
    deliver(route, "out", context, partition)
    assert _ids(db) == list(range(RECORDS))
    assert database.MARKER_TABLE not in sa.inspect(db.engine).get_table_names(schema=db.schema)


def test_replace_is_one_ledger_entry_and_a_retry_skips_it(db: Database, tmp_path: Path) -> None:
    route, context, partition = stage_partition(
        tmp_path, _database_destination(db, "replace"), "run-1"
    )
    assert deliver(route, "out", context, partition)["batches"] == 1
    db.execute(f"DELETE FROM {db.table('orders')} WHERE id < 10")  # a change the retry keeps
    assert deliver(route, "out", context, partition)["skipped"] == 1
    assert len(_ids(db)) == RECORDS - 10


# -- a process killed mid-delivery ------------------------------------------------------------


def test_killed_right_after_a_commit_the_retry_finds_the_marker(
    db: Database, tmp_path: Path
) -> None:
    """Killed after batch 4 committed but before the ledger heard of it: no duplicate."""
    route, context, partition = stage_partition(tmp_path, _database_destination(db), "run-1")
    deliver_and_get_killed(
        route, context, partition, target="database:_TableBatchSender.send", after=4
    )
    assert _ids(db) == list(range(400))
    uncertain = [e for e in ledger_entries(state_engine(), "orders") if e["status"] == "sending"]
    # the window of 10 batches was marked "sending" at once: 4 arrived, 6 were never sent
    assert len(uncertain) == database._TableBatchSender.window == 10
    outcome = deliver(route, "out", context, partition)
    assert outcome["skipped"] == 4
    assert _ids(db) == list(range(RECORDS))


def test_killed_while_writing_a_file_the_retry_writes_each_line_once(tmp_path: Path) -> None:
    out = tmp_path / "out" / "orders.jsonl"
    route, context, partition = stage_partition(tmp_path, f"{{type: file, path: {out}}}", "run-1")
    deliver_and_get_killed(route, context, partition, target="file:_Counter.__init__", after=1)
    assert not out.exists()  # killed before the rename: no half-written file
    deliver(route, "out", context, partition)
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines)) == RECORDS
    assert [record["id"] for record in read_jsonl(out)] == list(range(RECORDS))


# -- the PostgreSQL connection dropped during a load --------------------------------------------


@pytest.fixture
def postgres_db(postgres_admin: sa.Engine, define_conn: Callable[..., str]) -> Any:
    from tests.support.databases import _postgres

    yield from _postgres(postgres_admin, define_conn)


def test_connection_dropped_during_a_load_then_retried(
    postgres_db: Database, tmp_path: Path
) -> None:
    db = postgres_db
    _drop_the_connection_once(db, at_id=550)
    # max_attempts: 1, so the destination does not retry by itself: the task fails
    destination = _database_destination(db, max_attempts=1)
    route, context, partition = stage_partition(tmp_path, destination, "run-1")
    with pytest.raises(DestinationError) as failure:
        deliver(route, "out", context, partition)
    message = str(failure.value)
    assert "route 'orders': destination 'out'" in message
    assert "writing records 500-599 failed" in message
    assert "a retry skips them" in message
    assert isinstance(failure.value, RetriableError)  # Airflow retries the task
    assert _ids(db) == list(range(500))
    from airflow_dataflow.hooks.sql import dispose_engines

    dispose_engines()  # the pool's connection is dead, as in a new task process
    assert deliver(route, "out", context, partition)["skipped"] == 5
    assert _ids(db) == list(range(RECORDS))


@pytest.mark.parametrize("batch_size", [100, 250], ids=["inserts", "copy"])
def test_connection_dropped_during_a_load_is_retried_within_the_task(
    postgres_db: Database, tmp_path: Path, batch_size: int
) -> None:
    """The destination's RetryPolicy reconnects and writes the batch again: no task failure."""
    from airflow_dataflow.destinations import database_sql

    assert (batch_size >= database_sql.COPY_MIN_ROWS) == (batch_size == 250)
    db = postgres_db
    _drop_the_connection_once(db, at_id=550)
    destination = _database_destination(db, batch_size=batch_size)
    route, context, partition = stage_partition(tmp_path, destination, "run-1")
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["skipped"]) == (RECORDS, 0)
    assert _ids(db) == list(range(RECORDS))
    entries = ledger_entries(state_engine(), "orders")
    assert {entry["status"] for entry in entries} == {"delivered"}


def _drop_the_connection_once(db: Database, at_id: int) -> None:
    """A trigger that terminates the loading connection when row ``at_id`` is first written."""
    db.execute(f"CREATE TABLE {db.table('orders')} (id BIGINT, amount BIGINT, note TEXT)")
    db.execute(f"CREATE SEQUENCE {db.schema}.drops")
    db.execute(
        f"""
        CREATE FUNCTION {db.schema}.drop_once() RETURNS trigger AS $$
        BEGIN
          IF NEW.id = {at_id} AND nextval('{db.schema}.drops') = 1 THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql
        """
    )
    db.execute(
        f"CREATE TRIGGER drop_once BEFORE INSERT ON {db.table('orders')} "
        f"FOR EACH ROW EXECUTE FUNCTION {db.schema}.drop_once()"
    )


# -- the bulk path and mirror, killed mid-delivery -------------------------------------------


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_killed_after_a_copy_batch_committed_the_retry_writes_each_row_once(
    postgres_db: Database, tmp_path: Path, mode: str
) -> None:
    """PostgreSQL COPY: the marker row (insert) is in the batch's transaction, like INSERTs."""
    from airflow_dataflow.destinations import database_sql

    db = postgres_db
    batch_size = 250
    assert batch_size >= database_sql.COPY_MIN_ROWS  # so the batches go through COPY
    destination = _database_destination(db, mode, batch_size=batch_size)
    route, context, partition = stage_partition(tmp_path, destination, "run-1")
    deliver_and_get_killed(
        route, context, partition, target="database:_TableBatchSender.send", after=2
    )
    assert _ids(db) == list(range(500))
    outcome = deliver(route, "out", context, partition)
    assert outcome["skipped"] == (2 if mode == "insert" else 0)  # upsert: sent again, harmless
    assert _ids(db) == list(range(RECORDS))


def _stale_table_for_mirror(db: Database) -> None:
    """Rows the mirror must change (500-999) or delete (1000-1049); 0-499 are missing."""
    db.execute(
        f"CREATE TABLE {db.table('orders')} (id BIGINT PRIMARY KEY, amount BIGINT, note TEXT)"
    )
    for n in range(500, 1050):
        db.execute(f"INSERT INTO {db.table('orders')} VALUES (:n, -1, 'stale')", n=n)


def _mirrored(db: Database) -> None:
    rows = db.rows("orders")
    assert [row["id"] for row in rows] == list(range(RECORDS))
    assert all(
        row == {"id": n, "amount": n % 70, "note": f"order {n}"} for n, row in enumerate(rows)
    )


def test_mirror_killed_mid_transaction_then_retried(db: Database, tmp_path: Path) -> None:
    _stale_table_for_mirror(db)
    route, context, partition = stage_partition(
        tmp_path, _database_destination(db, "mirror"), "run-1"
    )
    deliver_and_get_killed(
        route, context, partition, target="database_sql:TableWriter.write", after=3
    )
    # three of ten chunks were written in the one transaction, which died uncommitted
    assert [row["id"] for row in db.rows("orders")] == list(range(500, 1050))
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["batches"], outcome["skipped"]) == (RECORDS, 1, 0)
    _mirrored(db)


def test_mirror_killed_after_its_commit_then_retried(db: Database, tmp_path: Path) -> None:
    """Committed, but the ledger never heard: the retry mirrors again, which changes nothing."""
    _stale_table_for_mirror(db)
    route, context, partition = stage_partition(
        tmp_path, _database_destination(db, "mirror"), "run-1"
    )
    deliver_and_get_killed(
        route, context, partition, target="database:DatabaseDestination.deliver", after=1
    )
    _mirrored(db)
    [entry] = ledger_entries(state_engine(), "orders")
    assert entry["status"] == "sending"
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["skipped"]) == (RECORDS, 0)
    _mirrored(db)
    assert deliver(route, "out", context, partition)["skipped"] == 1  # now it is delivered


# -- records a destination refuses ------------------------------------------------------------


def test_refused_records_become_dead_letters_and_are_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, define_conn: Callable[..., str]
) -> None:
    """A sender returning rejections: dead letters with the reason, counts add up, retry-safe."""
    from airflow_dataflow.destinations.base import Rejection
    from airflow_dataflow.state.store import StateStore

    path = tmp_path / "dwh.db"
    db = Database(
        "sqlite", define_conn(f"sqlite:///{path}", "sqlite"), sa.create_engine(f"sqlite:///{path}")
    )
    original = database._TableBatchSender.send

    def refusing(
        self: Any, batch: list[dict[str, Any]], key: str, token: str, offset: int = 0
    ) -> Any:
        accepted = [record for record in batch if record["id"] % 100 != 7]
        original(self, accepted, key, token, offset)
        return [
            Rejection(record, f"422 Unprocessable Entity: id {record['id']} refused")
            for record in batch
            if record["id"] % 100 == 7
        ]

    monkeypatch.setattr(database._TableBatchSender, "send", refusing)
    route, context, partition = stage_partition(tmp_path, _database_destination(db), "run-1")
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["rejected"]) == (RECORDS - 10, 10)
    assert len(_ids(db)) == RECORDS - 10
    letters = StateStore.open().dead_letters("orders")
    assert sorted(letter["record"]["id"] for letter in letters) == list(range(7, RECORDS, 100))
    assert {letter["destination"] for letter in letters} == {"out"}
    assert letters[0]["reason"].startswith("422 Unprocessable Entity")
    # a retry skips every batch, and still reports the same counts
    again = deliver(route, "out", context, partition)
    assert (again["delivered"], again["rejected"], again["skipped"]) == (RECORDS - 10, 10, 10)
    assert len(StateStore.open().dead_letters("orders")) == 10
