"""Transform steps (`transform:`) compiled into one function: `compile_transforms(steps)(record)`."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.routing.casts import CASTS
from airflow_dataflow.routing.fields import (
    MISSING,
    Field,
    get_field,
    pop_field,
    set_field,
    split_field,
)
from airflow_dataflow.routing.jsonpath import JsonPathSyntaxError, compile_path
from airflow_dataflow.routing.templates import render_once
from airflow_dataflow.routing.values import json_copy, kind_of

Step = Callable[[dict[str, Any]], dict[str, Any]]
Transform = Callable[[dict[str, Any]], dict[str, Any]]
STEP_KINDS = ("select", "set", "rename", "drop", "cast")


class TransformError(DataflowError, ValueError):
    """A malformed transform step (unknown kind, bad field name, unknown cast type, ...)."""


class TransformStepError(TransformError):
    """A step failed on one record; names the 0-based step index and kind."""

    def __init__(self, step: int, kind: str, reason: str) -> None:
        self.step = step
        self.kind = kind
        self.reason = reason
        super().__init__(f"transform step {step} ({kind}): {reason}")


def _field(name: Any, where: str) -> Field:
    field = split_field(name)
    if field is None:
        raise TransformError(f"{where}: bad field name {name!r} (non-empty names, dots to nest)")
    return field


def _mapping(arg: Any, kind: str, where: str) -> Mapping[Any, Any]:
    if not isinstance(arg, Mapping) or not arg:
        raise TransformError(f"{where}: {kind!r} needs a non-empty mapping, got {kind_of(arg)}")
    return arg


def _select(arg: Any, where: str, variables: Mapping[str, Any] | None) -> Step:
    pairs = []
    for name, path in _mapping(arg, "select", where).items():
        try:
            pairs.append((_field(name, where), compile_path(path)))
        except JsonPathSyntaxError as exc:
            raise JsonPathSyntaxError(f"{where}.{name}: {exc}") from None

    def select(record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, find in pairs:
            values = find(record)
            value = None if not values else values[0] if len(values) == 1 else values
            set_field(out, field, json_copy(value))
        return out

    return select


def _set(arg: Any, where: str, variables: Mapping[str, Any] | None) -> Step:
    pairs = [
        (_field(name, where), render_once(value, variables, TransformError, f"{where}.{name}"))
        for name, value in _mapping(arg, "set", where).items()
    ]

    def set_(record: dict[str, Any]) -> dict[str, Any]:
        for field, value in pairs:
            set_field(record, field, json_copy(value))
        return record

    return set_


def _rename(arg: Any, where: str, variables: Mapping[str, Any] | None) -> Step:
    pairs = [
        (_field(old, where), _field(new, where))
        for old, new in _mapping(arg, "rename", where).items()
    ]

    def rename(record: dict[str, Any]) -> dict[str, Any]:
        moved = [(new, pop_field(record, old)) for old, new in pairs]
        for new, value in moved:
            if value is not MISSING:
                set_field(record, new, value)
        return record

    return rename


def _drop(arg: Any, where: str, variables: Mapping[str, Any] | None) -> Step:
    if not isinstance(arg, (list, tuple)) or not arg:
        raise TransformError(f"{where}: 'drop' needs a non-empty list of fields")
    fields = [_field(name, where) for name in arg]

    def drop(record: dict[str, Any]) -> dict[str, Any]:
        for field in fields:
            pop_field(record, field)
        return record

    return drop


def _cast(arg: Any, where: str, variables: Mapping[str, Any] | None) -> Step:
    casts = []
    for name, type_name in _mapping(arg, "cast", where).items():
        if type_name not in CASTS:
            close = difflib.get_close_matches(str(type_name), CASTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TransformError(
                f"{where}.{name}: unknown cast type {type_name!r}{hint}; "
                f"expected one of {', '.join(CASTS)}"
            )
        casts.append((_field(name, where), name, type_name, CASTS[type_name]))

    def cast(record: dict[str, Any]) -> dict[str, Any]:
        for field, name, type_name, convert in casts:
            value = get_field(record, field)
            if value is MISSING:
                continue
            try:
                converted = convert(value)
            except ValueError as exc:
                raise ValueError(f"cast {name} to {type_name}: {exc}") from exc
            set_field(record, field, converted)
        return record

    return cast


_BUILDERS: dict[str, Callable[[Any, str, Mapping[str, Any] | None], Step]] = {
    "select": _select,
    "set": _set,
    "rename": _rename,
    "drop": _drop,
    "cast": _cast,
}


def _compile_step(step: Any, where: str, variables: Mapping[str, Any] | None) -> tuple[str, Step]:
    if not isinstance(step, Mapping) or len(step) != 1:
        keys = ", ".join(repr(key) for key in step) if isinstance(step, Mapping) else ""
        raise TransformError(
            f"{where}: a transform step is a mapping with exactly one key of "
            f"{', '.join(STEP_KINDS)}" + (f" (found {keys})" if keys else f", got {kind_of(step)}")
        )
    ((kind, arg),) = step.items()
    if kind not in _BUILDERS:
        close = difflib.get_close_matches(str(kind), STEP_KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TransformError(
            f"{where}: unknown transform step {kind!r}{hint}; expected one of {', '.join(STEP_KINDS)}"
        )
    return kind, _BUILDERS[kind](arg, f"{where}.{kind}", variables)


def compile_transforms(
    steps: Sequence[Mapping[str, Any]] | None,
    *,
    variables: Mapping[str, Any] | None = None,
    where: str = "transform",
) -> Transform:
    """Compile steps once into `transform(record) -> new record` (the input is never mutated).

    A step failing on a record raises TransformStepError (step index, kind, reason).
    """
    if steps is not None and not isinstance(steps, (list, tuple)):
        raise TransformError(f"{where}: must be a list of steps, got {kind_of(steps)}")
    compiled = [
        _compile_step(step, f"{where}[{index}]", variables)
        for index, step in enumerate(steps or ())
    ]
    copy_first = not compiled or compiled[0][0] != "select"

    def transform(record: dict[str, Any]) -> dict[str, Any]:
        current = json_copy(record) if copy_first else record
        for index, (kind, step) in enumerate(compiled):
            try:
                current = step(current)
            except Exception as exc:
                raise TransformStepError(index, kind, str(exc)) from exc
        return current

    return transform
