"""Delivery through the ledger: crashes, retries and re-runs deliver every record exactly once.

The deliver phase runs as a plain function against real databases (SQLite, PostgreSQL,
MariaDB) and files; faults are injected by a destination that fails on its Nth batch, by a
process killed mid-delivery (SIGKILL, in a subprocess), and by a PostgreSQL trigger that
terminates the loading connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.config import LoadedRoute, load_route
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import database
from airflow_dataflow.errors import DestinationError, RetriableError
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.pipeline.extract import extract
from airflow_dataflow.pipeline.route import route_records
from airflow_dataflow.staging import StagingArea
from airflow_dataflow.state.ledger import ledger_entries, settle_run
from airflow_dataflow.state.migrate import state_engine
from tests.support.databases import Database
from tests.support.routes import read_jsonl, write_jsonl, write_route

RECORDS = 1000
BATCH = 100


@pytest.fixture(autouse=True)
def _own_state_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own default state store (``$AIRFLOW_HOME/dataflow/state.db``)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)


def _stage(
    tmp_path: Path, destination: str, run_id: str, records: int = RECORDS
) -> tuple[LoadedRoute, RunContext, dict[str, Any]]:
    """A route reading ``records`` orders into ``destination``; returns its staged partition."""
    write_jsonl(
        tmp_path / "in.jsonl",
        ({"id": n, "amount": n % 70, "note": f"order {n}"} for n in range(records)),
    )
    route = load_route(
        write_route(
            tmp_path,
            "orders",
            f"""
            source: {{type: file, path: in.jsonl}}
            rules: [{{name: all, to: [out]}}]
            destinations:
              out: {destination}
            """,
        )
    )
    context = RunContext(route="orders", run_id=run_id, route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "orders", run_id, chunk_size=300)
    routing = route_records(route, context, staging, extract(route, context, staging))
    return route, context, routing["partitions"]["out"]


def _database_destination(db: Database, mode: str = "insert") -> str:
    key = ", key: [id]" if mode == "upsert" else ""
    return (
        f"{{type: database, connection: {db.conn_id}, table: {db.table('orders')}, "
        f"mode: {mode}, batch_size: {BATCH}{key}}}"
    )


def _ids(db: Database) -> list[int]:
    return [row["id"] for row in db.rows("orders")]


def _fail_on_batch(
    monkeypatch: pytest.MonkeyPatch, cls: type, method: str, failing_call: int
) -> list[int]:
    """Make ``cls.method`` raise on its ``failing_call``-th call (1-based); returns the call log."""
    original = getattr(cls, method)
    calls: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == failing_call:
            raise DestinationError("injected failure: the destination went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, failing)
    return calls


def test_a_retried_task_skips_the_batches_already_written(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, context, partition = _stage(tmp_path, _database_destination(db), "run-1")
    with monkeypatch.context() as patch:
        _fail_on_batch(patch, database._TableBatchSender, "send", failing_call=4)
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
    route, context, partition = _stage(tmp_path, destination, "run-1")
    with monkeypatch.context() as patch:
        _fail_on_batch(patch, database._TableBatchSender, "send", failing_call=6)
        with pytest.raises(DestinationError):
            deliver(route, "out", context, partition)  # retries exhausted: run-1 fails
    # run-2 re-reads the same records (the cursor did not move) and stages them anew
    route, context, partition = _stage(tmp_path, destination, "run-2")
    outcome = deliver(route, "out", context, partition)
    assert outcome["skipped"] == 5
    assert _ids(db) == list(range(RECORDS))
    assert settle_run(state_engine(), "orders", "run-2") == 10
    # once run-2 committed, the same content again is a new delivery (no cursor: re-read)
    route, context, partition = _stage(tmp_path, destination, "run-3")
    assert deliver(route, "out", context, partition)["skipped"] == 0
    assert len(_ids(db)) == 2 * RECORDS


def test_changed_content_is_sent_even_at_the_same_position(db: Database, tmp_path: Path) -> None:
    destination = _database_destination(db)
    route, context, partition = _stage(tmp_path, destination, "run-1", records=150)
    deliver(route, "out", context, partition)
    # not committed, and the next read has more records: batch 0 is the same, batch 1 differs
    route, context, partition = _stage(tmp_path, destination, "run-2", records=250)
    outcome = deliver(route, "out", context, partition)
    assert (outcome["batches"], outcome["skipped"]) == (3, 1)
    # batch 1 (100-149 before, 100-199 now) is sent again in full: an insert duplicates
    # 100-149, which is why the cursor only moves once every delivery of a run succeeded
    assert _ids(db) == sorted([*range(250), *range(100, 150)])


def test_upsert_needs_no_marker_table(db: Database, tmp_path: Path) -> None:
    route, context, partition = _stage(tmp_path, _database_destination(db, "upsert"), "run-1")
    deliver(route, "out", context, partition)
    assert _ids(db) == list(range(RECORDS))
    assert database.MARKER_TABLE not in sa.inspect(db.engine).get_table_names(schema=db.schema)


def test_replace_is_one_ledger_entry_and_a_retry_skips_it(db: Database, tmp_path: Path) -> None:
    route, context, partition = _stage(tmp_path, _database_destination(db, "replace"), "run-1")
    assert deliver(route, "out", context, partition)["batches"] == 1
    db.execute(f"DELETE FROM {db.table('orders')} WHERE id < 10")  # a change the retry keeps
    assert deliver(route, "out", context, partition)["skipped"] == 1
    assert len(_ids(db)) == RECORDS - 10


# -- a process killed mid-delivery ------------------------------------------------------------

_KILLER = """
import json, os, signal, sys
from airflow_dataflow.config import load_route
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.destinations import {module}

