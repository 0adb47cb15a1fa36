"""Conditions (`when:`) compiled into predicates: `compile_condition(cond)(record) -> bool`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.routing.jsonpath import JsonPathSyntaxError, PathFinder, compile_path
from airflow_dataflow.routing.templates import render_once
from airflow_dataflow.routing.values import (
    Test,
    equals_test,
    is_number,
    kind_of,
    membership_test,
    parse_number,
)

Predicate = Callable[[Any], bool]

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "matches", "exists")
COMBINATORS = ("all", "any", "not")
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


class ConditionError(DataflowError, ValueError):
    """A malformed condition (unknown operator, wrong value type, bad regex, ...)."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """A compiled leaf: `predicate(record)`, plus what it was built from (for code generation).

    `test` is the per-value test of the operator (None for `exists`); `expected` is the
    rendered rule value.
    """

    predicate: Predicate
    path: str
    op: str
    expected: Any
    test: Test | None


@dataclass(frozen=True, slots=True)
class Combination:
    """A compiled `all`/`any` (two or more parts) or `not` (one part)."""

    predicate: Predicate
    kind: str
    parts: tuple[Node, ...]


Node = Leaf | Combination


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _order_test(op: str, expected: Any, where: str) -> Test:
    compare = _ORDER[op]
    if is_number(expected):

        def test_number(value: Any) -> bool:
            if isinstance(value, str):
                number = parse_number(value)
                return number is not None and compare(number, expected)
            return is_number(value) and compare(value, expected)

        return test_number
    if isinstance(expected, str):
        return lambda value: isinstance(value, str) and compare(value, expected)
    raise ConditionError(f"{where}: {op!r} needs a number or a string, got {kind_of(expected)}")


def _contains_test(expected: Any) -> Test:
    is_member = equals_test(expected)
    is_text = isinstance(expected, str)

    def test(value: Any) -> bool:
        if isinstance(value, str):
            return is_text and expected in value
        if isinstance(value, (list, tuple)):
            return any(is_member(item) for item in value)
        return False

    return test


def _matches_test(pattern: Any, where: str) -> Test:
    if not isinstance(pattern, str):
        raise ConditionError(f"{where}: 'matches' needs a regular expression string")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConditionError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
    search = regex.search
    return lambda value: isinstance(value, str) and search(value) is not None


def _value_test(op: str, expected: Any, where: str) -> Test:
    """The per-value test of one operator (every operator but `exists`)."""
    if op == "eq":
        return equals_test(expected)
    if op == "ne":
        equal = equals_test(expected)
        return lambda value: not equal(value)
    if op in _ORDER:
        return _order_test(op, expected, where)
    if op in ("in", "not_in"):
        if not isinstance(expected, (list, tuple)):
            raise ConditionError(f"{where}: {op!r} needs a list, got {kind_of(expected)}")
        member = membership_test(expected)
        return member if op == "in" else (lambda value: not member(value))
    if op == "contains":
        return _contains_test(expected)
    return _matches_test(expected, where)


def _some(find: PathFinder, test: Test) -> Predicate:
    def predicate(record: Any) -> bool:
        # explicit loops: cheaper than any()/all() over a generator on the per-record path
        for value in find(record):  # noqa: SIM110
            if test(value):
                return True
        return False

    return predicate


def _leaf(cond: Mapping[str, Any], variables: Mapping[str, Any] | None, where: str) -> Leaf:
    ops = [key for key in cond if key != "path"]
    unknown = [key for key in ops if key not in OPERATORS]
    if unknown:
        raise ConditionError(
            f"{where}: unknown operator {unknown[0]!r}{_suggest(unknown[0], OPERATORS)}; "
            f"expected one of {', '.join(OPERATORS)}"
        )
    if len(ops) != 1:
        found = ", ".join(ops) if ops else "none"
        raise ConditionError(f"{where}: a condition needs exactly one operator (found {found})")
    path = cond["path"]
    try:
        find = compile_path(path)
    except JsonPathSyntaxError as exc:
        raise JsonPathSyntaxError(f"{where}.path: {exc}") from None
    op = ops[0]
    expected = render_once(cond[op], variables, ConditionError, f"{where}.{op}")
    if op == "exists":
        if not isinstance(expected, bool):
            raise ConditionError(f"{where}: 'exists' needs true or false, got {expected!r}")
        if expected:
            return Leaf(lambda record: bool(find(record)), path, op, expected, None)
        return Leaf(lambda record: not find(record), path, op, expected, None)
    test = _value_test(op, expected, where)
    return Leaf(_some(find, test), path, op, expected, test)


def _combinator(key: str, operand: Any, variables: Mapping[str, Any] | None, where: str) -> Node:
    if key == "not":
        inner = _compile(operand, variables, f"{where}.not")
        inner_predicate = inner.predicate
        return Combination(lambda record: not inner_predicate(record), key, (inner,))
    if not isinstance(operand, (list, tuple)) or not operand:
        raise ConditionError(f"{where}: {key!r} needs a non-empty list of conditions")
    nodes = tuple(
        _compile(item, variables, f"{where}.{key}[{i}]") for i, item in enumerate(operand)
    )
    if len(nodes) == 1:
        return nodes[0]
    parts = [node.predicate for node in nodes]
    if key == "all":

        def all_of(record: Any) -> bool:
            for part in parts:  # noqa: SIM110
                if not part(record):
                    return False
            return True

        return Combination(all_of, key, nodes)

    def any_of(record: Any) -> bool:
        for part in parts:  # noqa: SIM110
            if part(record):
                return True
        return False

    return Combination(any_of, key, nodes)


def _compile(cond: Any, variables: Mapping[str, Any] | None, where: str) -> Node:
    if not isinstance(cond, Mapping):
        raise ConditionError(f"{where}: a condition must be a mapping, got {kind_of(cond)}")
    combinators = [key for key in cond if key in COMBINATORS]
    if combinators:
        if len(cond) != 1:
            others = ", ".join(repr(key) for key in cond)
            raise ConditionError(
                f"{where}: {combinators[0]!r} must be the only key of its condition (found {others})"
            )
        return _combinator(combinators[0], cond[combinators[0]], variables, where)
    if "path" not in cond:
        keys = ", ".join(repr(key) for key in cond) or "none"
        raise ConditionError(
            f"{where}: a condition needs 'path' and one operator, or one of all/any/not "
            f"(found keys: {keys})"
        )
    return _leaf(cond, variables, where)


def compile_condition_node(
    cond: Mapping[str, Any], *, variables: Mapping[str, Any] | None = None, where: str = "when"
) -> Node:
    """Compile a condition once into a tree of `Leaf`/`Combination` nodes.

    Each node carries its closure predicate; `routing.codegen` turns the tree into Python
    source. Templated values are rendered here, once.
    """
    return _compile(cond, variables, where)


def compile_condition(
    cond: Mapping[str, Any] | None,
    *,
    variables: Mapping[str, Any] | None = None,
    where: str = "when",
) -> Predicate:
    """Compile a condition once; templated values are rendered now with `variables`.

    `None` (no `when:`) matches every record. Errors name the place (`when.any[1]`).
    """
    if cond is None:
        return lambda record: True
    return _compile(cond, variables, where).predicate
