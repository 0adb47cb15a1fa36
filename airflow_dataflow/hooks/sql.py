"""SQLAlchemy engines from Airflow connections, for the ``sql`` source and ``database`` destination.

Provider hooks build the URL where they can (``PostgresHook.sqlalchemy_url`` honours the
provider's extras: ``sqlalchemy_scheme``, ``sqlalchemy_query``, ``iam``). The URL is built here
where they cannot:

- ``sqlite``: ``SqliteHook`` has no ``sqlalchemy_url`` and its ``get_uri`` turns a relative path
  into an absolute one. Airflow 3 parses ``sqlite:////tmp/x.db`` as ``schema='/tmp/x.db'`` (empty
  host) and ``sqlite://%2Ftmp%2Fx.db`` or a JSON connection ``{"host": "/tmp/x.db"}`` as
  ``host='/tmp/x.db'``; both are accepted: the database path is the host, else the schema. A
  connection with neither (``sqlite://``) is an error, not SQLite's in-memory database.
- ``mysql``/``mariadb``: always ``mysql+pymysql://`` (the mysql provider needs ``mysqlclient``,
  a compiled driver); extras ``charset`` (default ``utf8mb4``) and ``unix_socket`` are read.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from airflow_dataflow.errors import DestinationError, RetriableError, SourceError

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

SUPPORTED_CONN_TYPES = ("sqlite", "postgres", "mysql", "mariadb")
CONNECT_TIMEOUT_SECONDS = 10

ErrorClass = type[SourceError] | type[DestinationError]


class SourceUnavailableError(SourceError, RetriableError):
    """The source database cannot be reached: worth retrying later."""


class DestinationUnavailableError(DestinationError, RetriableError):
    """The destination database cannot be reached: worth retrying later."""


_UNAVAILABLE: dict[type[Exception], ErrorClass] = {
    SourceError: SourceUnavailableError,
    DestinationError: DestinationUnavailableError,
}

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def sql_engine(
    conn_id: str,
    *,
    route: str,
    setting: str,
    error_class: ErrorClass = SourceError,
) -> sa.Engine:
    """The engine of Airflow connection ``conn_id``, created and checked once per process.

    ``route`` and ``setting`` (e.g. ``source.connection``) only locate errors, which are raised
    as ``error_class`` (its retriable subclass when the server cannot be reached).
    """
    with _engines_lock:
        engine = _engines.get(conn_id)
        if engine is None:
            engine = _create_engine(conn_id, route=route, setting=setting, error_class=error_class)
            _engines[conn_id] = engine
    return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, or after a connection changed)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def unavailable_error_class(error_class: ErrorClass) -> ErrorClass:
    """The retriable variant of ``error_class`` used for connection failures."""
    return _UNAVAILABLE.get(error_class, error_class)


def _create_engine(conn_id: str, *, route: str, setting: str, error_class: ErrorClass) -> sa.Engine:
    conn = _get_connection(conn_id, route=route, setting=setting, error_class=error_class)
    url = _sqlalchemy_url(conn, route=route, setting=setting, error_class=error_class)
    try:
        engine = sa.create_engine(url, **_engine_kwargs(url))
    except ImportError as exc:
        raise error_class(
            f"route {route!r}: {setting} {conn_id!r} needs the database driver of "
            f"{url.drivername!r}, which is not installed ({exc})"
        ) from exc
    _check_reachable(engine, conn_id, route=route, setting=setting, error_class=error_class)
    log.info("connected to %s (%s) for route %s", conn_id, _where(engine.url), route)
    return engine


def _get_connection(
    conn_id: str, *, route: str, setting: str, error_class: ErrorClass
) -> Connection:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        env_name = "AIRFLOW_CONN_" + conn_id.upper()
        raise error_class(
            f"route {route!r}: {setting} names Airflow connection {conn_id!r}, which is not "
            f"defined; define it with `airflow connections add {conn_id} --conn-uri ...` "
            f"or the environment variable {env_name}"
        ) from exc


def _sqlalchemy_url(conn: Connection, *, route: str, setting: str, error_class: ErrorClass) -> URL:
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        return _sqlite_url(conn, route=route, setting=setting, error_class=error_class)
    if conn_type in ("mysql", "mariadb"):
        return _mysql_url(conn)
    if conn_type == "postgres":
        try:
            return _postgres_url(conn)
        except (TypeError, ValueError) as exc:
            raise error_class(
                f"route {route!r}: {setting} {conn.conn_id!r} is misconfigured: {exc}"
            ) from exc
    raise error_class(
        f"route {route!r}: {setting} {conn.conn_id!r} has connection type {conn.conn_type!r}; "
        f"supported types: {', '.join(SUPPORTED_CONN_TYPES)}"
    )


def _sqlite_url(conn: Connection, *, route: str, setting: str, error_class: ErrorClass) -> URL:
    """The database file is the host, else the schema; a connection with neither is refused.

    SQLAlchemy would open a private in-memory database for it: a destination would "succeed"
    and its rows vanish with the process, a source would read nothing.
    """
    path = conn.host or conn.schema
    if not path:
        raise error_class(
            f"route {route!r}: {setting} {conn.conn_id!r} is a sqlite connection without a "
            f"database file path, so it would use a throwaway in-memory database; give it the "
            f"file's path, e.g. `airflow connections add {conn.conn_id} --conn-uri "
            f"sqlite:////absolute/path/to/file.db` or a JSON connection "
            f'{{"conn_type": "sqlite", "host": "/absolute/path/to/file.db"}}'
        )
    return URL.create("sqlite", database=path)


def _postgres_url(conn: Connection) -> URL:
    """The provider's URL (honours its extras); a plain psycopg2 URL without the provider."""
    from airflow.sdk.exceptions import AirflowException

    try:
        url = conn.get_hook().sqlalchemy_url
    except (AirflowException, ImportError, NotImplementedError, AttributeError) as exc:
        # provider not installed ("Unknown hook type") or too old to build a URL
        log.info("no SQLAlchemy URL from the postgres provider for %s: %s", conn.conn_id, exc)
        return _plain_url("postgresql+psycopg2", conn, {})
    return url if isinstance(url, URL) else sa.make_url(url)


