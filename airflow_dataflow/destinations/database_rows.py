"""Records to table rows for the ``database`` destination: column names, types and values.

- ``infer_kinds`` types the columns of a table the destination creates (or adds) from the
  records' values; ``column_type`` turns a kind into a SQLAlchemy type.
- ``RowBuilder`` turns a batch of records into rows grouped by the columns they set: it
  applies ``column_map``, handles fields the table has no column for (``on_new_column``),
  converts every value to what its column takes, and sets aside the records that cannot be
  written (a value of the wrong kind, a missing key) as ``Rejection``s, i.e. dead letters.
  Values are converted column by column: a column whose values already have the right Python
  type (the common case: JSON gives ints, floats, strings and booleans) is checked in bulk and
  not touched one value at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from airflow_dataflow.destinations.base import Rejection
from airflow_dataflow.errors import DestinationError

ColumnKind = Literal["int", "float", "str", "bool", "json", "datetime"]
OnNewColumn = Literal["add", "ignore", "fail"]
Record = dict[str, Any]
Converter = Callable[[Any], Any]

KEY_STRING_LENGTH = 255
_NONE = type(None)
_ANY = frozenset({object})
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


# ---------------------------------------------------------------------------------- kinds


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
        for name, value in record.items():
            kinds = seen.setdefault(name, set())
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


def column_type(kind: str, *, is_key: bool) -> sa.types.TypeEngine[Any]:
    """The SQL type of a column of ``kind`` (see the module docstring of ``database``)."""
    if kind == "int":
        return sa.BigInteger()
    if kind == "float":
        return sa.Double()
    if kind == "bool":
        return sa.Boolean()
    if kind == "datetime":  # MySQL DATETIME keeps whole seconds unless given fsp
        return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if is_key:
        return sa.String(KEY_STRING_LENGTH)
    if kind == "json":
        return sa.JSON(none_as_null=True)
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # TEXT is 64 KB there


# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ColumnRule:
    """How record values become values of one column.

    Values whose type is in ``ready`` (and within ``bounds`` / ``max_length``) are taken as
    they are; any other value goes through ``convert``, which raises TypeError/ValueError for
    a value the column cannot take.
    """

    name: str
    convert: Converter
    ready: frozenset[type]
    bounds: tuple[int, int] | None = None
    max_length: int | None = None
    no_nul: bool = False  # PostgreSQL text cannot hold NUL characters

    def column(self, values: Sequence[Any]) -> tuple[Sequence[Any], dict[int, str]]:
        """``values`` converted (the same object when all fit), and why others cannot be."""
        if self.ready is _ANY:
            return values, {}
        types = set(map(type, values))
        if types <= self.ready and self._fits(values, _NONE in types):
            return values, {}
        converted: list[Any] = []
        failures: dict[int, str] = {}
        for position, value in enumerate(values):
            try:
                converted.append(self.convert(value))
            except (TypeError, ValueError, OverflowError) as exc:
                failures[position] = str(exc)
                converted.append(None)
        return converted, failures

    def _fits(self, values: Sequence[Any], has_none: bool) -> bool:
        if self.bounds is None and self.max_length is None and not self.no_nul:
            return True
        present = [value for value in values if value is not None] if has_none else values
        if not present:
            return True
        if self.bounds is not None:
            return self.bounds[0] <= min(present) and max(present) <= self.bounds[1]
        if self.max_length is not None and max(map(len, present)) > self.max_length:
            return False
        return not (self.no_nul and "\x00" in "".join(present))


def column_rule(column: sa.Column[Any], dialect: str) -> ColumnRule:
    """The ``ColumnRule`` of ``column`` (its SQLAlchemy type, reflected or built) on ``dialect``."""
    column_type = column.type
    name = column.name
    if isinstance(column_type, sa.JSON):
        return ColumnRule(name, _identity, _ANY)
    if isinstance(column_type, sa.DateTime):
        aware = bool(column_type.timezone) and dialect == "postgresql"
        return ColumnRule(name, partial(to_datetime, aware=aware), frozenset({_NONE}))
    if isinstance(column_type, sa.Date):
        return ColumnRule(name, to_date, frozenset({_NONE}))
    if isinstance(column_type, sa.Boolean) or _is_mysql_boolean(column_type):
        return ColumnRule(name, to_bool, frozenset({bool, _NONE}))
    if isinstance(column_type, sa.Integer):
        bounds = _integer_bounds(column_type, dialect)
        return ColumnRule(name, partial(to_int, bounds=bounds), frozenset({int, _NONE}), bounds)
    if isinstance(column_type, sa.Float):
        return ColumnRule(name, to_float, frozenset({float, _NONE}))
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum):
        length = column_type.length
        no_nul = dialect == "postgresql"
        convert = partial(to_text, max_length=length, no_nul=no_nul)
        return ColumnRule(name, convert, frozenset({str, _NONE}), None, length, no_nul)
    return ColumnRule(name, to_scalar, frozenset({int, float, str, bool, _NONE}))


def _is_mysql_boolean(column_type: Any) -> bool:
    """MySQL's BOOLEAN is TINYINT(1), and is reflected as such."""
    return isinstance(column_type, mysql.TINYINT) and column_type.display_width == 1


