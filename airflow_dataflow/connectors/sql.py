"""The ``sql`` connector: streams the rows of a query as records, one key per column.

Rows are fetched through a server-side cursor (``yield_per``: a named cursor on PostgreSQL,
``SSCursor`` on MySQL/MariaDB), so memory stays bounded whatever the result size. Values become
JSON-friendly: ``Decimal`` → ``int`` when integral, else ``float``; ``date``/``datetime``/``time``
→ ISO 8601 string; ``timedelta`` → seconds (``float``); ``bytes`` → base64 string (standard
alphabet, padded); ``UUID`` and any other non-JSON type → ``str``.

With ``cursor: {column, initial}`` the source is incremental: the query is wrapped as
``SELECT * FROM (<query>) AS ... WHERE <column> > :<cursor> ORDER BY <column>`` (no ``WHERE``
when there is no start value), the start value bound as a parameter; the candidate new cursor
is the greatest (last) non-NULL value of the column read, as staged (after ``json_value``).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from airflow_dataflow.connectors.base import (
    BadRecord,
    Connector,
    ConnectorSettings,
    Cursor,
    CursorSpec,
    JsonScalar,
    SourceWarning,
    is_cursor_value,
)
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
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CURSOR_ALIAS = "dataflow_rows"
CURSOR_PARAMETER = "dataflow_cursor"
# SQLSTATEs of a cursor value the column cannot be compared with (PostgreSQL): bad text for the
# type (22P02, 22007), out of range (22003, 22008), no such operator (42883), type mismatch (42804).
_COMPARISON_STATES = frozenset({"22P02", "22007", "22003", "22008", "42883", "42804"})


def _plain_column(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a plain column name (letters, digits and _, not starting with a "
            "digit); give the column an alias in the query (SELECT t.updated_at AS updated_at) "
            "and name the alias"
        )
    return value


def _initial_value(value: Any) -> JsonScalar:
    """A string, a finite number, a boolean or null; YAML's unquoted dates become ISO strings
    (the form rows are staged in)."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if value is not None and not is_cursor_value(value):
        raise ValueError(f"must be a string or a number (a cursor value), not {value!r}")
    return value


class SqlCursor(BaseModel):
    """``cursor: {column, initial}``: read only rows whose column is greater than the cursor."""

    model_config = ConfigDict(extra="forbid")
    column: Annotated[str, AfterValidator(_plain_column)] = Field(
        description="a column of the query's result, as the records name it (a plain name)",
        json_schema_extra={"pattern": _IDENTIFIER.pattern},
    )
    initial: Annotated[
        JsonScalar,
        PlainValidator(_initial_value),
        WithJsonSchema({"type": ["string", "number", "boolean", "null"]}),
    ] = Field(
        default=None,
        description="where the first run starts (rows greater than it); omitted: every row. "
        "Its type (number or string) is the type every cursor value must have",
    )


class SqlSettings(ConnectorSettings):
    """Settings of ``source: {type: sql}``; the query names its parameters as ``:name``."""

    type: Literal["sql"]
    connection: str = Field(min_length=1, description="Airflow connection id")
    query: str = Field(min_length=1, description="SQL query; parameters as :name")
    parameters: Annotated[dict[str, Any], AfterValidator(check_templates)] = Field(
        default_factory=dict,
        description="values of the query's :name parameters (bound; may be templates like {{ params.x }})",
    )
    cursor: SqlCursor | None = Field(
        default=None,
        description="incremental reads: only rows whose column is greater than the last "
        "committed value (or initial), in the column's order",
    )

    def cursor_spec(self) -> CursorSpec | None:
        if self.cursor is None:
            return None
        return CursorSpec(field=self.cursor.column, initial=self.cursor.initial)

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


def cursor_parameter_name(taken: Collection[str]) -> str:
    """A bound-parameter name for the cursor value that none of the user's parameters has."""
    name, number = CURSOR_PARAMETER, 1
    while name in taken:
        number += 1
        name = f"{CURSOR_PARAMETER}_{number}"
    return name


def cursor_query(query: str, column: str, parameter: str | None) -> str:
    """``query`` wrapped to keep rows whose ``column`` (quoted SQL) is > ``:parameter``, in order.

    Without ``parameter`` (no start value) every row is kept, still in the column's order. A
    trailing ``;`` is dropped and the query kept on its own lines (a trailing ``--`` comment
    stays harmless).
    """
    inner = query.strip().rstrip(";").rstrip()
    where = f" WHERE {column} > :{parameter}" if parameter else ""
    return f"SELECT * FROM (\n{inner}\n) AS {CURSOR_ALIAS}{where} ORDER BY {column}"


