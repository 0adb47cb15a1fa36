"""The ``database`` destination: writes records as rows of a SQL table (SQLite, PostgreSQL, MySQL).

- Fields become columns of the same name, or of the name ``column_map`` gives them.
- A missing table is created from a first pass over all the records (see ``infer_kinds``):
  ``int`` → BIGINT, ``float`` → DOUBLE, ``bool`` → BOOLEAN, ``str`` → TEXT (VARCHAR(255) for key
  columns, so MySQL can index them), dict/list → TEXT holding JSON, only nulls → TEXT;
  ``columns`` overrides per column (``json`` → the dialect's JSON type, ``datetime`` →
  TIMESTAMP, stored in UTC). ``key`` columns are the primary key. The table is created before
  any transaction (MySQL commits DDL implicitly), so a failed delivery can leave it behind,
  empty, for the retry. Column names must be identifiers (letters, digits, ``_``).
- A field the table has no column for: ``on_new_column: fail`` (default) is an error naming
  the fields; ``ignore`` drops them; ``add`` adds the columns (``ALTER TABLE ... ADD COLUMN``,
  typed like a created table's from the values of the batch where the field first appears;
  for ``replace``/``mirror`` from all the records, before the transaction). A field missing
  from a record is not written: the column's default on insert, unchanged on upsert.
- Values are converted to what their column takes (an integer column takes ``5``, ``5.0``,
  ``"5"``, ``true``; a text column takes strings as they are and other values as JSON text...);
  a record with a value its column cannot take, or (upsert, mirror) without a key value, is
  refused: it goes to the dead letters with the reason, and the rest of its batch is written.
- In a route run (``open_batches``), ``insert`` and ``upsert`` write each batch of
  ``batch_size`` records in its own transaction, and the delivery ledger skips the batches
  already written when a task is retried (DESIGN.md, "Data flow" step 3). ``insert`` also
  writes a marker row (``_dataflow_batches``, same schema as the table) in the batch's
  transaction, so a batch whose ledger entry stayed "sending" (the process died around the
  COMMIT) is recognised as written instead of inserted twice; ``upsert`` is idempotent by
  itself. ``upsert`` uses the dialect's ``ON CONFLICT DO UPDATE`` / ``ON DUPLICATE KEY
  UPDATE`` on ``key`` (records sharing a key within a batch merge, the later fields winning).
- ``replace`` and ``mirror`` are whole deliveries, ONE transaction each (``deliver``; one
  ledger entry), so readers never see a half-replaced table. ``replace`` deletes every row,
  then inserts the records. ``mirror`` upserts the records, keeps their keys in a temporary
  table, then deletes the rows whose key is not among them: the table ends up holding exactly
  the delivery's snapshot, and rows that did not change keep their identity. Both are
  idempotent, so a retry (of a transaction whose COMMIT was in doubt, too) is safe.
- On PostgreSQL (psycopg 3), large groups of rows are written with ``COPY`` (see
  ``database_sql``), in the same transaction as the batch's marker row.
- A lost connection (or one that cannot be made) is retried with ``RetryPolicy`` (backoff,
  full jitter), ``max_attempts`` in all; a batch whose COMMIT was in doubt is first looked up
  by its marker row. Then the task fails, and Airflow's task retries take over.
- ``deliver`` (used directly, without the ledger) writes any mode in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator
from functools import partial
from typing import ClassVar, Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator

from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    DeliveryResult,
    Destination,
    DestinationSettings,
    Rejection,
    rechunk,
)
from airflow_dataflow.destinations.database_rows import (
    ColumnKind,
    OnNewColumn,
    Record,
    RowBuilder,
    Rows,
    infer_kinds,
)
from airflow_dataflow.destinations.database_sql import (
    KeySet,
    TableWriter,
    add_columns,
    build_table,
    has_unique_key,
    reflect_table,
    upsert_statement,
)
from airflow_dataflow.destinations.policy import RateLimiter, RetryPolicy
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.hooks.sql import (
    connect,
    driver_message,
    is_disconnect,
    sql_engine,
    unavailable_error_class,
)

__all__ = [
    "MARKER_TABLE",
    "DatabaseDestination",
    "DatabaseSettings",
    "build_table",
    "infer_kinds",
    "reflect_table",
    "upsert_statement",
]

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's limit; MySQL's is 64
Mode = Literal["insert", "upsert", "replace", "mirror"]

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

    type: Literal["database"]  # type: ignore[assignment]
    connection: str = Field(min_length=1, description="Airflow connection id")
    table: str = Field(description="table name, optionally schema.table")
    mode: Mode = Field(
        default="insert",
        description="insert; upsert (by key); replace (the whole table, one transaction); "
        "mirror (upsert, then delete rows whose key is not delivered; one transaction)",
    )
    key: list[str] = Field(default_factory=list, description="key columns (primary key)")
    columns: dict[str, ColumnKind] | None = Field(
        default=None, description="explicit column types for columns this destination creates"
    )
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="record field -> column name; other fields keep their name",
    )
    on_new_column: OnNewColumn = Field(
        default="fail",
        description="a field the table has no column for: fail, ignore (drop it) or add "
        "(ALTER TABLE ADD COLUMN, type inferred)",
    )
    batch_size: int = Field(
        default=1000, ge=1, description="records per transaction and ledger entry"
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="attempts at a batch when the connection is lost or cannot be made "
        "(counting the first); then the task fails and Airflow retries it",
    )

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

    @field_validator("column_map")
    @classmethod
    def _check_column_map(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not name for name in value):
            raise ValueError("column_map: a field name is empty")
        _check_identifiers(list(value.values()), "column_map")
        targets = list(value.values())
        twice = sorted({name for name in targets if targets.count(name) > 1})
        if twice:
            raise ValueError(f"column_map: several fields map to column(s) {', '.join(twice)}")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> DatabaseSettings:
        if self.mode in ("upsert", "mirror") and not self.key:
            raise ValueError(f"mode {self.mode} needs key: the columns that identify a row")
        return self

    @property
    def schema_name(self) -> str | None:
        return self.table.split(".")[0] if "." in self.table else None

    @property
    def table_name(self) -> str:
        return self.table.rsplit(".", 1)[-1]


def _check_identifiers(names: list[str], setting: str) -> None:
    bad = [name for name in names if not _is_identifier(name)]
    if bad:
        raise ValueError(
            f"{setting}: {', '.join(map(repr, bad))} must match {IDENTIFIER.pattern} "
            f"(at most {MAX_IDENTIFIER_LENGTH} characters)"
        )


def _is_identifier(name: str) -> bool:
    return bool(IDENTIFIER.match(name)) and len(name) <= MAX_IDENTIFIER_LENGTH


class DatabaseDestination(Destination):
    """Writes records to ``table`` of the database of Airflow connection ``connection``."""

    settings_model: ClassVar[type[DestinationSettings]] = DatabaseSettings
    settings: DatabaseSettings

    def target(self) -> str:
        return f"{self.settings.connection}:{self.settings.table}"

    def retry_policy(self) -> RetryPolicy:
        """Retries of a lost or refused connection (``max_attempts``)."""
        return RetryPolicy(max_attempts=self.settings.max_attempts)

    # ------------------------------------------------------------------ batch by batch

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender | None:
        """Batch-by-batch writing for ``insert`` and ``upsert`` (see the module docstring).

        ``replace`` and ``mirror`` return ``None``: each is one transaction, through ``deliver``.
        """
        if self.settings.mode in ("replace", "mirror"):
            return None
        policy = self.retry_policy()
        engine, table = policy.call(partial(self._open_table, batches), what="opening the table")
        if table is None:
            return _NothingToSend()
        markers = None
        if self.settings.mode == "insert":
            markers = policy.call(partial(_Markers, engine, self), what="opening the markers")
        return _TableBatchSender(self, engine, table, markers, policy)

    # ------------------------------------------------------------------ one transaction

    def deliver(self, batches: Iterable[list[Record]]) -> DeliveryResult:
        """Writes every record of ``batches`` in one transaction (see the module docstring).

        ``batches`` is read more than once (to infer new columns, then to write); a one-shot
        iterator is therefore read into memory first.
        """
        if iter(batches) is batches:
            batches = list(batches)
        result = DeliveryResult(locations=[self.target()])
        chunks = rechunk(batches, self.settings.batch_size)
        first = next(chunks, None)
        if first is None:
            log.info("no records for %s: table %s left as it is", self.name, self.settings.table)
            return result
        policy = self.retry_policy()
        engine, table = policy.call(
            partial(self._open_table, batches, whole=True), what="opening the table"
        )
        assert table is not None  # there are records
        RateLimiter(self.settings.rate_limit).acquire()
        attempts = iter([_prepend(first, chunks)])  # the first attempt goes on reading them

        def write() -> tuple[int, list[Rejection]]:
            again = rechunk(batches, self.settings.batch_size)
            return self._write_all(engine, table, next(attempts, again))

        result.delivered, result.rejections = policy.call(
            write, what=f"the delivery to {self.settings.table}"
        )
        log.info(
            "delivered %d records to %s (%d refused)",
            result.delivered,
            result.locations[0],
            len(result.rejections),
        )
        return result

    def _write_all(
        self, engine: sa.Engine, table: sa.Table, chunks: Iterator[list[Record]]
    ) -> tuple[int, list[Rejection]]:
        """All records in one transaction: committed together or not at all."""
        conn = self._connect(engine)
        mode = self.settings.mode
        writer = TableWriter(
            table, engine.dialect, upsert=mode in ("upsert", "mirror"), key=self.settings.key
        )
        keys = KeySet(table, self.settings.key, engine.dialect.name) if mode == "mirror" else None
        write = _WholeWrite(self.rows_builder(table, engine.dialect.name), writer, keys)
        try:
            with conn:
                try:
                    writer.prepare(conn)
                    with conn.begin():
                        write.run(conn, chunks, replace=mode == "replace")
                except BaseException:
                    if keys is not None:
                        _discard(conn, keys)
                    raise
                finally:
                    writer.close(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise self._whole_error(exc, write.step) from exc
        except DestinationError as exc:  # records the table cannot take
            raise type(exc)(f"{exc}; {_ROLLED_BACK}") from exc
        if keys is not None:
            log.info("mirror: deleted %d rows whose key is no longer in the source", write.deleted)
        return write.delivered, write.rejections

    def _whole_error(self, exc: sa.exc.SQLAlchemyError, step: str) -> DestinationError:
        if not (step.startswith("committing") and is_disconnect(exc)):
            return self._error(exc, f"{step} failed", _ROLLED_BACK)
        if self.settings.mode == "insert":  # not idempotent: do not retry blindly
            return DestinationError(
                f"{self._where()}: {step} failed: {driver_message(exc)}; the connection was "
                "lost during COMMIT, so whether the database committed the delivery is "
                "unknown; check the table before re-running"
            )
        return self._error(
            exc,
            f"{step} failed",
            f"the connection was lost during COMMIT; writing the delivery again is safe "
            f"(mode {self.settings.mode} is idempotent)",
        )

    # ------------------------------------------------------------------ the table

    def _open_table(
        self, batches: Iterable[list[Record]], *, whole: bool = False
    ) -> tuple[sa.Engine, sa.Table | None]:
        """The engine, and the table (created, or given new columns), or None without records.

        ``whole`` (``deliver``, which knows there are records): new columns for all records.
        """
        engine = self._engine()
        if not whole and next((batch for batch in batches if batch), None) is None:
            return engine, None
        try:
            table = reflect_table(engine, self.settings.schema_name, self.settings.table_name)
            if table is None:
                table = self._create_table(engine, batches)
            elif whole and self.settings.on_new_column == "add":
                table = self.add_new_columns(engine, table, self._mapped(batches))
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(
                exc, "cannot read, create or alter the table", _NOTHING_WRITTEN
            ) from exc
        self._check_key(table)
        return engine, table

    def _engine(self) -> sa.Engine:
        return sql_engine(
            self.settings.connection,
            route=self.context.route,
            setting=self._setting("connection"),
            error_class=DestinationError,
        )

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        return connect(
            engine,
            self.settings.connection,
            route=self.context.route,
            setting=self._setting("connection"),
            error_class=DestinationError,
        )

    def _mapped(self, batches: Iterable[list[Record]]) -> Iterator[Record]:
        """Every record, its fields renamed by ``column_map``."""
        column_map = self.settings.column_map
        for batch in batches:
            for record in batch:
                yield {column_map.get(k, k): v for k, v in record.items()} if column_map else record

    def _create_table(self, engine: sa.Engine, batches: Iterable[list[Record]]) -> sa.Table:
        kinds = infer_kinds(self._mapped(batches), self.settings.key, self.settings.columns or {})
        self._check_new_columns(list(kinds))
        table = build_table(
            self.settings.schema_name, self.settings.table_name, kinds, self.settings.key
        )
        table.metadata.create_all(engine, checkfirst=True)
        log.info("created table %s with columns %s", self.settings.table, kinds)
        return table

    def add_new_columns(
        self, engine: sa.Engine, table: sa.Table, records: Iterable[Record]
    ) -> sa.Table:
        """``table`` with a column added for each field of ``records`` it has none for."""
        columns = {column.name for column in table.columns}
        new = [{k: v for k, v in r.items() if k not in columns} for r in records]
        explicit = {k: v for k, v in (self.settings.columns or {}).items() if k not in columns}
        kinds = {k: v for k, v in infer_kinds(new, [], {}).items() if k not in columns}
        kinds.update((k, v) for k, v in explicit.items() if k in kinds)
        if not kinds:
            return table
        self._check_new_columns(list(kinds))
        with engine.begin() as conn:
            added = add_columns(conn, table, kinds)
        log.info("added column(s) %s to table %s", added or list(kinds), self.settings.table)
        altered = reflect_table(engine, table.schema, table.name)
        return table if altered is None else altered

    def _check_new_columns(self, names: list[str]) -> None:
        bad = [name for name in names if not _is_identifier(name)]
        if bad:
            raise DestinationError(
                f"{self._where()}: field(s) {', '.join(map(repr, bad))} cannot be column names "
                f"(letters, digits and _, not starting with a digit, at most "
                f"{MAX_IDENTIFIER_LENGTH} characters); rename them with column_map or a "
                f"transform"
            )

    def _check_key(self, table: sa.Table) -> None:
        key = self.settings.key
        missing = [name for name in key if name not in table.c]
        if missing:
            raise DestinationError(
                f"{self._where()}: key column(s) {', '.join(missing)} not in the table"
            )
        if self.settings.mode in ("upsert", "mirror") and not has_unique_key(table, key):
            raise DestinationError(
                f"{self._where()}: mode {self.settings.mode} needs a primary key or unique "
                f"index on ({', '.join(key)}), the table has none"
            )

    def rows_builder(self, table: sa.Table, dialect: str) -> RowBuilder:
        return RowBuilder(
            table,
            dialect,
            key=self.settings.key,
            merge_keys=self.settings.mode in ("upsert", "mirror"),
            column_map=self.settings.column_map,
            on_new_column=self.settings.on_new_column,
            where=self._where(),
        )

    # ------------------------------------------------------------------ errors

    def _error(
        self, exc: sa.exc.SQLAlchemyError, what: str, outcome: str | None = None
    ) -> DestinationError:
        """``exc`` as a DestinationError (retriable when the connection was lost)."""
        error_class = unavailable_error_class(DestinationError) if is_disconnect(exc) else None
        message = f"{self._where()}: {what}: {driver_message(exc)}"
        if outcome:
            message += f"; {outcome}"
        return (error_class or DestinationError)(message)

    def _setting(self, name: str) -> str:
        return f"destinations.{self.name}.{name}"

    def _where(self) -> str:
        return (
            f"route {self.context.route!r}: destination {self.name!r} "
            f"(table {self.settings.table!r} on {self.settings.connection!r})"
        )


class _WholeWrite:
    """The body of a one-transaction delivery; keeps its step and counts for the caller."""

    def __init__(self, builder: RowBuilder, writer: TableWriter, keys: KeySet | None) -> None:
        self.builder = builder
        self.writer = writer
        self.keys = keys
        self.step = "starting the transaction"
        self.delivered = 0
        self.deleted = 0
        self.rejections: list[Rejection] = []

    def run(self, conn: sa.Connection, chunks: Iterator[list[Record]], *, replace: bool) -> None:
        if replace:
            self.step = "deleting the existing rows"
            conn.execute(self.writer.table.delete())
        if self.keys is not None:
            self.step = "creating the temporary table of keys"
            self.keys.create(conn)
        offset = 0
        for chunk in chunks:
            self.step = f"writing records {offset}-{offset + len(chunk) - 1}"
            rows = self.builder.build(chunk, offset)
            for group in rows.groups:
                self.writer.write(conn, group, self.keys)
            if self.keys is not None:
                self.keys.add_keys(conn, rows.refused_keys)  # refused: their rows are kept
            self.rejections += rows.rejections
            self.delivered += len(chunk) - len(rows.rejections)
            offset += len(chunk)
        if self.keys is not None:
            self.step = "deleting the rows whose key is no longer in the source"
            self.deleted = self.keys.delete_missing(conn)
            self.keys.drop(conn)
        self.step = f"committing the {self.delivered} records"


def _discard(conn: sa.Connection, keys: KeySet) -> None:
    """Drop mirror's key table after a failure (MySQL keeps temporary tables of a rollback)."""
    if conn.invalidated or conn.closed:
        return
    try:
        with conn.begin():
            keys.drop(conn)
    except sa.exc.SQLAlchemyError as exc:
        log.debug("could not drop %s: %s", keys.table.name, exc)


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
        self.insert = self.table.insert()
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
            self.insert,
            {
                "batch_key": key,
                "token": token,
                "route": self.route,
                "destination": self.name,
                "target_table": self.table_name,
                "records": records,
                "written_at": _utc_now(),
            },
        )

    def has(self, conn: sa.Connection, key: str, token: str) -> bool:
        query = sa.select(sa.literal(1)).where(
            (self.table.c.batch_key == key) & (self.table.c.token == token)
        )
        return conn.execute(query).first() is not None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class _TableBatchSender(BatchSender):
    """Writes each batch in its own transaction (with its marker row in ``insert`` mode).

    Marker rows (insert) or idempotent upserts make a batch in doubt safe, so the ledger may
    mark ``window`` batches "sending" at once.
    """

    window = 10

    def __init__(
        self,
        destination: DatabaseDestination,
        engine: sa.Engine,
        table: sa.Table,
        markers: _Markers | None,
        policy: RetryPolicy,
    ) -> None:
        self.destination = destination
        self.engine = engine
        self.markers = markers
        self.policy = policy
        self.limiter = RateLimiter(destination.settings.rate_limit)
        self.conn: sa.Connection | None = None
        self.in_doubt = False  # the last attempt lost the connection during COMMIT
        self._use(table)

    def _use(self, table: sa.Table) -> None:
        dialect = self.engine.dialect
        settings = self.destination.settings
        self.builder = self.destination.rows_builder(table, dialect.name)
        self.writer = TableWriter(
            table, dialect, upsert=settings.mode == "upsert", key=settings.key
        )

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection]:
        self.limiter.acquire()
        rows = self._rows(batch, offset)
        what = f"writing records {offset}-{offset + len(batch) - 1}"
        self.policy.call(partial(self._send_once, rows, key, token, what, len(batch)), what=what)
        return rows.rejections

    def _rows(self, batch: Batch, offset: int) -> Rows:
        """The batch's rows; with ``on_new_column: add``, its new fields become columns first."""
        if self.destination.settings.on_new_column == "add":
            mapped = self.builder.mapped(batch)
            if self.builder.unknown_fields(mapped):
                self._close_writer()
                table = self.policy.call(partial(self._add_columns, mapped), what="adding columns")
                self._use(table)
        return self.builder.build(batch, offset)

    def _add_columns(self, records: list[Record]) -> sa.Table:
        try:
            return self.destination.add_new_columns(self.engine, self.writer.table, records)
        except sa.exc.SQLAlchemyError as exc:
            raise self.destination._error(exc, "cannot add columns", _BATCH_ROLLED_BACK) from exc

    def _send_once(self, rows: Rows, key: str, token: str, what: str, records: int) -> None:
        conn = self._connection()
        if self.in_doubt and self.markers is not None and self._arrived(conn, key, token):
            self.in_doubt = False
            return
        self.in_doubt = False
        step = what
        try:
            self.writer.prepare(conn)
            with conn.begin():
                last = len(rows.groups) - 1
                for index, group in enumerate(rows.groups):
                    self.writer.write(conn, group, then_commit=index == last)
                if self.markers is not None:
                    self.markers.add(conn, key, token, records)
                step = what.replace("writing", "committing", 1)
        except sa.exc.SQLAlchemyError as exc:
            committing = step.startswith("committing")
            if is_disconnect(exc):
                self._lost()
                self.in_doubt = committing
            if committing and is_disconnect(exc):
                outcome = "the connection was lost during COMMIT; a retry " + (
                    "checks the batch's marker row and writes it only if it is missing"
                    if self.markers is not None
                    else "upserts the batch again, which changes nothing if it was committed"
                )
            else:
                outcome = _BATCH_ROLLED_BACK
            raise self.destination._error(exc, f"{step} failed", outcome) from exc

    def _connection(self) -> sa.Connection:
        if self.conn is None or self.conn.invalidated or self.conn.closed:
            self._lost()
            self.conn = self.destination._connect(self.engine)
        return self.conn

    def _lost(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _arrived(self, conn: sa.Connection, key: str, token: str) -> bool:
        assert self.markers is not None
        try:
            return self.markers.has(conn, key, token)
        except sa.exc.SQLAlchemyError as exc:
            if is_disconnect(exc):
                self._lost()
            raise self.destination._error(exc, "cannot read the marker table") from exc
        finally:
            if self.conn is not None and self.conn.in_transaction():
                self.conn.rollback()

    def received(self, key: str, token: str) -> bool:
        if self.markers is None:
            return False
        return self.policy.call(
            lambda: self._arrived(self._connection(), key, token), what="reading the marker table"
        )

    def _close_writer(self) -> None:
        if self.conn is not None and not self.conn.invalidated and not self.conn.closed:
            self.writer.close(self.conn)

    def close(self) -> None:
        self._close_writer()
        self._lost()


def _prepend(first: list[Record], rest: Iterator[list[Record]]) -> Iterator[list[Record]]:
    yield first
    yield from rest
