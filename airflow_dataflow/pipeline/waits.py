"""The checks behind ``wait_for`` sensors, as plain functions."""

from __future__ import annotations

from typing import Any

from airflow_dataflow import storage
from airflow_dataflow.config.waits import FileWait, SqlWait
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from airflow_dataflow.templating import render_text, render_value


def file_ready(wait: FileWait, context: RunContext) -> bool:
    """True when the (rendered) path or glob names at least one file."""
    location = render_text(wait.path, context.template_vars())
    return bool(storage.expand(storage.absolute(location, context.base_dir)))


def sql_ready(wait: SqlWait, context: RunContext, setting: str) -> bool:
    """True when the query's first cell is truthy (no row counts as false)."""
    import sqlalchemy as sa

    from airflow_dataflow.hooks.sql import connect, sql_engine

    engine = sql_engine(wait.connection, route=context.route, setting=setting)
    parameters: Any = render_value(wait.parameters, context.template_vars())
    with connect(
        engine, wait.connection, route=context.route, setting=setting, error_class=SourceError
    ) as conn:
        row = conn.execute(sa.text(wait.query), parameters).first()
    return bool(row is not None and row[0])
