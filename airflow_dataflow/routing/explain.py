"""Why a record was routed where it was: a tracing evaluator for `test-route --explain`.

The router (`router.py`, `conditions.py`) is built for speed: fast paths, precompiled per-value
tests, no record of *why*. This module is the opposite: a slow, plainly written evaluator over
the rule dicts (`{name, priority, when, transform, to}`) that follows DESIGN.md "Conditions"
line by line and records every leaf it evaluates. It is only used by the dry run, never on the
per-record path of a real run. Transforms are *not* re-implemented: the real compiled
transforms run, so the output shown is exactly what delivery would get. A property test keeps
the matched rules equal to the router's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dataflow.routing import (
    ConditionError,
    TransformStepError,
    compile_path,
    compile_router,
    compile_transforms,
)
from airflow_dataflow.templating import is_template, render_value

PathFinder = Callable[[Any], list[Any]]
Transform = Callable[[dict[str, Any]], dict[str, Any]]

NO_WHEN = "no when: matches every record"
SKIPPED_FIRST = "mode first: an earlier rule matched"
_NUMBER_CHARS = frozenset("0123456789+-.eE")


# ---------------------------------------------------------------- value semantics (DESIGN.md)


def _is_number(value: Any) -> bool:
    """int or float; a bool is not a number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_number(text: str) -> int | float | None:
    """The number a string spells (`"12"`, `" 3.5 "`, `"1e2"`), else None (no nan/inf/`1_0`)."""
    body = text.strip()
    if not body or not set(body) <= _NUMBER_CHARS:
        return None
    try:
        return int(body)
    except ValueError:
        pass
    try:
        return float(body)
    except ValueError:
        return None


