"""SQL for the ``database`` destination: the table, writing rows, and mirror's deletes.

- ``reflect_table``/``build_table``/``add_columns``: the table as it is, as created, as altered
  (``ALTER TABLE ... ADD COLUMN`` with a validated, quoted name and an inferred type).
- ``TableWriter`` writes ``RowGroup``s with INSERT or upsert statements (executemany, values
  always bound). On PostgreSQL through psycopg 3, a group of at least ``COPY_MIN_ROWS`` rows
  goes through ``COPY ... FROM STDIN`` instead (binary when every column's type is one psycopg
  can send in binary, text otherwise): straight into the table for inserts, into a temporary
  staging table then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` for upserts. COPY runs on
  the transaction's own connection, so it commits or rolls back with the rest of the batch
  (and its marker row).
- ``KeySet``: mirror's temporary table of the keys delivered, and the ``DELETE`` of the rows
  whose key is not in it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from airflow_dataflow.destinations.database_rows import RowGroup, column_type
from airflow_dataflow.errors import DestinationError

log = logging.getLogger(__name__)

#: Smallest group written with COPY on PostgreSQL: below it, one pipelined executemany is as
#: fast (COPY and the merge are separate round trips). See bench/README.md.
COPY_MIN_ROWS = 200

# psycopg type names for binary COPY, by SQLAlchemy type (checked in order: subclasses first)
_BINARY_TYPES: list[tuple[type, str]] = [
    (sa.Boolean, "bool"),
    (sa.BigInteger, "int8"),
    (sa.SmallInteger, "int2"),
    (sa.Integer, "int4"),
    (postgresql.REAL, "float4"),
    (sa.Float, "float8"),
    (postgresql.JSONB, "jsonb"),
    (sa.JSON, "json"),
    (sa.Date, "date"),
    (sa.Text, "text"),
    (sa.String, "text"),
]


# ---------------------------------------------------------------------------------- the table


def reflect_table(engine: sa.Engine, schema: str | None, name: str) -> sa.Table | None:
    """The existing table ``schema.name``, or ``None`` when there is none."""
    if not sa.inspect(engine).has_table(name, schema=schema):
        return None
    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
    for column in table.columns:
        if isinstance(column.type, sa.JSON):
            column.type.none_as_null = True  # a missing value is SQL NULL, not JSON 'null'
    return table


def build_table(schema: str | None, name: str, kinds: dict[str, str], key: list[str]) -> sa.Table:
    """A ``Table`` with one column per kind; ``key`` columns form the primary key."""
    columns = [
        sa.Column(
            column,
            column_type(kind, is_key=column in key),
            primary_key=column in key,
            autoincrement=False,
        )
        for column, kind in kinds.items()
    ]
    return sa.Table(name, sa.MetaData(), *columns, schema=schema)


def add_columns(conn: sa.Connection, table: sa.Table, kinds: dict[str, str]) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for each of ``kinds`` the table does not have yet.

    Returns the names added. A column added meanwhile by another delivery is not an error.
    """
    preparer = conn.dialect.identifier_preparer
    existing = {column["name"] for column in sa.inspect(conn).get_columns(table.name, table.schema)}
    added = []
    for name, kind in kinds.items():
        if name in existing:
            continue
        sql_type = column_type(kind, is_key=False).compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.quote(name)} "
            f"{sql_type}"
        )
        added.append(name)
    return added


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


def upsert_statement(
    table: sa.Table, fields: tuple[str, ...], key: list[str], dialect: str
) -> sa.Executable:
    """INSERT that updates ``fields`` (except the key) of the row whose ``key`` already exists.

    On MySQL/MariaDB, ``ON DUPLICATE KEY UPDATE`` fires on any unique key of the table.
    """
    updates = [name for name in fields if name not in key]
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
    raise DestinationError(f"upserts are not supported on {dialect}")


# ---------------------------------------------------------------------------------- writing


