"""Where the state store lives and how its schema is migrated (Alembic, shipped in the package).

The store is reached through the Airflow connection ``dataflow_state`` (PostgreSQL in
production); without it, a SQLite file ``$AIRFLOW_HOME/dataflow/state.db``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.settings import airflow_home

STATE_CONN_ID = "dataflow_state"
VERSION_TABLE = "dataflow_alembic_version"
_MIGRATIONS = Path(__file__).parent / "migrations"


class StateStoreError(DataflowError):
    """The state store cannot be reached or is not at the revision this package needs."""


@dataclass(frozen=True)
class Revision:
    """Where a state store stands: its revision, the package's head and where it lives."""

    current: str | None
    head: str
    location: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def to_dict(self) -> dict[str, object]:
        return {
            "current": self.current,
            "head": self.head,
            "up_to_date": self.up_to_date,
            "location": self.location,
        }


def default_state_url() -> str:
    return f"sqlite:///{os.path.join(airflow_home(), 'dataflow', 'state.db')}"


def state_engine() -> sa.Engine:
    """The engine of the ``dataflow_state`` connection, else of the default SQLite file."""
    if _state_connection_defined():
        from airflow_dataflow.hooks.sql import sql_engine

        return sql_engine(
            STATE_CONN_ID, route="(state store)", setting="connection", error_class=StateStoreError
        )
    url = default_state_url()
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sqlite_state_engine(url)


def sqlite_state_engine(url: str) -> sa.Engine:
    """A SQLite store several task processes can share.

    WAL lets readers and a writer work at once; ``synchronous=NORMAL`` (in WAL mode, durable
    when a process dies, not on power loss: use PostgreSQL for production); writers wait up
    to 30 s for each other instead of failing with "database is locked".
    """
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _state_connection_defined() -> bool:
    if f"AIRFLOW_CONN_{STATE_CONN_ID.upper()}" in os.environ:
        return True
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover - Airflow is a dependency
        return False
    try:
        BaseHook.get_connection(STATE_CONN_ID)
    except AirflowNotFoundException:
        return False
    except Exception:  # no metadata database to ask (fresh machine): not defined
        return False
    return True


def _alembic_config(connection: sa.Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def revisions() -> list[str]:
    """Every revision from the first to the head, in order."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def status(engine: sa.Engine) -> Revision:
    """The store's revision next to the package's head."""
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        current = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
    return Revision(current=current, head=head_revision(), location=_where(engine))


def upgrade(engine: sa.Engine, revision: str = "head") -> Revision:
    """Apply the migrations up to ``revision`` (idempotent: at head it does nothing)."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)
    return status(engine)


def _where(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