def _strict_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), bools apart from numbers, no other mixing."""
    if _is_number(left) or _is_number(right):
        return _is_number(left) and _is_number(right) and left == right
    if isinstance(left, (list, tuple)) or isinstance(right, (list, tuple)):
        return (
            isinstance(left, (list, tuple))
            and isinstance(right, (list, tuple))
            and len(left) == len(right)
            and all(_strict_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, dict) or isinstance(right, dict):
        return (
            isinstance(left, dict)
            and isinstance(right, dict)
            and left.keys() == right.keys()
            and all(_strict_equal(left[key], right[key]) for key in left)
        )
    return type(left) is type(right) and left == right


def _equals(value: Any, expected: Any) -> bool:
    """`v == expected`, where a numeric string equals the number the rule gives."""
    if _is_number(expected) and isinstance(value, str):
        number = _as_number(value)
        return number is not None and number == expected
    return _strict_equal(value, expected)


def _ordered(op: str, value: Any, expected: Any) -> bool:
    """gt/gte/lt/lte: number with number (numeric strings too), string with string."""
    if _is_number(expected):
        number = _as_number(value) if isinstance(value, str) else value
        if not _is_number(number):
            return False
        value = number
    elif not (isinstance(expected, str) and isinstance(value, str)):
        return False
    if op == "gt":
        return bool(value > expected)
    if op == "gte":
        return bool(value >= expected)
    if op == "lt":
        return bool(value < expected)
    return bool(value <= expected)


def _holds(op: str, value: Any, expected: Any, regex: re.Pattern[str] | None) -> bool:
    """Whether one selected value v satisfies `op` (every operator but `exists`)."""
    if op == "eq":
        return _equals(value, expected)
    if op == "ne":
        return not _equals(value, expected)
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(op, value, expected)
    if op == "in":
        return any(_equals(value, member) for member in expected)
    if op == "not_in":
        return not any(_equals(value, member) for member in expected)
    if op == "contains":
        if isinstance(value, str):
            return isinstance(expected, str) and expected in value
        if isinstance(value, (list, tuple)):
            return any(_equals(item, expected) for item in value)
        return False
    if op == "matches":
        return isinstance(value, str) and regex is not None and regex.search(value) is not None
    raise ConditionError(f"unknown operator {op!r}")


# ---------------------------------------------------------------- compiled once per run


@dataclass
class _Leaf:
    where: str
    path: str
    op: str
    value: Any
    find: PathFinder
    regex: re.Pattern[str] | None


@dataclass
class _Group:
    where: str
    kind: str  # "all" | "any" | "not"
    parts: list[_Leaf | _Group]


@dataclass
class _Rule:
    name: str
    priority: float
    when: _Leaf | _Group | None
    transform: Transform
    to: list[str]


def _build(cond: Mapping[str, Any], variables: dict[str, Any], where: str) -> _Leaf | _Group:
    for kind in ("all", "any"):
        if kind in cond:
            parts = [
                _build(item, variables, f"{where}.{kind}[{i}]") for i, item in enumerate(cond[kind])
            ]
            return _Group(where, kind, parts)
    if "not" in cond:
        return _Group(where, "not", [_build(cond["not"], variables, f"{where}.not")])
    (op,) = [key for key in cond if key != "path"]
    value = cond[op]
    if _has_template(value):
        try:
            value = render_value(value, variables)
        except Exception as exc:
            raise ConditionError(f"{where}.{op}: cannot render template {value!r}: {exc}") from exc
    path = cond["path"]
    regex = re.compile(value) if op == "matches" else None
    return _Leaf(where, path, op, value, compile_path(path), regex)


def _has_template(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_template(item) for item in value)
    if isinstance(value, dict):
        return any(_has_template(item) for item in value.values())
    return is_template(value)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return type(value).__name__ if value is not None else "null"


# ---------------------------------------------------------------- tracing evaluation


@dataclass
class _Outcome:
    result: bool
    decider: dict[str, Any]  # the leaf trace that determined `result`
    negated_by: list[str]  # `not` combinators between that leaf and here


def _evaluate(node: _Leaf | _Group, record: Any, trace: list[dict[str, Any]]) -> _Outcome:
    if isinstance(node, _Leaf):
        saw = node.find(record)
        if node.op == "exists":
            result = bool(saw) is node.value
        else:
            result = any(_holds(node.op, value, node.value, node.regex) for value in saw)
        leaf = {
            "where": node.where,
            "path": node.path,
            "op": node.op,
            "value": node.value,
            "saw": list(saw),
            "result": result,
        }
        trace.append(leaf)
        return _Outcome(result, leaf, [])
    if node.kind == "not":
        inner = _evaluate(node.parts[0], record, trace)
        return _Outcome(not inner.result, inner.decider, [node.where, *inner.negated_by])
    # all: stops at the first false part; any: stops at the first true part
    stop_on = node.kind == "any"
    outcome = None
    for part in node.parts:
        outcome = _evaluate(part, record, trace)
        if outcome.result is stop_on:
            break
    assert outcome is not None  # combinators are non-empty (the router checked)
    return outcome


class Explainer:
    """Rules compiled once per run; `explain(record)` traces how each rule decided."""

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]],
        *,
        mode: str = "all",
        unmatched: Sequence[str] = (),
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        # The router validates the rules (shape, operators, paths, regexes, templates) with the
        # errors users know; the tracer below may then assume well-formed conditions.
        compile_router(rules, mode=mode, unmatched=unmatched, variables=variables)
        names = dict(variables or {})
        built = []
        for index, rule in enumerate(rules):
            name = rule["name"]
            priority = rule.get("priority")
            when = rule.get("when")
            try:
                tree = None if when is None else _build(when, names, "when")
            except ConditionError as exc:
                raise ConditionError(f"rule {name!r}: {exc}") from None
            transform = compile_transforms(rule.get("transform"), variables=variables)
            built.append(
                (
                    index,
                    _Rule(
                        name, 0 if priority is None else priority, tree, transform, list(rule["to"])
                    ),
                )
            )
        # higher priority first; ties keep file order
        built.sort(key=lambda item: (-item[1].priority, item[0]))
        self._rules = [rule for _, rule in built]
        self.mode = mode
        self.unmatched = list(unmatched)

    def explain(self, record: Any) -> list[dict[str, Any]]:
        """Per rule in priority order: matched or not, the deciding leaf, every leaf, the output."""
        report: list[dict[str, Any]] = []
        if not isinstance(record, dict):
            reason = f"record is not a JSON object (got {_kind(record)}): no rule is evaluated"
            return [self._skipped(rule, reason) for rule in self._rules]
        matched_before = False
        for rule in self._rules:
            if matched_before and self.mode == "first":
                report.append(self._skipped(rule, SKIPPED_FIRST))
                continue
            entry = self._explain_rule(rule, record)
            report.append(entry)
            matched_before = matched_before or entry["matched"]
        return report

    @staticmethod
    def _skipped(rule: _Rule, reason: str) -> dict[str, Any]:
        return {"rule": rule.name, "priority": rule.priority, "matched": False, "skipped": reason}

    @staticmethod
    def _explain_rule(rule: _Rule, record: dict[str, Any]) -> dict[str, Any]:
        trace: list[dict[str, Any]] = []
        entry: dict[str, Any] = {"rule": rule.name, "priority": rule.priority}
        if rule.when is None:
            matched = True
            decided_by: dict[str, Any] = {"reason": NO_WHEN}
        else:
            try:
                outcome = _evaluate(rule.when, record, trace)
            except Exception as exc:  # conditions never raise by design; the router would
                entry.update(  # dead-letter the record for this rule and go on
                    matched=False,
                    decided_by={"reason": f"condition: {exc}"},
                    conditions=trace,
                    destinations=[],
                    output=None,
                )
                return entry
            matched = outcome.result
            decided_by = dict(outcome.decider)
            if outcome.negated_by:
                decided_by["negated_by"] = outcome.negated_by
        entry.update(matched=matched, decided_by=decided_by, conditions=trace)
        if not matched:
            entry.update(destinations=[], output=None)
            return entry
        try:
            output: Any = rule.transform(record)
        except TransformStepError as exc:
            entry.update(destinations=[], output={"dead_letter": str(exc)})
        else:
            entry.update(destinations=list(rule.to), output=output)
        return entry


def explain_record(
    rules: Sequence[Mapping[str, Any]],
    record: Any,
    *,
    mode: str = "all",
    unmatched: Sequence[str] = (),
    variables: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One-off `Explainer(rules, ...).explain(record)`; build an Explainer for many records."""
    return Explainer(rules, mode=mode, unmatched=unmatched, variables=variables).explain(record)
