"""The ``database`` destination: writes records as rows of a SQL table (SQLite, PostgreSQL, MySQL).

- A missing table is created from a first pass over all the records (see ``infer_kinds``):
  ``int`` → BIGINT, ``float`` → DOUBLE, ``bool`` → BOOLEAN, ``str`` → TEXT (VARCHAR(255) for key
  columns, so MySQL can index them), dict/list → TEXT holding JSON, only nulls → TEXT;
  ``columns`` overrides per column (``json`` → the dialect's JSON type, ``datetime`` →
  TIMESTAMP, stored in UTC). ``key`` columns are the primary key. The table is created before
  any transaction (MySQL commits DDL implicitly), so a failed delivery can leave it behind,
  empty, for the retry.
- A record field the table has no column for is an error (the table is never altered). A
  field missing from a record is not written: the column's default on insert, unchanged on upsert.
- In a route run (``open_batches``), ``insert`` and ``upsert`` write each batch of
  ``batch_size`` records in its own transaction, and the delivery ledger skips the batches
  already written when a task is retried (DESIGN.md, "Data flow" step 3). ``insert`` also
  writes a marker row (``_dataflow_batches``, same schema as the table) in the batch's
  transaction, so a batch whose ledger entry stayed "sending" (the process died around the
  COMMIT) is recognised as written instead of inserted twice; ``upsert`` is idempotent by
  itself. ``replace`` deletes every row, then inserts the records, all in ONE transaction
  (``deliver``), so readers never see a half-replaced table; a delivery without records
  changes nothing. ``upsert`` uses the dialect's ``ON CONFLICT DO UPDATE`` / ``ON DUPLICATE KEY
  UPDATE`` on ``key`` (records sharing a key within a batch merge, the later fields winning).
- ``deliver`` (used directly, without the ledger) writes any mode in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    DeliveryResult,
    Destination,
    DestinationSettings,
)
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.hooks.sql import (
    connect,
    driver_message,
    is_disconnect,
    sql_engine,
    unavailable_error_class,
)

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ColumnKind = Literal["int", "float", "str", "bool", "json", "datetime"]
Record = dict[str, Any]
Converter = Callable[[Any], Any]

_KEY_STRING_LENGTH = 255
MARKER_TABLE = "_dataflow_batches"
MARKER_RETENTION = dt.timedelta(days=7)
_NOTHING_WRITTEN = "nothing was written"
_BATCH_ROLLED_BACK = (
    "this batch's transaction was rolled back; the batches before it are written, "
    "and a retry skips them (delivery ledger)"
)
_ROLLED_BACK = (
    "the delivery's single transaction was rolled back: nothing was written, "
    "a retry re-sends every record"
)


class DatabaseSettings(DestinationSettings):
    """Settings of ``{type: database}``: the table records are written to, and how."""

    type: Literal["database"]
    connection: str = Field(min_length=1, description="Airflow connection id")
    table: str = Field(description="table name, optionally schema.table")
    mode: Literal["insert", "upsert", "replace"] = "insert"
    key: list[str] = Field(default_factory=list, description="key columns (primary key)")
    columns: dict[str, ColumnKind] | None = Field(
        default=None, description="explicit column types for a table this destination creates"
    )
    batch_size: int = Field(default=1000, ge=1)

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(IDENTIFIER.match(part) for part in parts):
            raise ValueError(
                f"table {value!r} must be NAME or SCHEMA.NAME, each part matching "
                f"{IDENTIFIER.pattern}"
            )
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: list[str]) -> list[str]:
        _check_identifiers(value, "key")
        if len(set(value)) != len(value):
            raise ValueError(f"key {value} names a column twice")
        return value

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, ColumnKind] | None) -> dict[str, ColumnKind] | None:
        _check_identifiers(list(value or ()), "columns")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> DatabaseSettings:
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode upsert needs key: the columns that identify a row")
        return self

    @property
    def schema_name(self) -> str | None:
        return self.table.split(".")[0] if "." in self.table else None

    @property
    def table_name(self) -> str:
        return self.table.rsplit(".", 1)[-1]


def _check_identifiers(names: list[str], setting: str) -> None:
    bad = [name for name in names if not IDENTIFIER.match(name)]
    if bad:
        raise ValueError(f"{setting}: {', '.join(map(repr, bad))} must match {IDENTIFIER.pattern}")


class DatabaseDestination(Destination):
    """Writes records to ``table`` of the database of Airflow connection ``connection``."""

    settings_model: ClassVar[type[DestinationSettings]] = DatabaseSettings
    settings: DatabaseSettings

    def target(self) -> str:
        return f"{self.settings.connection}:{self.settings.table}"

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender | None:
        """Batch-by-batch writing for ``insert`` and ``upsert`` (see the module docstring).

        ``replace`` returns ``None``: it is one transaction, through ``deliver``.
        """
        if self.settings.mode == "replace":
            return None
        engine = self._engine()
        if next(iter(batches), None) is None:
            return _NothingToSend()
        table = self._table(engine, batches)
        markers = _Markers(engine, self) if self.settings.mode == "insert" else None
        writer = _Writer(
            table, engine.dialect.name, self.settings.mode, self.settings.key, self._where()
        )
        conn = connect(
            engine,
            self.settings.connection,
            route=self.context.route,
            setting=self._setting("connection"),
            error_class=DestinationError,
        )
        return _TableBatchSender(self, conn, writer, markers)

    def _engine(self) -> sa.Engine:
        return sql_engine(
            self.settings.connection,
            route=self.context.route,
            setting=self._setting("connection"),
            error_class=DestinationError,
        )

    def deliver(self, batches: Iterable[list[Record]]) -> DeliveryResult:
        """Writes every record of ``batches`` in one transaction (see the module docstring).

        ``batches`` is read twice when the table must be created (once to infer its columns);
        a one-shot iterator is therefore read into memory first.
        """
        engine = self._engine()
        if iter(batches) is batches:
            batches = list(batches)
        chunks = rechunk(batches, self.settings.batch_size)
        first = next(chunks, None)
        result = DeliveryResult(locations=[f"{self.settings.connection}:{self.settings.table}"])
        if first is None:
            log.info("no records for %s: table %s left as it is", self.name, self.settings.table)
            return result
        table = self._table(engine, batches)
        writer = _Writer(
            table, engine.dialect.name, self.settings.mode, self.settings.key, self._where()
        )
        result.delivered = self._write(engine, writer, _prepend(first, chunks))
        log.info("delivered %d records to %s", result.delivered, result.locations[0])
        return result

    def _write(self, engine: sa.Engine, writer: _Writer, chunks: Iterator[list[Record]]) -> int:
        """All ``chunks`` in one transaction: committed together or not at all."""
        conn = connect(
            engine,
            self.settings.connection,
            route=self.context.route,
            setting=self._setting("connection"),
            error_class=DestinationError,
        )
        delivered = 0
        step = "starting the transaction"
        try:
            with conn, conn.begin():
                if self.settings.mode == "replace":
                    step = "deleting the existing rows"
                    conn.execute(writer.table.delete())
                for chunk in chunks:
                    step = f"writing records {delivered}-{delivered + len(chunk) - 1}"
                    delivered += writer.write(conn, chunk, delivered)
                step = f"committing the {delivered} records"
        except sa.exc.SQLAlchemyError as exc:
            if step.startswith("committing") and is_disconnect(exc):
                outcome = (
                    "the connection was lost during COMMIT, so whether the database committed "
                    "the delivery is unknown; check the table before re-running"
                )
            else:
                outcome = _ROLLED_BACK
            raise self._error(exc, f"{step} failed", outcome) from exc
        except DestinationError as exc:  # a record the table cannot take
            raise type(exc)(f"{exc}; {_ROLLED_BACK}") from exc
        return delivered

    def _error(
        self, exc: sa.exc.SQLAlchemyError, what: str, outcome: str | None = None
    ) -> DestinationError:
        """``exc`` as a DestinationError (retriable when the connection was lost)."""
        error_class = unavailable_error_class(DestinationError) if is_disconnect(exc) else None
        message = f"{self._where()}: {what}: {driver_message(exc)}"
        if outcome:
            message += f"; {outcome}"
        return (error_class or DestinationError)(message)

    def _table(self, engine: sa.Engine, batches: Iterable[list[Record]]) -> sa.Table:
        try:
            table = reflect_table(engine, self.settings.schema_name, self.settings.table_name)
            if table is None:
                table = self._create_table(engine, batches)
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, "cannot read or create the table", _NOTHING_WRITTEN) from exc
        self._check_key(table)
        return table

    def _create_table(self, engine: sa.Engine, batches: Iterable[list[Record]]) -> sa.Table:
        records = (record for batch in batches for record in batch)
        kinds = infer_kinds(records, self.settings.key, self.settings.columns or {})
        table = build_table(
            self.settings.schema_name, self.settings.table_name, kinds, self.settings.key
        )
        table.metadata.create_all(engine, checkfirst=True)
        log.info("created table %s with columns %s", self.settings.table, kinds)
        return table

    def _check_key(self, table: sa.Table) -> None:
        key = self.settings.key
        missing = [name for name in key if name not in table.c]
        if missing:
            raise DestinationError(
                f"{self._where()}: key column(s) {', '.join(missing)} not in the table"
            )
        if self.settings.mode == "upsert" and not has_unique_key(table, key):
            raise DestinationError(
                f"{self._where()}: mode upsert needs a primary key or unique index on "
                f"({', '.join(key)}), the table has none"
            )

    def _setting(self, name: str) -> str:
        return f"destinations.{self.name}.{name}"

    def _where(self) -> str:
        return (
            f"route {self.context.route!r}: destination {self.name!r} "
            f"(table {self.settings.table!r} on {self.settings.connection!r})"
        )


class _NothingToSend(BatchSender):
    """A delivery without records: no table is created, nothing is written."""

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> None:
        raise AssertionError("no batches to send")  # pragma: no cover


class _Markers:
    """Marker rows in the destination database: one per batch written by ``insert``.

    Written in the batch's own transaction, so "the marker exists" is "the batch is written".
    Markers older than ``MARKER_RETENTION`` are removed when a delivery starts.
    """

    def __init__(self, engine: sa.Engine, destination: DatabaseDestination) -> None:
        self.route = destination.context.route
        self.name = destination.name
        self.table_name = destination.settings.table
        self.table = sa.Table(
            MARKER_TABLE,
            sa.MetaData(),
            sa.Column("batch_key", sa.String(64), primary_key=True),
            sa.Column("token", sa.String(250), primary_key=True),
            sa.Column("route", sa.String(250), nullable=False),
            sa.Column("destination", sa.String(250), nullable=False),
            sa.Column("target_table", sa.String(250), nullable=False),
            sa.Column("records", sa.Integer, nullable=False),
            sa.Column("written_at", sa.DateTime(), nullable=False),
            schema=destination.settings.schema_name,
        )
        try:
            self.table.create(engine, checkfirst=True)
            with engine.begin() as conn:
                conn.execute(
                    self.table.delete().where(
                        (self.table.c.route == self.route)
                        & (self.table.c.destination == self.name)
                        & (self.table.c.written_at < _utc_now() - MARKER_RETENTION)
                    )
                )
        except sa.exc.SQLAlchemyError as exc:
            raise destination._error(
                exc, f"cannot create or clean the marker table {MARKER_TABLE}", _NOTHING_WRITTEN
            ) from exc

    def add(self, conn: sa.Connection, key: str, token: str, records: int) -> None:
        conn.execute(
            self.table.insert().values(
                batch_key=key,
                token=token,
                route=self.route,
                destination=self.name,
                target_table=self.table_name,
                records=records,
                written_at=_utc_now(),
            )
        )

    def has(self, conn: sa.Connection, key: str, token: str) -> bool:
        query = sa.select(sa.literal(1)).where(
            (self.table.c.batch_key == key) & (self.table.c.token == token)
        )
        return conn.execute(query).first() is not None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class _TableBatchSender(BatchSender):
    """Writes each batch in its own transaction (with its marker row in ``insert`` mode)."""

    def __init__(
        self,
        destination: DatabaseDestination,
        conn: sa.Connection,
        writer: _Writer,
        markers: _Markers | None,
    ) -> None:
        self.destination = destination
        self.conn = conn
        self.writer = writer
        self.markers = markers

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> None:
        step = f"writing records {offset}-{offset + len(batch) - 1}"
        try:
            with self.conn.begin():
                self.writer.write(self.conn, batch, offset)
                if self.markers is not None:
                    self.markers.add(self.conn, key, token, len(batch))
                step = f"committing records {offset}-{offset + len(batch) - 1}"
        except sa.exc.SQLAlchemyError as exc:
            if step.startswith("committing") and is_disconnect(exc):
                outcome = "the connection was lost during COMMIT; a retry " + (
                    "checks the batch's marker row and writes it only if it is missing"
                    if self.markers is not None
                    else "upserts the batch again, which changes nothing if it was committed"
                )
            else:
                outcome = _BATCH_ROLLED_BACK
            raise self.destination._error(exc, f"{step} failed", outcome) from exc
        except DestinationError as exc:  # a record the table cannot take
            raise type(exc)(f"{exc}; {_BATCH_ROLLED_BACK}") from exc

    def received(self, key: str, token: str) -> bool:
        if self.markers is None:
            return False
        try:
            return self.markers.has(self.conn, key, token)
        except sa.exc.SQLAlchemyError as exc:
            raise self.destination._error(exc, "cannot read the marker table") from exc
        finally:
            if self.conn.in_transaction():
                self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


class _Writer:
    """Turns chunks of records into INSERT/upsert executions on one table."""

    def __init__(
        self, table: sa.Table, dialect: str, mode: str, key: list[str], where: str
    ) -> None:
        self.table = table
        self.dialect = dialect
        self.mode = mode
        self.key = key
        self.where = where
        self.converters = {column.name: converter(column, dialect) for column in table.columns}

    def write(self, conn: sa.Connection, chunk: list[Record], offset: int) -> int:
        """Writes ``chunk`` (records ``offset`` onwards) and returns how many records it held."""
        rows = [self._row(record, offset + index) for index, record in enumerate(chunk)]
        if self.mode == "upsert":
            rows = merge_by_key(rows, self.key)
        for fields, group in group_by_fields(rows).items():
            conn.execute(self._statement(fields), group)
        return len(chunk)

    def _row(self, record: Record, index: int) -> Record:
        unknown = [field for field in record if field not in self.converters]
        if unknown:
            raise DestinationError(
                f"{self.where}: record {index} has field(s) "
                f"{', '.join(map(repr, unknown))} that are not columns of the table; add the "
                f"columns or drop the fields with a transform"
            )
        missing_key = [name for name in self.key if record.get(name) is None]
        if self.mode == "upsert" and missing_key:
            raise DestinationError(
                f"{self.where}: record {index} has no value for key "
                f"column(s) {', '.join(missing_key)}"
            )
        try:
            return {field: self.converters[field](value) for field, value in record.items()}
        except (TypeError, ValueError) as exc:
            raise DestinationError(
                f"{self.where}: record {index} has a value the table cannot take: {exc}"
            ) from exc

    def _statement(self, fields: tuple[str, ...]) -> sa.Executable:
        if self.mode != "upsert":
            return self.table.insert()
        return upsert_statement(self.table, fields, self.key, self.dialect)


def rechunk(batches: Iterable[list[Record]], size: int) -> Iterator[list[Record]]:
    """The records of ``batches`` regrouped into lists of ``size`` (the last may be shorter)."""
    chunk: list[Record] = []
    for batch in batches:
        for record in batch:
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _prepend(first: list[Record], rest: Iterator[list[Record]]) -> Iterator[list[Record]]:
    yield first
    yield from rest


def reflect_table(engine: sa.Engine, schema: str | None, name: str) -> sa.Table | None:
    """The existing table ``schema.name``, or ``None`` when there is none."""
    if not sa.inspect(engine).has_table(name, schema=schema):
        return None
    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
    for column in table.columns:
        if isinstance(column.type, sa.JSON):
            column.type.none_as_null = True  # a missing value is SQL NULL, not JSON 'null'
    return table


def infer_kinds(
    records: Iterable[Record], key: list[str], explicit: dict[str, ColumnKind]
) -> dict[str, str]:
    """Column kinds from the values of ALL ``records`` (streamed; one pass).

    One column per field of any record, key columns first, then in first-seen order (a field
    first seen in the last record still gets a column). A field's kind is that of its non-null
    values: ``bool``, ``int``, ``float``, ``str`` or ``json_text`` (dict/list). Values mixing
    ``int`` and ``float`` make ``float``; any other mix (e.g. ``int`` and ``str``, ``bool`` and
    ``int``, ``str`` and a dict) makes ``str``, a TEXT column holding strings as they are and
    other values as JSON text (``5``, ``true``, ``{"a": 1}``). Only nulls make ``str``.
    ``explicit`` (the ``columns`` setting) wins, and adds columns no record has.
    """
    seen: dict[str, set[str]] = {name: set() for name in key}
    for record in records:
        for field, value in record.items():
            kinds = seen.setdefault(field, set())
            if value is not None:
                kinds.add(_kind_of(value))
    for name in explicit:
        seen.setdefault(name, set())
    return {name: explicit.get(name) or _merge_kinds(kinds) for name, kinds in seen.items()}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict | list):
        return "json_text"
    return "str"


def _merge_kinds(kinds: set[str]) -> str:
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds == {"int", "float"}:
        return "float"
    return "str"  # none (only nulls) or incompatible kinds: text


def build_table(schema: str | None, name: str, kinds: dict[str, str], key: list[str]) -> sa.Table:
    """A ``Table`` with one column per kind; ``key`` columns form the primary key."""
    columns = [
        sa.Column(
            column,
            _column_type(kind, is_key=column in key),
            primary_key=column in key,
            autoincrement=False,
        )
        for column, kind in kinds.items()
    ]
    return sa.Table(name, sa.MetaData(), *columns, schema=schema)


def _column_type(kind: str, *, is_key: bool) -> sa.types.TypeEngine[Any]:
    if kind == "int":
        return sa.BigInteger()
    if kind == "float":
        return sa.Double()
    if kind == "bool":
        return sa.Boolean()
    if kind == "datetime":  # MySQL DATETIME keeps whole seconds unless given fsp
        return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if is_key:
        return sa.String(_KEY_STRING_LENGTH)
    if kind == "json":
        return sa.JSON(none_as_null=True)
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # TEXT is 64 KB there


def has_unique_key(table: sa.Table, key: list[str]) -> bool:
    """Whether the table's primary key, a unique constraint or a unique index is exactly ``key``."""
    wanted = set(key)
    candidates = [{column.name for column in table.primary_key.columns}]
    candidates += [
        {column.name for column in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    candidates += [
        {column.name for column in index.columns} for index in table.indexes if index.unique
    ]
    return wanted in candidates


def merge_by_key(rows: list[Record], key: list[str]) -> list[Record]:
    """One row per key value, later fields winning (what sequential upserts would leave)."""
    merged: dict[tuple[Any, ...], Record] = {}
    for row in rows:
        ident = tuple(row[name] for name in key)
        merged[ident] = {**merged[ident], **row} if ident in merged else row
    return list(merged.values())


def group_by_fields(rows: list[Record]) -> dict[tuple[str, ...], list[Record]]:
    """Rows grouped by their field names, so each group is one executemany."""
    groups: dict[tuple[str, ...], list[Record]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def upsert_statement(
    table: sa.Table, fields: tuple[str, ...], key: list[str], dialect: str
) -> sa.Executable:
    """INSERT that updates ``fields`` (except the key) of the row whose ``key`` already exists.

    On MySQL/MariaDB, ``ON DUPLICATE KEY UPDATE`` fires on any unique key of the table.
    """
    updates = [field for field in fields if field not in key]
    if dialect in ("sqlite", "postgresql"):
        dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = dialect_insert(table)
        if not updates:
            return statement.on_conflict_do_nothing(index_elements=key)
        return statement.on_conflict_do_update(
            index_elements=key, set_={name: statement.excluded[name] for name in updates}
        )
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update(
            {name: statement.inserted[name] for name in updates or key[:1]}
        )
    raise DestinationError(f"mode upsert is not supported on {dialect}")


def converter(column: sa.Column[Any], dialect: str) -> Converter:
    """How a record value becomes a bound parameter of ``column``."""
    column_type = column.type
    if isinstance(column_type, sa.JSON):
        return _identity
    if isinstance(column_type, sa.DateTime):
        aware = bool(column_type.timezone) and dialect == "postgresql"
        return partial(_to_datetime, aware=aware)
    if isinstance(column_type, sa.Date):
        return _to_date
    if isinstance(column_type, sa.String):
        return _to_text
    return _to_scalar


def _identity(value: Any) -> Any:
    return value


def _to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _to_scalar(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _to_datetime(value: Any, *, aware: bool) -> dt.datetime | None:
    """A UTC datetime (naive unless ``aware``) from a datetime, ISO 8601 string or epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    elif not isinstance(value, dt.datetime):
        raise TypeError(f"{value!r} is not a datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    return value if aware else value.replace(tzinfo=None)


def _to_date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    raise TypeError(f"{value!r} is not a date")