def _integer_bounds(column_type: sa.Integer, dialect: str) -> tuple[int, int]:
    bits = 64
    if dialect != "sqlite":  # SQLite stores every integer in up to 8 bytes
        if isinstance(column_type, sa.SmallInteger):
            bits = 16
        elif isinstance(column_type, mysql.TINYINT):
            bits = 8
        elif isinstance(column_type, mysql.MEDIUMINT):
            bits = 24
        elif not isinstance(column_type, sa.BigInteger):
            bits = 32
    if getattr(column_type, "unsigned", False):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _identity(value: Any) -> Any:
    return value


def to_int(value: Any, *, bounds: tuple[int, int]) -> int | None:
    """An integer from an int, a bool (0/1), a whole float or a numeric string."""
    if value is None:
        return None
    if isinstance(value, bool):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    else:
        raise TypeError(f"{_short(value)} is not an integer")
    if not bounds[0] <= number <= bounds[1]:
        raise ValueError(f"{number} is out of the column's range {bounds[0]}..{bounds[1]}")
    return number


def to_float(value: Any) -> float | None:
    """A float from a number (not a bool) or a numeric string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{_short(value)} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    except OverflowError:
        raise ValueError(f"{value!r} is too large for a floating-point column") from None
    if isinstance(value, str) and math.isinf(number) and "inf" not in value.lower():
        raise ValueError(f"{value!r} is too large for a floating-point column")
    return number


def to_bool(value: Any) -> bool | None:
    """A boolean from a bool, 0/1, or a word like true/false, yes/no, on/off."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{_short(value)} is not a boolean")


def to_text(value: Any, *, max_length: int | None = None, no_nul: bool = False) -> str | None:
    """A string as it is; any other value as JSON text (``5``, ``true``, ``{"a": 1}``)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if max_length is not None and len(text) > max_length:
        raise ValueError(
            f"{_short(text)} is {len(text)} characters long; the column holds {max_length}"
        )
    if no_nul and "\x00" in text:
        raise ValueError(f"{_short(text)} holds a NUL character, which PostgreSQL text cannot")
    return text


def to_scalar(value: Any) -> Any:
    """A value for a column of a type this module does not know: nested values as JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def to_datetime(value: Any, *, aware: bool) -> dt.datetime | None:
    """A UTC datetime (naive unless ``aware``) from a datetime, ISO 8601 string or epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{_short(value)} is not an ISO 8601 date and time") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    elif not isinstance(value, dt.datetime):
        raise TypeError(f"{_short(value)} is not a date and time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    return value if aware else value.replace(tzinfo=None)


def to_date(value: Any) -> dt.date | None:
    """A date from a date or an ISO 8601 string (a time part is ignored)."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            raise ValueError(f"{_short(value)} is not an ISO 8601 date") from None
    raise TypeError(f"{_short(value)} is not a date")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------- rows