class TableWriter:
    """Writes row groups to ``table``: inserts, or upserts on ``key`` (``upsert``, ``mirror``)."""

    def __init__(
        self, table: sa.Table, dialect: sa.Dialect, *, upsert: bool, key: list[str]
    ) -> None:
        self.table = table
        self.dialect_name = dialect.name
        self.upsert = upsert
        self.key = key
        self.copy = _Copy(table, dialect) if _can_copy(dialect) else None

    def prepare(self, conn: sa.Connection) -> None:
        """Before the transaction: what writing needs on ``conn`` (PostgreSQL's staging table)."""
        if self.copy is not None and self.upsert:
            self.copy.ensure_stage(conn)

    def write(
        self,
        conn: sa.Connection,
        group: RowGroup,
        keys: KeySet | None = None,
        *,
        then_commit: bool = False,
    ) -> None:
        """One group, in the caller's transaction (``prepare`` first); ``keys`` gets its keys.

        ``then_commit``: the transaction commits right after this group (which empties the
        staging table, so it needs no emptying of its own).
        """
        if self.copy is not None and len(group.rows) >= COPY_MIN_ROWS:
            if self.upsert:
                self.copy.merge(conn, group, self.key, keys, empty=not then_commit)
            else:
                self.copy.insert(conn, group)
            return
        if keys is not None:
            keys.add(conn, group.fields, group.rows)
        statement = (
            upsert_statement(self.table, group.fields, self.key, self.dialect_name)
            if self.upsert
            else self.table.insert()
        )
        fields = group.fields
        conn.execute(statement, [dict(zip(fields, row, strict=True)) for row in group.rows])

    def close(self, conn: sa.Connection | None) -> None:
        """Drop the session's staging table, if any (best effort)."""
        if self.copy is not None and conn is not None:
            self.copy.drop_stage(conn)


def _can_copy(dialect: sa.Dialect) -> bool:
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


class _Copy:
    """PostgreSQL ``COPY FROM STDIN`` through psycopg 3, on the SQLAlchemy connection's driver."""

    def __init__(self, table: sa.Table, dialect: sa.Dialect) -> None:
        preparer = dialect.identifier_preparer
        self.table = table
        self.dialect = dialect
        self.target = preparer.format_table(table)
        self.quoted = {column.name: preparer.quote(column.name) for column in table.columns}
        self.binary = {column.name: _binary_type(column.type) for column in table.columns}
        self.json = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        stage = f"_dataflow_stage_{uuid.uuid4().hex[:12]}"
        self.stage = sa.Table(stage, sa.MetaData(), *(sa.Column(c.name) for c in table.columns))
        self.stage_name = preparer.quote(stage)
        columns = ", ".join(self.quoted.values())
        self.create_stage = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.stage_name} ON COMMIT DELETE ROWS "
            f"AS SELECT {columns} FROM {self.target} WITH NO DATA"
        )
        self.stage_on: Any = None  # the psycopg connection whose session has the staging table
        self.merges: dict[tuple[str, ...], str] = {}

    def ensure_stage(self, conn: sa.Connection) -> None:
        """The session's staging table (``ON COMMIT DELETE ROWS``), created once, committed."""
        raw = conn.connection.driver_connection
        if raw is self.stage_on:
            return
        with conn.begin():
            _driver_sql(conn, self.create_stage)
        self.stage_on = raw

    def insert(self, conn: sa.Connection, group: RowGroup) -> None:
        self._copy(conn, self.target, group)

    def merge(
        self,
        conn: sa.Connection,
        group: RowGroup,
        key: list[str],
        keys: KeySet | None,
        *,
        empty: bool,
    ) -> None:
        """COPY into the staging table, upsert from it (mirror: copy its keys), ``empty`` it."""
        self._copy(conn, self.stage_name, group)
        sql = [self._merge_sql(group.fields, key)]
        if keys is not None:
            sql.append(keys.from_select(self.stage.c, self.dialect))
        if empty:
            sql.append(f"TRUNCATE {self.stage_name}")
        _driver_sql(conn, "; ".join(sql))

    def _merge_sql(self, fields: tuple[str, ...], key: list[str]) -> str:
        """``INSERT INTO table SELECT ... FROM stage ON CONFLICT (key) DO UPDATE`` (cached)."""
        sql = self.merges.get(fields)
        if sql is None:
            select = sa.select(*(self.stage.c[name] for name in fields))
            statement = postgresql.insert(self.table).from_select(list(fields), select)
            updates = {name: statement.excluded[name] for name in fields if name not in key}
            if updates:
                statement = statement.on_conflict_do_update(index_elements=key, set_=updates)
            else:
                statement = statement.on_conflict_do_nothing(index_elements=key)
            sql = self.merges[fields] = str(statement.compile(dialect=self.dialect))
        return sql

    def _copy(self, conn: sa.Connection, into: str, group: RowGroup) -> None:
        import psycopg
        from psycopg.types.json import Jsonb

        fields = group.fields
        types = [self.binary[name] for name in fields]
        binary = all(types)
        columns = ", ".join(self.quoted[name] for name in fields)
        statement = f"COPY {into} ({columns}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")
        rows: Any = group.rows
        wrap = [i for i, name in enumerate(fields) if name in self.json]
        if wrap and not binary:  # text COPY: JSON values as psycopg's Jsonb
            rows = (_wrapped(row, wrap, Jsonb) for row in rows)
        raw = conn.connection.driver_connection
        try:
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                if binary:
                    copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            broken = bool(raw.broken or raw.closed)
            if broken:
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                statement, None, exc, psycopg.Error, connection_invalidated=broken
            ) from exc

    def drop_stage(self, conn: sa.Connection) -> None:
        if (
            conn.invalidated
            or conn.closed
            or conn.connection.driver_connection is not self.stage_on
        ):
            return
        self.stage_on = None
        try:
            with conn.begin():
                _driver_sql(conn, f"DROP TABLE IF EXISTS pg_temp.{self.stage_name}")
        except sa.exc.SQLAlchemyError as exc:  # the session ends with the connection anyway
            log.debug("could not drop the staging table %s: %s", self.stage_name, exc)


