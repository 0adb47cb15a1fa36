"""Malformed rules, conditions and transforms fail at compile time with clear messages."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_dataflow.routing import (
    ConditionError,
    JsonPathSyntaxError,
    RuleError,
    TransformError,
    compile_condition,
    compile_router,
    compile_transforms,
)


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ({"path": "$.a"}, "exactly one operator (found none)"),
        ({"path": "$.a", "eq": 1, "gt": 2}, "exactly one operator (found eq, gt)"),
        ({"path": "$.a", "gtt": 1}, "unknown operator 'gtt' (did you mean 'gt'?)"),
        ({"path": "$.a", "in": "DE"}, "'in' needs a list, got string"),
        ({"path": "$.a", "not_in": 3}, "'not_in' needs a list, got number"),
        ({"path": "$.a", "matches": "("}, "bad regular expression '('"),
        ({"path": "$.a", "matches": 5}, "'matches' needs a regular expression string"),
        ({"path": "$.a", "exists": "yes"}, "'exists' needs true or false"),
        ({"path": "$.a", "gt": [1]}, "'gt' needs a number or a string, got array"),
        ({"path": "$.a", "lte": None}, "'lte' needs a number or a string, got null"),
        ({"eq": 1}, "needs 'path' and one operator"),
        ({}, "needs 'path' and one operator"),
        ({"any": []}, "'any' needs a non-empty list"),
        ({"all": {"path": "$.a", "eq": 1}}, "'all' needs a non-empty list"),
        ({"any": [{"path": "$.a", "eq": 1}], "path": "$.a"}, "'any' must be the only key"),
        ({"not": [1]}, "when.not: a condition must be a mapping, got array"),
        (
            {"all": [{"path": "$.a", "eq": 1}, {"any": [{"path": "$.b", "bad": 1}]}]},
            "when.all[1].any[0]: unknown operator 'bad'",
        ),
        ("x", "a condition must be a mapping, got string"),
        ({"path": "$.a", "eq": "{{ params.missing.x }}"}, "when.eq: cannot render template"),
    ],
)
def test_malformed_conditions(cond: Any, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(cond, variables={"params": {}})
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("path", ["$.[", "$..", "", 5, None])
def test_bad_paths_in_conditions(path: Any) -> None:
    with pytest.raises(JsonPathSyntaxError, match=r"when\.path: "):
        compile_condition({"path": path, "eq": 1})


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"explode": ["a"]}], "unknown transform step 'explode'"),
        ([{"selct": {"a": "$.a"}}], "(did you mean 'select'?)"),
        ([{"set": {"a": 1}, "drop": ["b"]}], "exactly one key"),
        ([{}], "exactly one key"),
        (["drop"], "a transform step is a mapping"),
        ([{"cast": {"a": "integer"}}], "unknown cast type 'integer' (did you mean 'int'?)"),
        ([{"cast": {"a": "decimal"}}], "expected one of int, float, str, bool, datetime"),
        ([{"drop": "a"}], "'drop' needs a non-empty list"),
        ([{"set": []}], "'set' needs a non-empty mapping"),
        ([{"rename": {"a": ""}}], "bad field name ''"),
        ([{"set": {"a..b": 1}}], "bad field name 'a..b'"),
        ([{"drop": [3]}], "bad field name 3"),
        ({"set": {"a": 1}}, "must be a list of steps"),
        ([{"set": {"a": 1}}, {"set": {"b": "{{ nope.x }}"}}], "transform[1].set.b: cannot render"),
    ],
)
def test_malformed_transforms(steps: Any, message: str) -> None:
    with pytest.raises(TransformError) as info:
        compile_transforms(steps)
    assert message in str(info.value)


def test_bad_path_in_select() -> None:
    with pytest.raises(JsonPathSyntaxError, match=r"transform\[0\]\.select\.x: invalid JSONPath"):
        compile_transforms([{"select": {"x": "$.["}}])


@pytest.mark.parametrize(
    ("rules", "kwargs", "error", "message"),
    [
        (
            [{"name": "r", "to": ["d"]}],
            {"mode": "any"},
            RuleError,
            "mode: must be 'all' or 'first'",
        ),
        ([{"to": ["d"]}], {}, RuleError, "rules[0]: a rule needs a non-empty string 'name'"),
        ([{"name": "r", "to": "d"}], {}, RuleError, "rule 'r'.to: needs a list"),
        ([{"name": "r"}], {}, RuleError, "rule 'r'.to: needs a list"),
        ([{"name": "r", "to": [""]}], {}, RuleError, "destination names are non-empty"),
        ([{"name": "r", "to": ["d"]}, {"name": "r", "to": ["d"]}], {}, RuleError, "duplicate"),
        ([{"name": "r", "priority": "high", "to": ["d"]}], {}, RuleError, "'priority' must be"),
        ([{"name": "r", "priority": True, "to": ["d"]}], {}, RuleError, "'priority' must be"),
        ([{"name": "r", "to": ["d"]}], {"unmatched": "rest"}, RuleError, "unmatched: needs a list"),
        (["r"], {}, RuleError, "rules[0]: a rule must be a mapping"),
        (
            [{"name": "r", "when": {"path": "$.a", "gtt": 1}, "to": ["d"]}],
            {},
            ConditionError,
            "rule 'r': when: unknown operator 'gtt'",
        ),
        (
            [{"name": "r", "when": {"path": "$.[", "eq": 1}, "to": ["d"]}],
            {},
            JsonPathSyntaxError,
            "rule 'r': when.path: invalid JSONPath '$.['",
        ),
        (
            [{"name": "r", "transform": [{"cast": {"a": "x"}}], "to": ["d"]}],
            {},
            TransformError,
            "rule 'r': transform[0].cast.a: unknown cast type 'x'",
        ),
    ],
)
def test_malformed_rules(
    rules: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        compile_router(rules, **kwargs)
    assert message in str(info.value)
