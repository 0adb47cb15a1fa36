"""The query engine of the fake BigQuery: versioned tables in SQLite, a small GoogleSQL subset.

Tables keep every row with the instant it was added (and removed), so ``FOR SYSTEM_TIME AS OF
@param`` reads a table as it was then, as BigQuery's time travel does. What is translated:

- table references after ``FROM``/``JOIN``: `project.dataset.table`, `dataset.table` (backquoted
  or not), optionally ``FOR SYSTEM_TIME AS OF @param`` and an alias; unknown tables fail with
  BigQuery's ``notFound`` message; a snapshot before the table existed or older than the time
  travel window (7 days) fails as BigQuery does (``invalidQuery``);
- other `backquoted` names become [bracketed] ones (SQLite takes an unknown "name" for a string); ``IN UNNEST(@array)``; ``CAST(x AS STRING |
  INT64 | FLOAT64 | BOOL)``; ``#`` comment lines;
- ``@name`` parameters are bound by name (SQLite knows ``@name``).

Values are stored as BigQuery would compare them: TIMESTAMP (UTC) and DATETIME as
``YYYY-MM-DD HH:MM:SS.ffffff`` text, DATE as ``YYYY-MM-DD``. BigQuery coerces a STRING parameter
where a timestamp is expected; the fake does not type expressions, so it binds every STRING
parameter written as an ISO timestamp (with a time) in that stored form.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

TIME_TRAVEL = dt.timedelta(days=7)
_API_TYPES = {
    "INT64": "INTEGER",
    "INTEGER": "INTEGER",
    "FLOAT64": "FLOAT",
    "FLOAT": "FLOAT",
    "NUMERIC": "NUMERIC",
    "BIGNUMERIC": "BIGNUMERIC",
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "STRING": "STRING",
    "BYTES": "BYTES",
    "TIMESTAMP": "TIMESTAMP",
    "DATETIME": "DATETIME",
    "DATE": "DATE",
    "TIME": "TIME",
}
_SQLITE_TYPES = {
    "INTEGER": "INTEGER",
    "FLOAT": "REAL",
    "NUMERIC": "NUMERIC",
    "BIGNUMERIC": "NUMERIC",
    "BOOLEAN": "INTEGER",
    "BYTES": "BLOB",
}
_KEYWORDS = (
    "WHERE|JOIN|INNER|LEFT|RIGHT|FULL|CROSS|ON|USING|GROUP|ORDER|LIMIT|HAVING|WINDOW|QUALIFY|"
    "UNION|INTERSECT|EXCEPT|FOR|AS"
)
_TABLE_REF = re.compile(
    r"\b(?P<kw>FROM|JOIN)\s+"
    r"(?P<ref>`[^`]+`|[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+)"
    r"(?:\s+FOR\s+SYSTEM_TIME\s+AS\s+OF\s+@(?P<at>\w+))?"
    rf"(?:\s+AS\s+(?P<alias>\w+)|\s+(?!(?:{_KEYWORDS})\b)(?P<bare>[A-Za-z_]\w*))?",
    re.IGNORECASE,
)
_ISO_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2}| UTC)?$"
)
_CASTS = {"STRING": "TEXT", "INT64": "INTEGER", "FLOAT64": "REAL", "BOOL": "INTEGER"}


class QueryFailed(Exception):
    """The query cannot run: ``reason`` and ``message`` as BigQuery reports them."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Table:
    dataset: str
    name: str
    columns: dict[str, str]  # column -> API type (INTEGER, TIMESTAMP, ...)
    created: dt.datetime

    @property
    def key(self) -> str:
        return f"{self.dataset}.{self.name}"