@dataclass
class RowGroup:
    """Rows that set the same columns: one executemany or one COPY."""

    fields: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass
class Rows:
    """A batch as rows: what to write, and the records refused (dead letters)."""

    groups: list[RowGroup] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    #: key values of refused records that had one (``mirror`` keeps their rows)
    refused_keys: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(group.rows) for group in self.groups)


class RowBuilder:
    """Turns records into the rows of one table (see the module docstring)."""

    def __init__(
        self,
        table: sa.Table,
        dialect: str,
        *,
        key: list[str],
        merge_keys: bool,
        column_map: dict[str, str],
        on_new_column: OnNewColumn,
        where: str,
    ) -> None:
        self.table = table
        self.key = key
        self.merge_keys = merge_keys  # upsert/mirror: one row per key, a key is required
        self.column_map = column_map
        self.on_new_column = on_new_column
        self.where = where
        self.rules = {column.name: column_rule(column, dialect) for column in table.columns}

    def mapped(self, records: list[Record]) -> list[Record]:
        """``records`` with their fields renamed by ``column_map`` (the same list without one)."""
        if not self.column_map:
            return records
        column_map = self.column_map
        return [{column_map.get(name, name): value for name, value in r.items()} for r in records]

    def unknown_fields(self, records: list[Record]) -> list[str]:
        """Fields (after ``column_map``) of ``records`` that are not columns, first-seen order."""
        return self._unknown(_groups(records))

    def _unknown(self, groups: dict[tuple[str, ...], list[int]]) -> list[str]:
        names = dict.fromkeys(name for fields in groups for name in fields)
        return [name for name in names if name not in self.rules]

    def build(self, records: list[Record], offset: int) -> Rows:
        """The rows of ``records`` (records ``offset`` onwards of the delivery)."""
        mapped = self.mapped(records)
        refused: dict[int, str] = {}
        if self.column_map:
            self._refuse_clashes(records, mapped, refused)
        groups = self._known_fields_only(_groups(mapped), offset)
        converted: list[tuple[list[int], tuple[str, ...], list[tuple[Any, ...]]]] = []
        for fields, positions in groups.items():
            rows = _extract(mapped, positions, fields)
            converted.append((positions, fields, self._convert(fields, rows, positions, refused)))
        result = Rows()
        for positions, fields, rows in converted:
            if refused:
                rows = [row for p, row in zip(positions, rows, strict=True) if p not in refused]
            if rows:
                result.groups.append(RowGroup(fields, rows))
        if self.merge_keys and _has_duplicate_keys(result.groups, self.key):
            result.groups = _merged_by_key(converted, refused, self.key)
        for position, reason in sorted(refused.items()):
            result.rejections.append(
                Rejection(records[position], f"{self.where}: record {offset + position}: {reason}")
            )
            ident = self._key_of(mapped[position])
            if ident is not None:
                result.refused_keys.append(ident)
        return result

    def _refuse_clashes(
        self, records: list[Record], mapped: list[Record], refused: dict[int, str]
    ) -> None:
        for position, (record, row) in enumerate(zip(records, mapped, strict=True)):
            if len(row) < len(record):
                refused[position] = (
                    f"two fields map to the same column (column_map {self.column_map})"
                )

    def _known_fields_only(
        self, groups: dict[tuple[str, ...], list[int]], offset: int
    ) -> dict[tuple[str, ...], list[int]]:
        """``groups`` without the fields that are not columns (``ignore``), or an error."""
        unknown = self._unknown(groups)
        if not unknown:
            return groups
        if self.on_new_column == "ignore":
            kept: dict[tuple[str, ...], list[int]] = {}
            for fields, positions in groups.items():
                known = tuple(name for name in fields if name in self.rules)
                kept.setdefault(known, []).extend(positions)
            return {fields: sorted(positions) for fields, positions in kept.items()}
        first = min(
            positions[0]
            for fields, positions in groups.items()
            if any(name not in self.rules for name in fields)
        )
        raise DestinationError(
            f"{self.where}: record {offset + first} has field(s) "
            f"{', '.join(map(repr, unknown))} that are not columns of the table; set "
            f"on_new_column: add to add them to the table, on_new_column: ignore to drop "
            f"them, or drop or rename them with a transform or column_map"
        )

    def _convert(
        self,
        fields: tuple[str, ...],
        rows: list[tuple[Any, ...]],
        positions: list[int],
        refused: dict[int, str],
    ) -> list[tuple[Any, ...]]:
        """``rows`` with converted values; positions that cannot be written go to ``refused``."""
        if self.merge_keys:
            missing = [name for name in self.key if name not in fields]
            for position in positions if missing else ():
                refused.setdefault(position, f"no value for key column(s) {', '.join(missing)}")
        columns: list[Any] | None = None
        changed = False
        for index, name in enumerate(fields):
            rule = self.rules[name]
            is_key = self.merge_keys and name in self.key
            if rule.ready is _ANY and not is_key:
                continue
            if columns is None:
                columns = list(zip(*rows, strict=True))
            values, failures = rule.column(columns[index])
            if values is not columns[index]:
                columns[index] = values
                changed = True
            for at, reason in failures.items():
                refused.setdefault(positions[at], f"column {name!r}: {reason}")
            if is_key and None in values:
                for at, value in enumerate(values):
                    if value is None:
                        refused.setdefault(positions[at], f"no value for key column {name}")
        if changed and columns is not None:
            return list(zip(*columns, strict=True))
        return rows

    def _key_of(self, record: Record) -> tuple[Any, ...] | None:
        if not self.key or any(record.get(name) is None for name in self.key):
            return None
        try:
            return tuple(self.rules[name].convert(record[name]) for name in self.key)
        except (TypeError, ValueError, OverflowError, KeyError):
            return None


