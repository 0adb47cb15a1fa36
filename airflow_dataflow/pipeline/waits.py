"""The checks behind ``wait_for`` sensors, as plain functions."""

from __future__ import annotations

import logging
from typing import Any

from airflow_dataflow import storage
from airflow_dataflow.config.waits import BigQueryTableWait, FileWait, HttpWait, SqlWait
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from airflow_dataflow.templating import render_text, render_value

log = logging.getLogger(__name__)


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


HTTP_TIMEOUT_SECONDS = 30.0


def http_ready(wait: HttpWait, context: RunContext, setting: str) -> bool:
    """True when the endpoint answers 2xx; other answers and connection errors are "not yet"
    (logged with the status), so a service that is down or still loading is waited for."""
    import httpx

    variables = context.template_vars()
    url, headers = _http_target(wait, setting)
    if wait.url is not None:
        url = render_text(wait.url, variables)
    else:
        url = url.rstrip("/") + "/" + render_text(wait.endpoint, variables).lstrip("/")
    headers.update(
        {name: str(render_value(value, variables)) for name, value in wait.headers.items()}
    )
    try:
        response = httpx.request(
            wait.method, url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=True
        )
    except httpx.HTTPError as exc:
        log.info("route %r: %s %s not ready: %s", context.route, wait.method, url, exc)
        return False
    if response.is_success:
        return True
    log.info("route %r: %s %s answered %s", context.route, wait.method, url, response.status_code)
    return False


def _http_target(wait: HttpWait, setting: str) -> tuple[str, dict[str, str]]:
    """The connection's base URL and extra headers (``("", {})`` with ``url``)."""
    if wait.connection is None:
        return "", {}
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(wait.connection)
    except AirflowNotFoundException as exc:
        raise SourceError(
            f"{setting}: Airflow connection {wait.connection!r} is not defined"
        ) from exc
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    if conn.port:
        host = f"{host.rstrip('/')}:{conn.port}"
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    return host, {str(k): str(v) for k, v in extra.items() if isinstance(v, str | int | float)}


def bigquery_table_ready(wait: BigQueryTableWait, context: RunContext, setting: str) -> bool:
    """True when the (rendered) table exists; a missing table or dataset is "not yet"."""
    from google.api_core.exceptions import NotFound

    from airflow_dataflow.hooks.google import bigquery_client

    table = render_text(wait.table, context.template_vars())
    where = f"route {context.route!r}: {setting}.connection {wait.connection!r}"
    client, _ = bigquery_client(wait.connection, wait.location, where, SourceError)
    reference = table if table.count(".") == 2 else f"{client.project}.{table}"
    try:
        client.get_table(reference)
    except NotFound:
        log.info("route %r: BigQuery table %s does not exist yet", context.route, reference)
        return False
    return True