@dataclass
class Result:
    """A query's result: its schema (name, API type) and rows of stored values."""

    schema: list[tuple[str, str]]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stored_timestamp(value: dt.datetime | str, *, naive_is_utc: bool = True) -> str:
    """A timestamp or datetime in the stored, comparable form (UTC for aware values)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace(" UTC", "+00:00").replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _parsed_stored(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


class Engine:
    """Tables and queries (not thread-safe: the server serialises calls)."""

    def __init__(self, project: str, location: str) -> None:
        self.project = project
        self.location = location
        self.tables: dict[str, Table] = {}
        self._db = sqlite3.connect(":memory:", check_same_thread=False)

    def create_table(
        self, name: str, columns: dict[str, str], created: dt.datetime | None = None
    ) -> Table:
        dataset, table_name = name.split(".")
        types = {column: _API_TYPES[kind.upper()] for column, kind in columns.items()}
        table = Table(dataset, table_name, types, created or dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        definition = ", ".join(
            f'"{column}" {_SQLITE_TYPES.get(kind, "TEXT")}' for column, kind in types.items()
        )
        self._db.execute(
            f'CREATE TABLE "{table.key}" ({definition}, _added TEXT NOT NULL, _removed TEXT)'
        )
        self.tables[table.key] = table
        return table

    def insert(self, name: str, rows: list[dict[str, Any]], at: dt.datetime | None = None) -> None:
        table = self.tables[name]
        added = stored_timestamp(at or utc_now())
        columns = list(table.columns)
        placeholders = ", ".join("?" for _ in range(len(columns) + 1))
        quoted = ", ".join(f'"{column}"' for column in columns)
        self._db.executemany(
            f'INSERT INTO "{name}" ({quoted}, _added) VALUES ({placeholders})',
            [(*(_stored(row.get(c), table.columns[c]) for c in columns), added) for row in rows],
        )

    def delete(
        self, name: str, column: str, values: list[Any], at: dt.datetime | None = None
    ) -> None:
        """Remove the current rows whose ``column`` is in ``values`` (kept for time travel)."""
        removed = stored_timestamp(at or utc_now())
        marks = ", ".join("?" for _ in values)
        self._db.execute(
            f'UPDATE "{name}" SET _removed = ? WHERE _removed IS NULL AND "{column}" IN ({marks})',
            (removed, *values),
        )

    def run(self, query: str, parameters: list[dict[str, Any]]) -> Result:
        """Run ``query`` with the API's ``queryParameters``; raises ``QueryFailed``."""
        bound = {p["name"]: _bound(p["parameterType"], p.get("parameterValue")) for p in parameters}
        sql, used_tables = self._translate(query, bound)
        try:
            cursor = self._db.execute(sql, bound)
            rows = cursor.fetchall()
        except sqlite3.ProgrammingError as exc:  # a parameter the query uses was not sent
            missing = re.search(r"binding parameter :?(\w+)", str(exc))
            name = missing.group(1) if missing else "?"
            raise QueryFailed("invalidQuery", f"Query parameter '{name}' not found") from exc
        except sqlite3.Error as exc:
            raise QueryFailed("invalidQuery", _bigquery_message(str(exc))) from exc
        names = [column[0] for column in cursor.description or []]
        schema = [
            (name, self._type_of(name, index, rows, used_tables))
            for index, name in enumerate(names)
        ]
        return Result(schema, rows)

    def _type_of(
        self, name: str, index: int, rows: list[tuple[Any, ...]], tables: list[Table]
    ) -> str:
        for table in tables:
            if name in table.columns:
                return table.columns[name]
        sample = next((row[index] for row in rows if row[index] is not None), None)
        if isinstance(sample, bool | int):
            return "INTEGER"
        if isinstance(sample, float):
            return "FLOAT"
        return "BYTES" if isinstance(sample, bytes) else "STRING"

    def _translate(self, query: str, bound: dict[str, Any]) -> tuple[str, list[Table]]:
        used: list[Table] = []
        sql = "\n".join(line for line in query.splitlines() if not line.lstrip().startswith("#"))

        def table_ref(match: re.Match[str]) -> str:
            table = self._table(match["ref"].strip("`"))
            used.append(table)
            visible = "_removed IS NULL"
            if match["at"]:
                at = bound.get(match["at"])
                if at is None:
                    raise QueryFailed("invalidQuery", f"Query parameter '{match['at']}' not found")
                self._check_snapshot(table, str(at))
                visible = (
                    f"_added <= @{match['at']} AND (_removed IS NULL OR _removed > @{match['at']})"
                )
            alias = match["alias"] or match["bare"] or table.name
            columns = ", ".join(f'"{column}"' for column in table.columns)
            return (
                f'{match["kw"]} (SELECT {columns} FROM "{table.key}" WHERE {visible}) AS "{alias}"'
            )

        sql = _TABLE_REF.sub(table_ref, sql)
        sql = re.sub(r"`([^`]+)`", r"[\1]", sql)  # never a string, unlike SQLite's "x"
        sql = re.sub(
            r"\bIN\s+UNNEST\s*\(\s*@(\w+)\s*\)",
            r"IN (SELECT value FROM json_each(@\1))",
            sql,
            flags=re.I,
        )
        sql = re.sub(
            r"\bAS\s+(STRING|INT64|FLOAT64|BOOL)\s*\)",
            lambda m: f"AS {_CASTS[m.group(1).upper()]})",
            sql,
            flags=re.I,
        )
        return sql, used

    def _table(self, reference: str) -> Table:
        parts = reference.split(".")
        if len(parts) == 3 and parts[0] != self.project:
            raise QueryFailed(
                "notFound", f"Not found: Table {parts[0]}:{parts[1]}.{parts[2]} was not found"
            )
        key = ".".join(parts[-2:])
        if len(parts) < 2 or key not in self.tables:
            raise QueryFailed(
                "notFound",
                f"Not found: Table {self.project}:{key} was not found in location {self.location}",
            )
        return self.tables[key]

    def _check_snapshot(self, table: Table, at: str) -> None:
        when = _parsed_stored(at).replace(tzinfo=dt.UTC)
        if when < table.created:
            raise QueryFailed(
                "invalidQuery",
                f"Invalid snapshot time {when:%Y-%m-%d %H:%M:%S} UTC for table "
                f"{self.project}:{table.key}. Cannot read before "
                f"{table.created:%Y-%m-%d %H:%M:%S} UTC",
            )
        if when < utc_now() - TIME_TRAVEL:
            raise QueryFailed(
                "invalidQuery",
                f"Invalid snapshot time {when:%Y-%m-%d %H:%M:%S} UTC for table "
                f"{self.project}:{table.key}: FOR SYSTEM_TIME AS OF cannot read before the "
                "time travel window (7 days)",
            )