def _mysql_url(conn: Connection) -> URL:
    extras = conn.extra_dejson
    query = {"charset": str(extras.get("charset") or "utf8mb4")}
    if extras.get("unix_socket"):
        query["unix_socket"] = str(extras["unix_socket"])
    return _plain_url("mysql+pymysql", conn, query)


def _plain_url(drivername: str, conn: Connection, query: dict[str, str]) -> URL:
    return URL.create(
        drivername,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


def _engine_kwargs(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        return {}
    return {
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    }


def _check_reachable(
    engine: sa.Engine, conn_id: str, *, route: str, setting: str, error_class: ErrorClass
) -> None:
    try:
        connect(engine, conn_id, route=route, setting=setting, error_class=error_class).close()
    except error_class:
        engine.dispose()
        raise


def connect(
    engine: sa.Engine, conn_id: str, *, route: str, setting: str, error_class: ErrorClass
) -> sa.Connection:
    """A connection from ``engine``; failing to get one raises the retriable ``error_class``."""
    try:
        return engine.connect()
    except sa.exc.SQLAlchemyError as exc:
        raise unavailable_error_class(error_class)(
            f"route {route!r}: cannot connect to {setting} {conn_id!r} at {_where(engine.url)}: "
            f"{driver_message(exc)}; check that the server is running and reachable from the "
            f"worker, and the host, port and credentials of connection {conn_id!r}"
        ) from exc


def is_disconnect(exc: BaseException) -> bool:
    """Whether a database error means the connection was lost (worth retrying)."""
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _where(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or _default_port(url)}"


def _default_port(url: URL) -> int | str:
    return {"postgresql": 5432, "mysql": 3306}.get(url.get_backend_name(), "default port")


def driver_message(exc: BaseException) -> str:
    """The database driver's own message, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return " ".join(text.split())
