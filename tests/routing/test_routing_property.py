"""Property test: the compiled router agrees with a naive reference interpreter.

The reference calls jsonpath-ng per record (no fast paths, no caching, no precompiled tests)
and follows DESIGN.md "Conditions" and "Transformations" literally.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonpath_ng.ext import parse

from airflow_dataflow.routing import compile_router

# ---------------------------------------------------------------- reference interpreter


def is_num(value: Any) -> bool:
    return type(value) in (int, float)


def ref_number(text: str) -> int | float | None:
    body = text.strip()
    if not body or any(ch not in "0123456789+-.eE" for ch in body):
        return None
    digits = body[1:] if body[0] in "+-" else body
    if digits.isdigit():
        return int(body)
    try:
        return float(body)
    except ValueError:
        return None


def canon(value: Any) -> Any:
    if isinstance(value, bool):
        return ("bool", value)
    if is_num(value):
        return ("num", value)
    if isinstance(value, (list, tuple)):
        return ("list", [canon(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((k, canon(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def ref_eq(value: Any, expected: Any) -> bool:
    if is_num(expected) and isinstance(value, str):
        number = ref_number(value)
        return number is not None and number == expected
    return canon(value) == canon(expected)


def ref_order(op: str, value: Any, expected: Any) -> bool:
    if is_num(expected) and isinstance(value, str):
        value = ref_number(value)
    if not ((is_num(value) and is_num(expected)) or (type(value) is str is type(expected))):
        return False
    return {
        "gt": value > expected,
        "gte": value >= expected,
        "lt": value < expected,
        "lte": value <= expected,
    }[op]


def ref_test(op: str, value: Any, expected: Any) -> bool:
    if op == "eq":
        return ref_eq(value, expected)
    if op == "ne":
        return not ref_eq(value, expected)
    if op in ("gt", "gte", "lt", "lte"):
        return ref_order(op, value, expected)
    if op == "in":
        return any(ref_eq(value, member) for member in expected)
    if op == "not_in":
        return not any(ref_eq(value, member) for member in expected)
    if op == "contains":
        if isinstance(value, str):
            return isinstance(expected, str) and expected in value
        if isinstance(value, list):
            return any(ref_eq(item, expected) for item in value)
        return False
    assert op == "matches"
    return isinstance(value, str) and re.search(expected, value) is not None


def ref_find(path: str, record: Any) -> list[Any]:
    return [match.value for match in parse(path).find(record)]


def ref_when(cond: dict[str, Any] | None, record: Any) -> bool:
    if cond is None:
        return True
    if "all" in cond:
        return all(ref_when(c, record) for c in cond["all"])
    if "any" in cond:
        return any(ref_when(c, record) for c in cond["any"])
    if "not" in cond:
        return not ref_when(cond["not"], record)
    (op,) = [key for key in cond if key != "path"]
    values = ref_find(cond["path"], record)
    if op == "exists":
        return bool(values) == cond[op]
    return any(ref_test(op, v, cond[op]) for v in values)


def ref_set(record: dict[str, Any], name: str, value: Any) -> None:
    *parents, last = name.split(".")
    for part in parents:
        if part not in record:
            record[part] = {}
        if not isinstance(record[part], dict):
            raise ValueError("parent is not an object")
        record = record[part]
    record[last] = value


def ref_parent(record: Any, name: str) -> tuple[Any, str]:
    *parents, last = name.split(".")
    for part in parents:
        record = record.get(part) if isinstance(record, dict) else None
    return record, last


def ref_cast(kind: str, value: Any) -> Any:
    if kind == "str":
        if value is None or isinstance(value, (bool, dict, list)):
            return json.dumps(value, ensure_ascii=False)
        return value if isinstance(value, str) else str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if is_num(value) and value in (0, 1):
            return value == 1
        text = value.strip().lower() if isinstance(value, str) else None
        if text in ("true", "1", "yes", "false", "0", "no"):
            return text in ("true", "1", "yes")
        raise ValueError("bad bool")
    number = ref_number(value) if isinstance(value, str) else value
    if not is_num(number):
        raise ValueError("not a number")
    if kind == "float":
        return float(number)
    if float(number) != int(number):
        raise ValueError("not whole")
    return int(number)


def ref_transform(steps: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
    current = copy.deepcopy(record)
    for index, step in enumerate(steps):
        ((kind, arg),) = step.items()
        try:
            if kind == "select":
                out: dict[str, Any] = {}
                for name, path in arg.items():
                    values = ref_find(path, current)
                    value = None if not values else values[0] if len(values) == 1 else values
                    ref_set(out, name, copy.deepcopy(value))
                current = out
            elif kind == "set":
                for name, value in arg.items():
                    ref_set(current, name, copy.deepcopy(value))
            elif kind == "rename":
                moved = []
                for old, new in arg.items():
                    parent, key = ref_parent(current, old)
                    if isinstance(parent, dict) and key in parent:
                        moved.append((new, parent.pop(key)))
                for new, value in moved:
                    ref_set(current, new, value)
            elif kind == "drop":
                for name in arg:
                    parent, key = ref_parent(current, name)
                    if isinstance(parent, dict):
                        parent.pop(key, None)
            elif kind == "cast":
                for name, type_name in arg.items():
                    parent, key = ref_parent(current, name)
                    if isinstance(parent, dict) and key in parent:
                        parent[key] = ref_cast(type_name, parent[key])
        except (ValueError, OverflowError) as exc:
            raise StepFailed(index, kind) from exc
    return current


class StepFailed(Exception):
    def __init__(self, step: int, kind: str) -> None:
        self.step, self.kind = step, kind


def ref_route(rules: list[dict[str, Any]], mode: str, unmatched: list[str], record: Any) -> Any:
    if not isinstance(record, dict):
        return [], [], [(None, None, None)], "dead"
    ordered = [
        r for _, r in sorted(enumerate(rules), key=lambda t: (-t[1].get("priority", 0), t[0]))
    ]
    matched, deliveries, dead = [], [], []
    for rule in ordered:
        if not ref_when(rule.get("when"), record):
            continue
        matched.append(rule["name"])
        try:
            out = ref_transform(rule.get("transform") or [], record)
            deliveries += [(d, canon(out)) for d in rule["to"]]
        except StepFailed as failed:
            dead.append((rule["name"], failed.step, failed.kind))
        if mode == "first":
            break
    if not matched:
        deliveries = [(d, canon(record)) for d in unmatched]
    status = "dead" if dead else "matched" if matched else "unmatched"
    return matched, deliveries, dead, status


# ---------------------------------------------------------------- strategies

KEYS = ["a", "b", "c"]
STRINGS = ["DE", "FR", "abc", "12", "3.5", " 7 ", "1e2", "-4", "nan", "true", "yes", "0", "", "x y"]
CONFUSABLE: list[Any] = [None, True, False, 0, 1, 1.0, "1", "0", "true", 12, "12", 12.0, ""]
scalars = st.one_of(
    st.sampled_from(CONFUSABLE),
    st.sampled_from(CONFUSABLE),
    st.sampled_from(STRINGS),
    st.integers(-5, 200),
    st.sampled_from([0.5, -3.25, 150.0, 1e3]),
    st.text(alphabet="abDE0125.-+ e", max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
top_values = st.one_of(scalars, scalars, json_values)
objects = st.dictionaries(st.sampled_from(KEYS), top_values, min_size=1, max_size=3)
records = st.one_of(objects, objects, objects, objects, objects, st.lists(scalars, max_size=2))
PATHS = [
    "$",
    "$.a",
    "$.b",
    "$.a.b",
    "$.a.c",
    "$.a[0]",
    "$.a[-1]",
    "$.a[*]",
    "$.a[*].b",
    "$['b']",
    "$.c.a[0]",
    "$.b[*][*]",
    "$..b",
    "$.*",
    "$.a[1:]",
]
paths = st.one_of(
    st.sampled_from(["$.a", "$.b", "$.c", "$.a[*]", "$.b[0]"]), st.sampled_from(PATHS)
)
numbers_or_strings = st.one_of(
    st.sampled_from([0, 1, 0.5, 12, 12.0, 150.0]), st.integers(-5, 200), st.sampled_from(STRINGS)
)


def leaf_for(op: str) -> st.SearchStrategy[Any]:
    if op in ("eq", "ne", "contains"):
        value: st.SearchStrategy[Any] = json_values
    elif op in ("gt", "gte", "lt", "lte"):
        value = numbers_or_strings
    elif op in ("in", "not_in"):
        value = st.lists(scalars, max_size=4)
    elif op == "matches":
        value = st.sampled_from(["^a", "b$", "1", "D.", "^$", "[0-9]+"])
    else:
        value = st.booleans()
    return st.builds(lambda p, v: {"path": p, op: v}, paths, value)


OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "matches", "exists"]
leaves = st.sampled_from(OPS).flatmap(leaf_for)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=6,
)
FIELDS = ["a", "b", "x", "a.b", "y.z"]
fields = st.sampled_from(FIELDS)
steps = st.one_of(
    st.builds(lambda m: {"select": m}, st.dictionaries(fields, paths, min_size=1, max_size=3)),
    st.builds(lambda m: {"set": m}, st.dictionaries(fields, json_values, min_size=1, max_size=2)),
    st.builds(lambda m: {"rename": m}, st.dictionaries(fields, fields, min_size=1, max_size=2)),
    st.builds(lambda xs: {"drop": xs}, st.lists(fields, min_size=1, max_size=2)),
    st.builds(
        lambda m: {"cast": m},
        st.dictionaries(
            fields, st.sampled_from(["int", "float", "str", "bool"]), min_size=1, max_size=2
        ),
    ),
)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for index in range(draw(st.integers(1, 4))):
        rule: dict[str, Any] = {
            "name": f"r{index}",
            "to": draw(st.lists(st.sampled_from(["d1", "d2", "d3"]), min_size=1, max_size=2)),
        }
        if draw(st.booleans()):
            rule["priority"] = draw(st.sampled_from([-1, 0, 1, 5]))
        if draw(st.integers(0, 4)):
            rule["when"] = draw(conditions)
        if draw(st.booleans()):
            rule["transform"] = draw(st.lists(steps, min_size=1, max_size=3))
        rules.append(rule)
    return rules


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=rule_lists(),
    mode=st.sampled_from(["all", "first"]),
    unmatched=st.sampled_from([[], ["rest"]]),
    batch=st.lists(records, min_size=1, max_size=4),
)
def test_router_agrees_with_reference(
    rules: list[dict[str, Any]], mode: str, unmatched: list[str], batch: list[Any]
) -> None:
    router = compile_router(rules, mode=mode, unmatched=unmatched)
    for record in batch:
        before = copy.deepcopy(record)
        routed = router.route(record)
        assert canon(record) == canon(before), "router mutated its input"
        expected = ref_route(rules, mode, unmatched, record)
        actual = (
            routed.rules,
            [(d, canon(out)) for d, out in routed.deliveries],
            [(dl.rule, dl.step, dl.step_kind) for dl in routed.dead],
            routed.status,
        )
        assert actual == expected


@settings(max_examples=300, deadline=None)
@given(path=paths, record=json_values)
def test_compiled_paths_agree_with_jsonpath_ng(path: str, record: Any) -> None:
    from airflow_dataflow.routing import compile_path

    expected = canon(ref_find(path, record))
    assert canon(compile_path(path)(record)) == expected
    assert canon(compile_path(path, fast=False)(record)) == expected


@settings(max_examples=1500, deadline=None)
@given(cond=st.one_of(leaves, conditions), record=records)
def test_conditions_agree_with_reference(cond: dict[str, Any], record: Any) -> None:
    from airflow_dataflow.routing import compile_condition

    assert compile_condition(cond)(record) is ref_when(cond, record)


def confusable_leaf(op: str) -> st.SearchStrategy[Any]:
    value: st.SearchStrategy[Any]
    if op in ("in", "not_in"):
        value = st.lists(st.sampled_from(CONFUSABLE), max_size=3)
    elif op in ("gt", "gte", "lt", "lte"):
        value = st.sampled_from([v for v in CONFUSABLE if isinstance(v, (int, float, str))])
        value = value.filter(lambda v: not isinstance(v, bool))
    elif op == "matches":
        value = st.sampled_from(["^1", "e$", "^$"])
    elif op == "exists":
        value = st.booleans()
    else:
        value = st.one_of(st.sampled_from(CONFUSABLE), st.lists(st.sampled_from(CONFUSABLE)))
    path = st.sampled_from(["$.a", "$.a[*]", "$.b"])
    return st.builds(lambda p, v: {"path": p, op: v}, path, value)


@settings(max_examples=1500, deadline=None)
@given(
    cond=st.sampled_from(OPS).flatmap(confusable_leaf),
    value=st.one_of(st.sampled_from(CONFUSABLE), st.lists(st.sampled_from(CONFUSABLE), max_size=3)),
)
def test_type_confusion_agrees_with_reference(cond: dict[str, Any], value: Any) -> None:
    from airflow_dataflow.routing import compile_condition

    record = {"a": value}
    assert compile_condition(cond)(record) is ref_when(cond, record)