def _bigquery_message(sqlite_message: str) -> str:
    column = re.match(r"no such column: (.+)", sqlite_message)
    if column:
        return f"Unrecognized name: {column.group(1).split('.')[-1]}"
    return f"Syntax error: {sqlite_message}"


def _stored(value: Any, kind: str) -> Any:
    """A Python value as a table stores it (see the module docstring)."""
    if value is None:
        return None
    if kind == "TIMESTAMP":
        return stored_timestamp(value)
    if kind == "DATETIME":
        return stored_timestamp(value)
    if kind in ("DATE", "TIME"):
        return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return float(Decimal(str(value)))
    if kind == "BOOLEAN":
        return int(bool(value))
    return value


def _bound(parameter_type: dict[str, Any], parameter_value: dict[str, Any] | None) -> Any:
    """A query parameter (API form) as the SQLite value it compares like."""
    kind = parameter_type["type"]
    if kind == "ARRAY":
        element = parameter_type["arrayType"]
        values = (parameter_value or {}).get("arrayValues", [])
        return json.dumps([_bound(element, value) for value in values])
    value = (parameter_value or {}).get("value")
    if value is None:
        return None
    if kind == "INT64":
        return int(value)
    if kind in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        return float(value)
    if kind == "BOOL":
        return 1 if str(value).lower() == "true" else 0
    if kind in ("TIMESTAMP", "DATETIME"):
        return stored_timestamp(str(value))
    if kind == "BYTES":
        return base64.b64decode(value)
    if kind == "STRING" and _ISO_TIMESTAMP.match(str(value)):
        return stored_timestamp(str(value))  # BigQuery's STRING -> TIMESTAMP coercion
    return str(value)


def api_value(value: Any, kind: str, *, int64_timestamp: bool) -> Any:
    """A stored value as getQueryResults sends it (``{"v": ...}``): strings, or null."""
    if value is None:
        return None
    if kind == "INTEGER":
        return str(int(value))
    if kind == "FLOAT":
        return repr(float(value))
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return format(Decimal(str(value)).normalize(), "f")
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "BYTES":
        return base64.b64encode(value if isinstance(value, bytes) else str(value).encode()).decode()
    if kind == "TIMESTAMP":
        at = _parsed_stored(value).replace(tzinfo=dt.UTC)
        micros = (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        return str(micros) if int64_timestamp else f"{micros / 1e6:.6f}"
    if kind == "DATETIME":
        return _parsed_stored(value).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return str(value)
