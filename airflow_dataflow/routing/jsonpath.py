"""JSONPath compiled once: jsonpath-ng for the grammar, direct dict/list walks for simple paths."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jsonpath_ng.jsonpath as jp
from jsonpath_ng.ext import parse as _parse

from airflow_dataflow.errors import DataflowError

PathFinder = Callable[[Any], list[Any]]

_FIELD, _INDEX, _WILDCARD = 0, 1, 2
_MISSING = object()


class JsonPathSyntaxError(DataflowError, ValueError):
    """A JSONPath expression that does not parse."""


def _parse_path(expression: object) -> jp.JSONPath:
    if not isinstance(expression, str):
        raise JsonPathSyntaxError(
            f"JSONPath must be a string, got {type(expression).__name__}: {expression!r}"
        )
    if not expression.strip():
        raise JsonPathSyntaxError("JSONPath is empty")
    try:
        return _parse(expression)
    except Exception as exc:  # jsonpath-ng raises lexer/parser errors and bare Exceptions
        raise JsonPathSyntaxError(f"invalid JSONPath {expression!r}: {exc}") from None


def _flatten(node: jp.JSONPath) -> list[jp.JSONPath]:
    if type(node) is jp.Child:
        return _flatten(node.left) + _flatten(node.right)
    return [node]


def _simple_steps(node: jp.JSONPath) -> list[tuple[int, Any]] | None:
    """The path as (kind, argument) steps when it only uses fields, indices and `*`; else None."""
    if jp.auto_id_field is not None:
        return None
    nodes = _flatten(node)
    if nodes and type(nodes[0]) is jp.Root:
        nodes = nodes[1:]
    steps: list[tuple[int, Any]] = []
    for part in nodes:
        kind = type(part)
        if (
            kind is jp.Fields
            and len(part.fields) == 1
            and not getattr(part, "_deprecated_wildcard_use", False)
        ):
            steps.append((_FIELD, part.fields[0]))
        elif kind is jp.Index and len(part.indices) == 1:
            steps.append((_INDEX, part.indices[0]))
        elif kind is jp.Wildcard:
            steps.append((_WILDCARD, None))
        else:
            return None
    return steps


def _fields_finder(names: tuple[str, ...]) -> PathFinder:
    def find(record: Any) -> list[Any]:
        value = record
        for name in names:
            if not isinstance(value, dict):
                return []
            value = value.get(name, _MISSING)
            if value is _MISSING:
                return []
        return [value]

    return find


def _steps_finder(steps: list[tuple[int, Any]]) -> PathFinder:
    def find(record: Any) -> list[Any]:
        current = [record]
        for kind, arg in steps:
            found: list[Any] = []
            for value in current:
                if kind == _FIELD:
                    if isinstance(value, dict):
                        item = value.get(arg, _MISSING)
                        if item is not _MISSING:
                            found.append(item)
                elif kind == _INDEX:
                    if isinstance(value, (list, tuple)) and -len(value) <= arg < len(value):
                        found.append(value[arg])
                elif isinstance(value, (list, tuple)):
                    found.extend(value)
                elif isinstance(value, dict):
                    found.extend(value.values())
            if not found:
                return found
            current = found
        return current

    return find


def _generic_finder(parsed: jp.JSONPath) -> PathFinder:
    def find(record: Any) -> list[Any]:
        return [match.value for match in parsed.find(record)]

    return find


@lru_cache(maxsize=4096)
def _compile(expression: str, fast: bool) -> PathFinder:
    parsed = _parse_path(expression)
    steps = _simple_steps(parsed) if fast else None
    if steps is None:
        return _generic_finder(parsed)
    if all(kind == _FIELD for kind, _ in steps):
        return _fields_finder(tuple(arg for _, arg in steps))
    return _steps_finder(steps)


def compile_path(expression: str, *, fast: bool = True) -> PathFinder:
    """Compile a JSONPath once into `finder(record) -> [values]`; `fast=False` forces jsonpath-ng."""
    if not isinstance(expression, str):
        _parse_path(expression)
    return _compile(expression, fast)


def is_fast_path(expression: str) -> bool:
    """True when `compile_path` walks this path directly instead of calling jsonpath-ng."""
    return _simple_steps(_parse_path(expression)) is not None