def _driver_sql(conn: sa.Connection, sql: str) -> None:
    """SQL without parameters through psycopg, which reads ``%`` as a placeholder."""
    conn.exec_driver_sql(sql.replace("%", "%%"))


def _binary_type(sql_type: Any) -> str | None:
    """The psycopg type name to COPY a column in binary, or None (COPY in text then)."""
    if isinstance(sql_type, sa.DateTime):
        return "timestamptz" if sql_type.timezone else "timestamp"
    if isinstance(sql_type, sa.Enum | sa.Interval | sa.ARRAY):
        return None
    if isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float):
        return None
    for kind, name in _BINARY_TYPES:
        if isinstance(sql_type, kind):
            return name
    return None


def _wrapped(row: tuple[Any, ...], positions: list[int], wrapper: Any) -> tuple[Any, ...]:
    values = list(row)
    for position in positions:
        if values[position] is not None:
            values[position] = wrapper(values[position])
    return tuple(values)


# ---------------------------------------------------------------------------------- mirror


class KeySet:
    """Mirror: the keys delivered, in a temporary table, then the rows whose key is not there.

    Created, filled and dropped inside the delivery's transaction (``CREATE TEMPORARY TABLE``
    and ``DROP TEMPORARY TABLE`` do not commit on MySQL; a failed transaction rolls back the
    rest, and ``discard`` drops what MySQL keeps).
    """

    def __init__(self, table: sa.Table, key: list[str], dialect: str) -> None:
        name = f"_dataflow_keys_{uuid.uuid4().hex[:12]}"
        columns = [
            sa.Column(k, table.c[k].type, primary_key=True, autoincrement=False) for k in key
        ]
        self.table = sa.Table(name, sa.MetaData(), *columns, prefixes=["TEMPORARY"])
        self.target = table
        self.key = key
        self.dialect = dialect
        if dialect == "postgresql":
            self.insert: Any = postgresql.insert(self.table).on_conflict_do_nothing()
        elif dialect == "sqlite":
            self.insert = self.table.insert().prefix_with("OR IGNORE")
        else:
            self.insert = self.table.insert().prefix_with("IGNORE")

    def create(self, conn: sa.Connection) -> None:
        self.table.create(conn)

    def add(
        self, conn: sa.Connection, fields: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        indexes = [fields.index(name) for name in self.key]
        self.add_keys(conn, [tuple(row[i] for i in indexes) for row in rows])

    def add_keys(self, conn: sa.Connection, idents: list[tuple[Any, ...]]) -> None:
        if idents:
            conn.execute(self.insert, [dict(zip(self.key, ident, strict=True)) for ident in idents])

    def from_select(self, source: Any, dialect: sa.Dialect) -> str:
        """SQL copying the keys of ``source`` (a table's columns) in, server side (PostgreSQL)."""
        select = sa.select(*(source[name] for name in self.key))
        statement = postgresql.insert(self.table).from_select(self.key, select)
        return str(statement.on_conflict_do_nothing().compile(dialect=dialect))

    def delete_missing(self, conn: sa.Connection) -> int:
        """Delete the table's rows whose key was not delivered; returns how many."""
        target, keys = self.target, self.table
        same = sa.and_(*(keys.c[name] == target.c[name] for name in self.key))
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(keys.name)}")
        result = conn.execute(target.delete().where(~sa.exists().where(same)))
        return max(result.rowcount or 0, 0)

    def drop(self, conn: sa.Connection) -> None:
        temporary = "TEMPORARY " if self.dialect in ("mysql", "mariadb") else ""
        name = conn.dialect.identifier_preparer.quote(self.table.name)
        conn.exec_driver_sql(f"DROP {temporary}TABLE IF EXISTS {name}")