class SqlConnector(Connector):
    """Reads the rows of ``query`` from the database of Airflow connection ``connection``."""

    settings_model: ClassVar[type[ConnectorSettings]] = SqlSettings
    settings: SqlSettings

    def bound_parameters(self) -> dict[str, Any]:
        """The parameters with templates rendered once for this run (values stay bound, never SQL)."""
        return render_value(self.settings.parameters, self.context.template_vars())

    def run_cursor(self) -> Cursor | None:
        """The cursor handed in at extract; without one, a cursor starting at ``initial``."""
        spec = self.settings.cursor_spec()
        if spec is None:
            return None
        return self.cursor or Cursor(spec.field, start=spec.initial)

    def statement(self, dialect: sa.Dialect, cursor: Cursor | None) -> tuple[str, dict[str, Any]]:
        """The SQL to run and its bound parameters (the query wrapped when there is a cursor)."""
        parameters = self.bound_parameters()
        if cursor is None:
            return self.settings.query, parameters
        column = dialect.identifier_preparer.quote_identifier(cursor.field)
        if cursor.start is None:
            return cursor_query(self.settings.query, column, None), parameters
        taken = {*parameters, *query_parameter_names(self.settings.query)}
        name = cursor_parameter_name(taken)
        return cursor_query(self.settings.query, column, name), {**parameters, name: cursor.start}

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
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
        cursor = self.run_cursor()
        query, parameters = self.statement(engine.dialect, cursor)
        count = nulls = 0
        try:
            with conn:
                result = conn.execution_options(yield_per=FETCH_SIZE).execute(
                    sa.text(query), parameters
                )
                columns = _column_names(list(result.keys()), self.context.route)
                if cursor is not None:
                    self._check_cursor_column(cursor, columns)
                for row in result:
                    count += 1
                    record = dict(zip(columns, map(json_value, row), strict=True))
                    if cursor is not None:
                        value = record[cursor.field]
                        nulls += value is None
                        cursor.advance(value)  # rows come in cursor order: the last is greatest
                    yield record
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, count, cursor) from exc
        log.info("read %d rows from %s", count, self.settings.connection)
        if cursor is not None and nulls:
            yield SourceWarning(_nulls_warning(cursor, nulls))

    def _check_cursor_column(self, cursor: Cursor, columns: list[str]) -> None:
        """The cursor column must be a column of the result, spelt as the records name it.

        (SQLite takes an unknown double-quoted name for a string, so the query alone would not
        fail.)
        """
        if cursor.field not in columns:
            raise SourceError(
                f"route {self.context.route!r}: source.cursor.column {cursor.field!r} is not a "
                f"column of the query's result (columns: {', '.join(columns)}); name it as the "
                "records do (same spelling and case)"
            )

    def _error(self, exc: sa.exc.SQLAlchemyError, count: int, cursor: Cursor | None) -> SourceError:
        where = f"route {self.context.route!r}: source.query on {self.settings.connection!r}"
        if is_disconnect(exc):
            return unavailable_error_class(SourceError)(
                f"{where} lost its connection after {count} rows: {driver_message(exc)}"
            )
        if cursor is not None and _cursor_refused(exc, count, cursor):
            return SourceError(self._comparison_message(exc, cursor))
        return SourceError(f"{where} failed after {count} rows: {driver_message(exc)}")

    def _comparison_message(self, exc: sa.exc.SQLAlchemyError, cursor: Cursor) -> str:
        from airflow_dataflow.state.cursors import reset_remedy

        return (
            f"route {self.context.route!r}: source.query on {self.settings.connection!r} failed "
            f"reading after the cursor value {cursor.start!r} of source.cursor.column "
            f"{cursor.field!r}: {driver_message(exc)}. The database refused a value for its "
            f"type: when it is the cursor value, the committed cursor is wrong. "
            f"{reset_remedy(self.context.route)}"
        )


def _nulls_warning(cursor: Cursor, nulls: int) -> str:
    return (
        f"source.cursor.column {cursor.field!r} was NULL in {nulls} rows: they were read this "
        "time, but a NULL is never greater than a cursor, so later runs will not read such rows "
        "(give the column a value, e.g. COALESCE in the query)"
    )


def _cursor_refused(exc: sa.exc.SQLAlchemyError, count: int, cursor: Cursor) -> bool:
    """Whether the query failed at once refusing a value for its type, a cursor value bound."""
    if count or cursor.start is None:
        return False
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(exc, sa.exc.DataError) or state in _COMPARISON_STATES


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
