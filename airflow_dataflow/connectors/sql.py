"""The ``sql`` connector: streams the rows of a query as records, one key per column.

Rows are fetched through a server-side cursor (``yield_per``: a named cursor on PostgreSQL,
``SSCursor`` on MySQL/MariaDB), so memory stays bounded whatever the result size. Values become
JSON-friendly: ``Decimal`` → ``int`` when integral, else ``float``; ``date``/``datetime``/``time``
→ ISO 8601 string; ``timedelta`` → seconds (``float``); ``bytes`` → base64 string (standard
alphabet, padded); ``UUID`` and any other non-JSON type → ``str``.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, Field, model_validator

from airflow_dataflow.connectors.base import BadRecord, Connector, ConnectorSettings
from airflow_dataflow.errors import SourceError
from airflow_dataflow.hooks.sql import (
    connect,
    driver_message,
    is_disconnect,
    sql_engine,
    unavailable_error_class,
)
from airflow_dataflow.templating import check_templates, render_value

log = logging.getLogger(__name__)

FETCH_SIZE = 1000
_JSON_SCALARS = (str, int, float, bool, type(None))


class SqlSettings(ConnectorSettings):
    """Settings of ``source: {type: sql}``; the query names its parameters as ``:name``."""

    type: Literal["sql"]
    connection: str = Field(min_length=1, description="Airflow connection id")
    query: str = Field(min_length=1, description="SQL query; parameters as :name")
    parameters: Annotated[dict[str, Any], AfterValidator(check_templates)] = Field(
        default_factory=dict,
        description="values of the query's :name parameters (bound; may be templates like {{ params.x }})",
    )

    @model_validator(mode="after")
    def _parameters_match_query(self) -> SqlSettings:
        used = query_parameter_names(self.query)
        missing = sorted(used - self.parameters.keys())
        unused = sorted(self.parameters.keys() - used)
        if missing:
            raise ValueError(f"query uses :{', :'.join(missing)} but parameters does not set it")
        if unused:
            raise ValueError(
                f"parameters {', '.join(unused)} not used by the query (no :name; "
                "write CAST(:name AS type), not :name::type)"
            )
        return self


def query_parameter_names(query: str) -> set[str]:
    """Names of the ``:name`` bound parameters in ``query``, as SQLAlchemy parses them."""
    return set(sa.text(query).compile().params)


class SqlConnector(Connector):
    """Reads the rows of ``query`` from the database of Airflow connection ``connection``."""

    settings_model: ClassVar[type[ConnectorSettings]] = SqlSettings
    settings: SqlSettings

    def bound_parameters(self) -> dict[str, Any]:
        """The parameters with templates rendered once for this run (values stay bound, never SQL)."""
        return render_value(self.settings.parameters, self.context.template_vars())

    def read(self) -> Iterator[Any | BadRecord]:
        engine = sql_engine(
            self.settings.connection,
            route=self.context.route,
            setting="source.connection",
            error_class=SourceError,
        )
        conn = connect(
            engine,
            self.settings.connection,
            route=self.context.route,
            setting="source.connection",
            error_class=SourceError,
        )
        count = 0
        try:
            with conn:
                result = conn.execution_options(yield_per=FETCH_SIZE).execute(
                    sa.text(self.settings.query), self.bound_parameters()
                )
                columns = _column_names(list(result.keys()), self.context.route)
                for row in result:
                    count += 1
                    yield dict(zip(columns, map(json_value, row), strict=True))
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, count) from exc
        log.info("read %d rows from %s", count, self.settings.connection)

    def _error(self, exc: sa.exc.SQLAlchemyError, count: int) -> SourceError:
        where = f"route {self.context.route!r}: source.query on {self.settings.connection!r}"
        if is_disconnect(exc):
            return unavailable_error_class(SourceError)(
                f"{where} lost its connection after {count} rows: {driver_message(exc)}"
            )
        return SourceError(f"{where} failed after {count} rows: {driver_message(exc)}")


def _column_names(columns: Sequence[str], route: str) -> list[str]:
    """The result's column names; duplicates would silently drop values, so they are refused."""
    duplicates = sorted(name for name, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise SourceError(
            f"route {route!r}: source.query returns several columns named "
            f"{', '.join(duplicates)}; give them distinct aliases (AS ...)"
        )
    return list(columns)


def json_value(value: Any) -> Any:
    """``value`` as a JSON-friendly Python value (see the module docstring)."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _decimal(value: Decimal) -> int | float:
    if value.is_finite() and value == value.to_integral_value():
        return int(value)
    return float(value)
