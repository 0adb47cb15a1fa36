"""State-store migrations on SQLite and PostgreSQL: from empty and every revision to head."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.cli import main
from airflow_dataflow.hooks.sql import dispose_engines
from airflow_dataflow.state.migrate import head_revision, revisions, state_engine, status, upgrade
from airflow_dataflow.state.schema import metadata
from tests.support.databases import POSTGRES_URI

TABLES = {
    "dataflow_sync_cursors",
    "dataflow_delivery_ledger",
    "dataflow_dead_letters",
    "dataflow_run_summaries",
}


@pytest.fixture
def sqlite_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """No ``dataflow_state`` connection: the default SQLite file under AIRFLOW_HOME."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    yield f"sqlite:///{tmp_path}/dataflow/state.db"


@pytest.fixture
def postgres_state(postgres_admin: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL database behind the ``dataflow_state`` connection."""
    name = f"state_{uuid.uuid4().hex[:10]}"
    autocommit = postgres_admin.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    uri = POSTGRES_URI.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("AIRFLOW_CONN_DATAFLOW_STATE", uri)
    try:
        yield uri
    finally:
        dispose_engines()
        with autocommit.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def state_store(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_state")


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_from_empty_to_head_then_again_is_a_no_op(state_store: str) -> None:
    engine = state_engine()
    assert status(engine).current is None
    assert not TABLES & _tables(engine)
    first = upgrade(engine)
    assert first.current == head_revision() and first.up_to_date
    assert _tables(engine) >= TABLES
    second = upgrade(engine)  # idempotent
    assert second.current == first.current


@pytest.mark.parametrize("start", revisions())
def test_upgrade_from_every_earlier_revision(state_store: str, start: str) -> None:
    engine = state_engine()
    upgrade(engine, start)
    assert status(engine).current == start
    assert upgrade(engine).current == head_revision()


def test_migrations_create_what_the_schema_module_describes(sqlite_state: str) -> None:
    engine = state_engine()
    upgrade(engine)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        assert columns == {column.name for column in table.columns}, table.name


def test_db_commands(state_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status"]) == 1  # not migrated yet
    assert "run `airflow-dataflow db upgrade`" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"upgraded from empty to {head_revision()}" in capsys.readouterr().out
    assert main(["db", "status", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["current"] == reported["head"] == head_revision() and reported["up_to_date"]
    assert "password" not in reported["location"]
