"""Nothing lost, nothing twice, through real Airflow DAG runs against PostgreSQL.

- The loading connection is terminated mid-delivery: Airflow retries the deliver task, which
  skips the batches already written.
- A delivery fails permanently (retries exhausted): the run fails and says why, the cursor
  stays; once the destination is fixed the next run re-reads the same rows and delivers each
  exactly once, although some batches had been written before the failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.hooks.sql import dispose_engines
from tests.support.cli import CliResult, assert_conserved
from tests.support.databases import POSTGRES_URI, Database, unique
from tests.support.routes import write_jsonl, write_route

pytestmark = pytest.mark.integration

RECORDS = 1000


@pytest.fixture
def pg(postgres_admin: sa.Engine) -> Iterator[Database]:
    """A fresh schema on the local PostgreSQL, for routes run by the CLI."""
    schema = unique("g")
    with postgres_admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield Database("postgres", "", postgres_admin, schema=schema)
    finally:
        dispose_engines()
        with postgres_admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def _connect(dataflow: Callable[..., CliResult], db: Database) -> str:
    conn_id = unique("pg")
    dataflow.connect(conn_id, POSTGRES_URI)  # type: ignore[attr-defined]
    return conn_id


def _ids(db: Database) -> list[int]:
    return [row["id"] for row in db.rows("orders")]


def _ledger(airflow_home: Path, route: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{airflow_home}/dataflow/state.db")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT batch_key, status, attempts, records FROM dataflow_delivery_ledger "
                    "WHERE route = :route"
                ),
                {"route": route},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def test_connection_dropped_mid_delivery_is_retried_without_duplicates(
    pg: Database, dataflow: Callable[..., CliResult], tmp_path: Path, airflow_home: Path
) -> None:
    conn_id = _connect(dataflow, pg)
    pg.execute(f"CREATE TABLE {pg.table('orders')} (id BIGINT, amount BIGINT)")
    pg.execute(f"CREATE SEQUENCE {pg.schema}.drops")
    pg.execute(
        f"""
        CREATE FUNCTION {pg.schema}.drop_once() RETURNS trigger AS $$
        BEGIN
          IF NEW.id = 550 AND nextval('{pg.schema}.drops') = 1 THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql
        """
    )
    pg.execute(
        f"CREATE TRIGGER drop_once BEFORE INSERT ON {pg.table('orders')} "
        f"FOR EACH ROW EXECUTE FUNCTION {pg.schema}.drop_once()"
    )
    write_jsonl(tmp_path / "in.jsonl", ({"id": n, "amount": n % 90} for n in range(RECORDS)))
    route_id = unique("dropped")
    route = write_route(
        tmp_path,
        route_id,
        f"""
        retries: 2
        retry_delay: 0s
        source: {{type: file, path: in.jsonl}}
        rules: [{{name: all, to: [dwh]}}]
        destinations:
          # max_attempts: 1: no reconnecting within the task, so Airflow's retry is what recovers
          dwh: {{type: database, connection: {conn_id}, table: {pg.table("orders")}, batch_size: 100, max_attempts: 1}}
        """,
    )
    result = dataflow("run", str(route), "--json")
    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert_conserved(summary)
    assert summary["counts"]["destinations"] == {"dwh": RECORDS}
    assert _ids(pg) == list(range(RECORDS))
    ledger = _ledger(airflow_home, route_id)
    assert len(ledger) == 10
    assert {row["status"] for row in ledger} == {"committed"}
    # batches 0-9 were marked "sending" as one window; the connection died in batch 5, so
    # the retry skipped 0-4 (delivered) and marked 5-9 again
    assert sorted(row["attempts"] for row in ledger) == [1] * 5 + [2] * 5


def test_permanent_failure_fails_the_run_and_the_next_run_delivers_the_rest_once(
    pg: Database, dataflow: Callable[..., CliResult], tmp_path: Path, airflow_home: Path
) -> None:
    conn_id = _connect(dataflow, pg)
    pg.execute(f"CREATE TABLE {pg.table('src')} (id BIGINT PRIMARY KEY, amount BIGINT)")
    pg.execute(
        f"INSERT INTO {pg.table('src')} SELECT n, n % 90 FROM generate_series(1, {RECORDS}) AS n"
    )
    # the destination refuses one row of the 6th batch: a permanent failure
    pg.execute(
        f"CREATE TABLE {pg.table('orders')} "
        "(id BIGINT PRIMARY KEY, amount BIGINT, CONSTRAINT no_550 CHECK (id <> 550))"
    )
    route_id = unique("partial")
    route = write_route(
        tmp_path,
        route_id,
        f"""
        retries: 1
        retry_delay: 0s
        source:
          type: sql
          connection: {conn_id}
          query: SELECT id, amount FROM {pg.table("src")}
          cursor: {{column: id, initial: 0}}
        rules: [{{name: all, to: [dwh]}}]
        destinations:
          dwh: {{type: database, connection: {conn_id}, table: {pg.table("orders")}, batch_size: 100}}
        """,
    )
    failed = dataflow("run", str(route), "--json")
    assert failed.returncode == 1
    assert failed.summary["state"] == "failed", failed.output[-5000:]
    assert "no_550" in failed.output
    assert _ids(pg) == list(range(1, 501))  # batches 0-4 were written, batch 5 (501-600) refused
    cursor = dataflow("cursor", "show", route_id, "--json")
    assert cursor.returncode == 0, cursor.output
    assert json.loads(cursor.stdout.strip().splitlines()[-1]).get("value") is None
    runs = dataflow("runs", route_id, "--json")
    [recorded] = [json.loads(line) for line in runs.stdout.splitlines() if line.startswith("{")]
    assert recorded["state"] == "failed"
    assert recorded["failed_task"] == "deliver_dwh"
    assert "no_550" in recorded["error"]
    assert recorded["counts"]["read"] == RECORDS

    pg.execute(f"ALTER TABLE {pg.table('orders')} DROP CONSTRAINT no_550")  # the fix
    fixed = dataflow("run", str(route), "--json")
    assert fixed.summary["state"] == "success", fixed.output[-5000:]
    assert fixed.summary["counts"]["destinations"] == {"dwh": RECORDS}
    assert _ids(pg) == list(range(1, RECORDS + 1))  # each exactly once (the PK would refuse twice)
    # batches 0-4 were sent once (skipped by the retry and the second run); 5-9 were marked
    # "sending" by each of the 3 attempts (first try, retry, second run)
    attempts = sorted(row["attempts"] for row in _ledger(airflow_home, route_id))
    assert attempts == [1] * 5 + [3] * 5
    shown = dataflow("cursor", "show", route_id, "--json")
    assert json.loads(shown.stdout.strip().splitlines()[-1])["value"] == RECORDS
