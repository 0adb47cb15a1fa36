"""Alembic environment of the state store: runs on the connection the caller passes in."""

from __future__ import annotations

from alembic import context

from airflow_dataflow.state.schema import metadata

VERSION_TABLE = "dataflow_alembic_version"  # never Airflow's own alembic_version

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
