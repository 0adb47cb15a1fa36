"""Committed cursors of incremental sources: one per (route, stream) in ``dataflow_sync_cursors``.

The row keeps an envelope ``{"column": ..., "value": ...}``: the column says what the value is
of, so a route whose cursor column changed is detected instead of comparing a new column with
an old column's value. What is read back is checked (valid JSON, the envelope, a scalar value
of the JSON type of ``initial``, the route's column): a corrupted or hand-edited cursor stops
the run with a message naming the route and how to reset it; it never silently re-reads from
the beginning or skips ahead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from airflow_dataflow.connectors.base import (
    RESET_CURSOR_PARAM,
    SINCE_PARAM,
    CursorSpec,
    JsonScalar,
    is_cursor_value,
    json_type,
)
from airflow_dataflow.errors import FatalError
from airflow_dataflow.state.schema import sync_cursors

SOURCE_STREAM = "source"
_ENVELOPE_KEYS = {"column", "value"}


class CursorError(FatalError):
    """A committed (or given) cursor cannot be used: retrying cannot fix it, a reset can."""


def reset_remedy(route: str) -> str:
    """How to reset a route's cursor: the sentence every cursor error ends with."""
    return (
        f"Reset it with `airflow-dataflow cursor reset {route}` (the next run starts at "
        f"source.cursor.initial) or `airflow-dataflow cursor reset {route} --to VALUE`, or "
        f'trigger one run with conf {{"{RESET_CURSOR_PARAM}": true}} or '
        f'{{"{SINCE_PARAM}": VALUE}}'
    )


@dataclass(frozen=True)
class StoredCursor:
    """A committed cursor row as stored: ``text`` is the raw JSON, unchecked."""

    route: str
    stream: str
    text: str
    run_id: str | None
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "stream": self.stream,
            "cursor": self.text,
            "run_id": self.run_id,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class CommittedCursor:
    """A checked committed cursor: the column it is of and its value."""

    column: str
    value: JsonScalar
    run_id: str | None = None
    updated_at: datetime | None = None


def parse_cursor(stored: StoredCursor, spec: CursorSpec | None = None) -> CommittedCursor:
    """The checked cursor of ``stored``; ``spec`` (the route's cursor) adds the column/type checks.

    Raises ``CursorError`` naming the route, stream, the bad value and the remedy.
    """

    def bad(problem: str) -> CursorError:
        return CursorError(
            f"route {stored.route!r}: the committed cursor of stream {stored.stream!r} is "
            f"{stored.text!r}, which {problem}; it was not used (a run never re-reads from the "
            f"beginning or skips ahead on its own). {reset_remedy(stored.route)}"
        )

    try:
        envelope = json.loads(stored.text, parse_constant=_no_constant)
    except ValueError as exc:
        raise bad(f"is not valid JSON ({exc})") from None
    if (
        not isinstance(envelope, dict)
        or set(envelope) != _ENVELOPE_KEYS
        or not isinstance(envelope["column"], str)
    ):
        raise bad('is not a cursor of the form {"column": "...", "value": ...}')
    value = envelope["value"]
    if not is_cursor_value(value):
        raise bad(f"has {_a(json_type(value))} value, not a string, a number or a boolean")
    if spec is not None:
        if envelope["column"] != spec.field:
            raise bad(
                f"was committed for column {envelope['column']!r}, but source.cursor.column is "
                f"now {spec.field!r} (the values of one column mean nothing for another)"
            )
        if spec.initial is not None and json_type(value) != json_type(spec.initial):
            raise bad(
                f"has a {json_type(value)} value, but source.cursor.initial "
                f"({spec.initial!r}) is a {json_type(spec.initial)}"
            )
    return CommittedCursor(envelope["column"], value, stored.run_id, _aware(stored.updated_at))


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class CursorStore:
    """Reads and writes committed cursors through the state store's engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls) -> CursorStore:
        """The configured state store (migrated when it is the default SQLite one)."""
        from airflow_dataflow.state.store import StateStore

        return cls(StateStore.open().engine)

    def stored(self, route: str, stream: str = SOURCE_STREAM) -> StoredCursor | None:
        """The raw committed cursor (its JSON as text, so that corrupted JSON can be reported)."""
        query = sa.select(
            sa.cast(sync_cursors.c.cursor, sa.Text).label("text"),
            sync_cursors.c.run_id,
            sync_cursors.c.updated_at,
        ).where(_key(route, stream))
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return StoredCursor(route, stream, str(row.text), row.run_id, _aware(row.updated_at))

    def get(
        self, route: str, spec: CursorSpec | None = None, stream: str = SOURCE_STREAM
    ) -> CommittedCursor | None:
        """The checked committed cursor, or ``None`` when there is none (raises ``CursorError``)."""
        stored = self.stored(route, stream)
        return None if stored is None else parse_cursor(stored, spec)

    def save(
        self,
        route: str,
        column: str,
        value: JsonScalar,
        *,
        run_id: str | None,
        stream: str = SOURCE_STREAM,
    ) -> None:
        """Commit ``value`` as the cursor of ``column`` (replacing the previous one)."""
        if not is_cursor_value(value):
            raise CursorError(
                f"route {route!r}: a cursor is a string, a finite number or a boolean, not {value!r}"
            )
        values = {
            "cursor": {"column": column, "value": value},
            "run_id": run_id,
            "updated_at": datetime.now(timezone.utc),
        }
        with self.engine.begin() as connection:
            updated = connection.execute(
                sa.update(sync_cursors).where(_key(route, stream)).values(**values)
            )
            if updated.rowcount == 0:
                connection.execute(
                    sa.insert(sync_cursors).values(route=route, stream=stream, **values)
                )

    def delete(self, route: str, stream: str = SOURCE_STREAM) -> bool:
        """Forget the committed cursor (the next run starts at ``initial``); whether there was one."""
        with self.engine.begin() as connection:
            return bool(
                connection.execute(sa.delete(sync_cursors).where(_key(route, stream))).rowcount
            )


def _key(route: str, stream: str) -> Any:
    return (sync_cursors.c.route == route) & (sync_cursors.c.stream == stream)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
