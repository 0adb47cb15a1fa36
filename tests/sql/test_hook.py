"""sql_engine: Airflow connections to SQLAlchemy engines, and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.errors import DestinationError, RetriableError, SourceError
from airflow_dataflow.hooks.sql import (
    DestinationUnavailableError,
    SourceUnavailableError,
    sql_engine,
)

DefineConn = Callable[..., str]


def _engine(conn_id: str, error_class: type[SourceError] | type[DestinationError] = SourceError):
    return sql_engine(conn_id, route="orders", setting="source.connection", error_class=error_class)


def _database_of(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA database_list").fetchone()[2]


@pytest.mark.parametrize(
    "uri_of",
    [
        pytest.param(lambda p: f"sqlite:///{p}", id="path-in-schema"),
        pytest.param(lambda p: "sqlite://" + str(p).replace("/", "%2F"), id="path-in-host"),
        pytest.param(lambda p: json.dumps({"conn_type": "sqlite", "host": str(p)}), id="json"),
    ],
)
def test_sqlite_connection_forms_open_the_file(
    uri_of, tmp_path: Path, define_conn: DefineConn
) -> None:
    path = tmp_path / "x.db"
    engine = _engine(define_conn(uri_of(path)))
    assert engine.url.drivername == "sqlite"
    assert _database_of(engine) == str(path)


def test_sqlite_relative_path_is_relative_to_cwd(
    tmp_path: Path, define_conn: DefineConn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = _engine(define_conn("sqlite:///relative.db"))
    assert _database_of(engine) == str(tmp_path / "relative.db")


def test_engine_is_cached_per_connection(tmp_path: Path, define_conn: DefineConn) -> None:
    conn_id = define_conn(f"sqlite:///{tmp_path}/x.db")
    assert _engine(conn_id) is _engine(conn_id)


def test_missing_connection_names_route_setting_and_remedy() -> None:
    with pytest.raises(DestinationError) as raised:
        sql_engine(
            "dwh_missing",
            route="orders",
            setting="destinations.eu.connection",
            error_class=DestinationError,
        )
    message = str(raised.value)
    assert "'orders'" in message
    assert "destinations.eu.connection" in message
    assert "'dwh_missing'" in message
    assert "airflow connections add dwh_missing --conn-uri" in message
    assert "AIRFLOW_CONN_DWH_MISSING" in message


def test_unsupported_connection_type_lists_supported(define_conn: DefineConn) -> None:
    conn_id = define_conn("http://example.com")
    with pytest.raises(SourceError, match=r"type 'http'; supported types: sqlite, postgres, mysql"):
        _engine(conn_id)


def test_misconfigured_provider_extra_is_reported(define_conn: DefineConn) -> None:
    conn_id = define_conn("postgres://postgres@127.0.0.1:5432/test?sqlalchemy_scheme=mysql")
    with pytest.raises(SourceError, match=rf"'{conn_id}' is misconfigured: .*sqlalchemy_scheme"):
        _engine(conn_id)


@pytest.mark.parametrize(
    ("uri", "driver_says"),
    [
        ("postgres://postgres@127.0.0.1:1/test", "connection"),
        ("mysql://root@127.0.0.1:1/test", "Can't connect"),
    ],
)
def test_unreachable_server_is_a_retriable_error(
    uri: str, driver_says: str, define_conn: DefineConn
) -> None:
    conn_id = define_conn(uri)
    with pytest.raises(SourceUnavailableError) as raised:
        _engine(conn_id)
    message = str(raised.value)
    assert isinstance(raised.value, RetriableError)
    assert f"route 'orders': cannot connect to source.connection '{conn_id}'" in message
    assert "127.0.0.1:1:" in message
    assert driver_says in message
    assert "check that the server is running" in message  # the remedy


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("sqlite://", id="uri"),
        pytest.param("sqlite:///", id="uri-with-slash"),
        pytest.param(json.dumps({"conn_type": "sqlite"}), id="json"),
    ],
)
def test_sqlite_connection_without_a_path_is_refused(uri: str, define_conn: DefineConn) -> None:
    """Not SQLite's in-memory database, where delivered rows would vanish."""
    conn_id = define_conn(uri)
    with pytest.raises(DestinationError) as raised:
        _engine(conn_id, DestinationError)
    message = str(raised.value)
    assert not isinstance(raised.value, RetriableError)
    assert f"route 'orders': source.connection {conn_id!r}" in message
    assert "sqlite connection without a database file path" in message
    assert "throwaway in-memory database" in message
    assert f"airflow connections add {conn_id} --conn-uri sqlite:////absolute/path" in message
    assert '"host": "/absolute/path/to/file.db"' in message


def test_unopenable_sqlite_file_is_a_destination_error(define_conn: DefineConn) -> None:
    conn_id = define_conn("sqlite:////nonexistent/dir/x.db")
    with pytest.raises(DestinationUnavailableError, match="unable to open database file"):
        _engine(conn_id, DestinationError)


def test_failed_engine_is_not_cached(
    tmp_path: Path, define_conn: DefineConn, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = define_conn(f"sqlite:///{tmp_path}/missing/x.db")
    with pytest.raises(SourceError):
        _engine(conn_id)
    (tmp_path / "missing").mkdir()
    assert _engine(conn_id).url.database == f"{tmp_path}/missing/x.db"


@pytest.mark.integration
def test_postgres_uses_the_provider_url(postgres_uri: str, define_conn: DefineConn) -> None:
    engine = _engine(define_conn(postgres_uri))
    assert engine.url.drivername.startswith("postgresql+psycopg")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_mysql_and_mariadb_use_pymysql(
    scheme: str, mysql_admin: sa.Engine, define_conn: DefineConn
) -> None:
    url = mysql_admin.url
    engine = _engine(define_conn(f"{scheme}://root@{url.host}:{url.port}/{url.database}"))
    assert engine.url.drivername == "mysql+pymysql"
    assert engine.url.query["charset"] == "utf8mb4"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
