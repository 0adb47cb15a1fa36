"""Database fixtures: Airflow connections from env vars, and one fresh database per test.

PostgreSQL and MariaDB come from local servers (override with ``DATAFLOW_TEST_POSTGRES_URI`` /
``DATAFLOW_TEST_MYSQL_URI``, Airflow connection URIs). When one is unreachable its tests are
skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.context import RunContext
from airflow_dataflow.hooks.sql import dispose_engines

POSTGRES_URI = os.environ.get(
    "DATAFLOW_TEST_POSTGRES_URI", "postgres://postgres@127.0.0.1:5432/test"
)
MYSQL_URI = os.environ.get("DATAFLOW_TEST_MYSQL_URI", "mysql://root@127.0.0.1:3306/test")

DefineConn = Callable[[str], str]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _server_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: integration servers are required)")
    pytest.skip(reason)


def _admin_engine(airflow_uri: str, name: str) -> sa.Engine:
    url = sa.make_url(airflow_uri)
    driver = "postgresql+psycopg" if url.drivername.startswith("postgres") else "mysql+pymysql"
    engine = sa.create_engine(url.set(drivername=driver), connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        _server_unavailable(f"{name} not reachable at {url.host}:{url.port}: {exc.orig}")
    return engine


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    engine = _admin_engine(POSTGRES_URI, "PostgreSQL")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_uri(postgres_admin: sa.Engine) -> str:
    """The Airflow URI of the test PostgreSQL server (skips when it is unreachable)."""
    return POSTGRES_URI


@pytest.fixture(scope="session")
def mysql_admin() -> Iterator[sa.Engine]:
    engine = _admin_engine(MYSQL_URI, "MariaDB/MySQL")
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    dispose_engines()


@pytest.fixture
def define_conn(monkeypatch: pytest.MonkeyPatch) -> DefineConn:
    """Defines an Airflow connection (``AIRFLOW_CONN_<ID>``) under a unique id and returns it."""

    def define(uri: str, prefix: str = "conn") -> str:
        conn_id = unique(prefix)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
        return conn_id

    return define


@pytest.fixture
def context() -> RunContext:
    return RunContext(route="orders")


@dataclass
class Database:
    """One test's database: its Airflow connection id and an engine to check contents."""

    kind: str
    conn_id: str
    engine: sa.Engine
    schema: str | None = None
    tables: list[str] = field(default_factory=list)

    def table(self, name: str) -> str:
        """The ``table`` setting for ``name`` (schema-qualified on PostgreSQL)."""
        return f"{self.schema}.{name}" if self.schema else name

    def rows(self, name: str, order_by: str = "id") -> list[dict[str, Any]]:
        table = sa.Table(name, sa.MetaData(), schema=self.schema, autoload_with=self.engine)
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(table).order_by(table.c[order_by]))
            return [dict(row._mapping) for row in result]

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


def _sqlite(tmp_path: Path, define_conn: DefineConn) -> Iterator[Database]:
    path = tmp_path / "test.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    yield Database("sqlite", define_conn(f"sqlite:///{path}", "sqlite"), engine)
    engine.dispose()


def _postgres(admin: sa.Engine, define_conn: DefineConn) -> Iterator[Database]:
    schema = unique("t")
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield Database("postgres", define_conn(POSTGRES_URI, "pg"), admin, schema=schema)
    finally:
        dispose_engines()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def _mysql(admin: sa.Engine, define_conn: DefineConn) -> Iterator[Database]:
    database = unique("t")
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    engine = sa.create_engine(admin.url.set(database=database))
    uri = MYSQL_URI.rsplit("/", 1)[0] + f"/{database}"
    try:
        yield Database("mysql", define_conn(uri, "my"), engine)
    finally:
        engine.dispose()
        dispose_engines()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE {database}"))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.integration),
        pytest.param("mysql", marks=pytest.mark.integration),
    ]
)
def db(
    request: pytest.FixtureRequest, tmp_path: Path, define_conn: DefineConn
) -> Iterator[Database]:
    """A fresh, empty database on each of SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        yield from _sqlite(tmp_path, define_conn)
    elif request.param == "postgres":
        yield from _postgres(request.getfixturevalue("postgres_admin"), define_conn)
    else:
        yield from _mysql(request.getfixturevalue("mysql_admin"), define_conn)
