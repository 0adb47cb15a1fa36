"""JSONPath: fast paths agree with jsonpath-ng; syntax errors are clear."""

from __future__ import annotations

from typing import Any

import pytest
from jsonpath_ng.ext import parse

from airflow_dataflow.routing.jsonpath import JsonPathSyntaxError, compile_path, is_fast_path

RECORDS: list[Any] = [
    {
        "a": {"b": 1, "c": [1, 2]},
        "items": [{"b": 1}, {"b": [2, 3]}, 4, {"c": 5}],
        "key with space": "x",
        "n": None,
        "s": "text",
        "d": {"x": 1, "y": {"b": 2}},
        "0": "zero",
        "nested": [[1, 2], [3]],
    },
    {"a": [1, 2, 3], "items": {"b": 9}, "s": ["t"]},
    {"a": None, "items": []},
    {},
]

FAST = [
    "$",
    "$.a",
    "$.a.b",
    "$.a.c",
    "$.a.c[0]",
    "$.a.c[-1]",
    "$.a[0]",
    "$.a[-1]",
    "$.a[5]",
    "$.a[-9]",
    "$.items[*]",
    "$.items[*].b",
    "$.items[0].b",
    "$.items[-1]",
    "$['key with space']",
    '$["key with space"]',
    "$.d.*",
    "$.d[*]",
    "$.d[*].b",
    "$.s[0]",
    "$.s[*]",
    "$.n.x",
    "$.n[*]",
    "$.0",
    "$.nested[*][*]",
    "$.nested[0][1]",
    "a.b",
    "$.missing.deep.path",
]
GENERIC = ["$..b", "$.items[?(@.b > 0)]", "$.a.c[0,1]", "$['a','s']", "$.items[1:]", "$.a.c[:]"]


@pytest.mark.parametrize("expression", FAST)
def test_simple_paths_take_the_fast_path(expression: str) -> None:
    assert is_fast_path(expression)


@pytest.mark.parametrize("expression", GENERIC)
def test_complex_paths_use_jsonpath_ng(expression: str) -> None:
    assert not is_fast_path(expression)


@pytest.mark.parametrize("expression", FAST + GENERIC)
@pytest.mark.parametrize("record", RECORDS)
def test_fast_and_generic_agree(expression: str, record: Any) -> None:
    expected = [match.value for match in parse(expression).find(record)]
    assert compile_path(expression)(record) == expected
    assert compile_path(expression, fast=False)(record) == expected


def test_list_selected_whole_or_by_element() -> None:
    record = {"a": [1, 2]}
    assert compile_path("$.a")(record) == [[1, 2]]
    assert compile_path("$.a[*]")(record) == [1, 2]
    assert compile_path("$.a.b")(record) == []


def test_non_object_roots_do_not_raise() -> None:
    for root in ([1, {"a": 2}], 3, "s", None, True):
        for expression in ("$", "$.a", "$[0]", "$[*].a"):
            assert compile_path(expression)(root) == compile_path(expression, fast=False)(root)


def test_compile_is_cached() -> None:
    assert compile_path("$.a.b") is compile_path("$.a.b")


@pytest.mark.parametrize("expression", ["$.[", "$..", "$.a[", "", "  ", "$ a", "$.a b", "$.where"])
def test_syntax_errors(expression: str) -> None:
    with pytest.raises(JsonPathSyntaxError) as info:
        compile_path(expression)
    assert isinstance(info.value, ValueError)
    assert "JSONPath" in str(info.value)


def test_non_string_path() -> None:
    with pytest.raises(JsonPathSyntaxError, match="must be a string"):
        compile_path(5)  # type: ignore[arg-type]