target, method, after = {module}.{cls}, "{method}", {after}
original = getattr(target, method)
calls = []

def killing(self, *args, **kwargs):
    calls.append(1)
    result = original(self, *args, **kwargs)
    if len(calls) == after:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no except, no finally
    return result

setattr(target, method, killing)
route = load_route(sys.argv[1])
context = RunContext(route="orders", run_id=sys.argv[2], route_file=route.file)
deliver(route, "out", context, json.loads(sys.argv[3]))
"""


def _deliver_and_get_killed(
    route: LoadedRoute,
    context: RunContext,
    partition: dict[str, Any],
    *,
    module: str,
    cls: str,
    method: str,
    after: int,
) -> None:
    script = _KILLER.format(module=module, cls=cls, method=method, after=after)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(script),
            route.file,
            context.run_id,
            json.dumps(partition),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == -9, completed.stderr[-3000:]


def test_killed_right_after_a_commit_the_retry_finds_the_marker(
    db: Database, tmp_path: Path
) -> None:
    """Killed after batch 4 committed but before the ledger heard of it: no duplicate."""
    route, context, partition = _stage(tmp_path, _database_destination(db), "run-1")
    _deliver_and_get_killed(
        route,
        context,
        partition,
        module="database",
        cls="_TableBatchSender",
        method="send",
        after=4,
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
    route, context, partition = _stage(tmp_path, f"{{type: file, path: {out}}}", "run-1")
    _deliver_and_get_killed(
        route, context, partition, module="file", cls="_Counter", method="__init__", after=1
    )
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
    db.execute(f"CREATE TABLE {db.table('orders')} (id BIGINT, amount BIGINT, note TEXT)")
    db.execute(f"CREATE SEQUENCE {db.schema}.drops")
    db.execute(
        f"""
        CREATE FUNCTION {db.schema}.drop_once() RETURNS trigger AS $$
        BEGIN
          IF NEW.id = 550 AND nextval('{db.schema}.drops') = 1 THEN
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
    route, context, partition = _stage(tmp_path, _database_destination(db), "run-1")
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
    route, context, partition = _stage(tmp_path, _database_destination(db), "run-1")
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
