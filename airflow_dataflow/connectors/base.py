"""The connector interface: a connector streams records from one source.

Incremental sources: a connector whose settings return a ``CursorSpec`` from ``cursor_spec()``
is incremental. At extract it is handed a ``Cursor`` whose ``start`` is where to read from
(the last committed value, ``initial``, or the run's ``since`` param); while reading it calls
``cursor.advance(value)``, so ``cursor.last_value`` is the candidate new cursor, which commit
saves only after every delivery succeeded. The connector keeps no cursor state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict

from airflow_dataflow.context import RunContext

JsonScalar: TypeAlias = str | int | float | bool | None

RESET_CURSOR_PARAM = "reset_cursor"
SINCE_PARAM = "since"


@dataclass(frozen=True, slots=True)
class CursorSpec:
    """What an incremental source's cursor tracks.

    ``field`` names what the values are of (a column): it is committed with the value, so a
    route whose cursor field changed is detected. ``initial`` is where a first run starts
    (``None``: from the beginning); its JSON type is the type every cursor value must have.
    """

    field: str
    initial: JsonScalar = None


@dataclass(slots=True)
class Cursor:
    """One run's cursor: handed to the connector at extract, read back afterwards.

    ``start``: read only what comes strictly after it (``None``: everything).
    ``last_value``: the candidate new cursor, the greatest value read (``None``: nothing read).
    """

    field: str
    start: JsonScalar = None
    last_value: JsonScalar = None

    def advance(self, value: JsonScalar) -> None:
        """Take ``value`` as the candidate (connectors call it in cursor order; NULLs are ignored)."""
        if value is not None:
            self.last_value = value


def json_type(value: Any) -> str:
    """The JSON type name of ``value``: null, boolean, number, string, array or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def is_cursor_value(value: Any) -> bool:
    """Whether ``value`` can be a committed cursor: a string, a finite number or a boolean."""
    if isinstance(value, float):
        return math.isfinite(value)
    return json_type(value) in ("boolean", "number", "string")


class ConnectorSettings(BaseModel):
    """Base of every connector's settings model (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["__base__"]

    def cursor_spec(self) -> CursorSpec | None:
        """The cursor of an incremental source; ``None`` (the default): every run reads all."""
        return None


@dataclass(frozen=True, slots=True)
class SourceWarning:
    """Something the run summary's ``warnings`` should show; ``read`` yields it among records."""

    message: str


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Input that could not become a record: kept whole for the dead letters.

    ``position`` names where it was, e.g. ``/data/orders.jsonl:12``.
    """

    position: str
    error: str
    raw: Any


class Connector:
    """Reads records from a source. Subclasses set ``settings_model`` and implement ``read``.

    ``read`` yields each record (any JSON value; the router dead-letters non-objects), a
    ``BadRecord`` for input that could not be decoded, or a ``SourceWarning``. It must stream:
    never hold the whole source in memory. An incremental connector reads after
    ``cursor.start`` and advances ``cursor`` (see the module docstring).
    """

    settings_model: ClassVar[type[ConnectorSettings]]

    def __init__(
        self, settings: ConnectorSettings, context: RunContext, cursor: Cursor | None = None
    ) -> None:
        self.settings = settings
        self.context = context
        self.cursor = cursor

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
        raise NotImplementedError