def _groups(records: list[Record]) -> dict[tuple[str, ...], list[int]]:
    """Positions of ``records`` grouped by the fields they set (one group when all agree)."""
    if not records:
        return {}
    first = records[0].keys()
    if all(map(first.__eq__, map(dict.keys, records))):
        return {tuple(first): list(range(len(records)))}
    groups: dict[tuple[str, ...], list[int]] = {}
    for position, record in enumerate(records):
        groups.setdefault(tuple(sorted(record)), []).append(position)
    return groups


def _extract(
    records: list[Record], positions: list[int], fields: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """The values of ``fields`` of the records at ``positions``, as tuples."""
    if not fields:
        return [() for _ in positions]
    getter = itemgetter(*fields)
    chosen = records if len(positions) == len(records) else [records[p] for p in positions]
    if len(fields) == 1:
        return [(value,) for value in map(getter, chosen)]
    return list(map(getter, chosen))


def _has_duplicate_keys(groups: list[RowGroup], key: list[str]) -> bool:
    idents: list[tuple[Any, ...]] = []
    for group in groups:
        indexes = [group.fields.index(name) for name in key]
        idents.extend(tuple(row[i] for i in indexes) for row in group.rows)
    return len(set(idents)) < len(idents)


def _merged_by_key(
    converted: list[tuple[list[int], tuple[str, ...], list[tuple[Any, ...]]]],
    refused: dict[int, str],
    key: list[str],
) -> list[RowGroup]:
    """One row per key value, in record order, later fields winning (as sequential upserts)."""
    records: list[tuple[int, Record]] = []
    for positions, fields, rows in converted:
        for position, row in zip(positions, rows, strict=True):
            if position not in refused:
                records.append((position, dict(zip(fields, row, strict=True))))
    records.sort(key=lambda item: item[0])
    merged: dict[tuple[Any, ...], Record] = {}
    for _, record in records:
        ident = tuple(record[name] for name in key)
        merged[ident] = {**merged[ident], **record} if ident in merged else record
    regrouped: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for record in merged.values():
        regrouped.setdefault(tuple(record), []).append(tuple(record.values()))
    return [RowGroup(fields, rows) for fields, rows in regrouped.items()]
