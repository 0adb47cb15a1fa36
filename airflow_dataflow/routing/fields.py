"""Dotted field names (`a.b.c`) addressing nested keys of a record."""

from __future__ import annotations

from typing import Any

Field = tuple[str, ...]
MISSING: Any = object()


class FieldError(ValueError):
    """A nested field cannot be written because a parent is not an object."""


def split_field(name: object) -> Field | None:
    """`"a.b"` -> `("a", "b")`; None when the name is not a string of non-empty parts."""
    if not isinstance(name, str):
        return None
    parts = tuple(name.split("."))
    return parts if all(parts) else None


def get_field(record: dict[str, Any], field: Field) -> Any:
    """The value at `field`, or the `MISSING` sentinel."""
    value: Any = record
    for part in field:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def set_field(record: dict[str, Any], field: Field, value: Any) -> None:
    """Write `value` at `field`, creating intermediate objects; a non-object parent fails."""
    target = record
    for depth, part in enumerate(field[:-1]):
        child = target.get(part, MISSING)
        if child is MISSING:
            child = target[part] = {}
        elif not isinstance(child, dict):
            parent = ".".join(field[: depth + 1])
            raise FieldError(f"{parent!r} is not an object (got {type(child).__name__})")
        target = child
    target[field[-1]] = value


def pop_field(record: dict[str, Any], field: Field) -> Any:
    """Remove and return the value at `field`, or `MISSING` when absent."""
    parent = get_field(record, field[:-1]) if len(field) > 1 else record
    if not isinstance(parent, dict):
        return MISSING
    return parent.pop(field[-1], MISSING)
