"""Conditions: every operator, combinators, numeric strings, mixed types, templates."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_dataflow.routing import compile_condition, compile_router
from airflow_dataflow.routing import conditions as conditions_module

RECORD: dict[str, Any] = {
    "amount": 150,
    "price": "19.5",
    "qty": "3",
    "name": "Alice Smith",
    "flag": True,
    "zero": 0,
    "none": None,
    "tags": ["vip", "eu", "7"],
    "scores": [1, 5, 10],
    "items": [{"sku": "A", "n": 1}, {"sku": "B", "n": "12"}],
    "customer": {"country": "DE", "eu": True},
    "empty": [],
    "obj": {"k": [1, 2]},
}


def check(cond: dict[str, Any], record: dict[str, Any] = RECORD) -> bool:
    return compile_condition(cond)(record)


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        # eq / ne
        ({"path": "$.amount", "eq": 150}, True),
        ({"path": "$.amount", "eq": 150.0}, True),
        ({"path": "$.amount", "eq": "150"}, False),  # string rule value vs number: mixed
        ({"path": "$.qty", "eq": 3}, True),  # numeric string vs number rule value
        ({"path": "$.qty", "eq": "3"}, True),
        ({"path": "$.price", "eq": 19.5}, True),
        ({"path": "$.name", "eq": 5}, False),
        ({"path": "$.customer.country", "eq": "DE"}, True),
        ({"path": "$.none", "eq": None}, True),
        ({"path": "$.missing", "eq": None}, False),
        ({"path": "$.obj", "eq": {"k": [1, 2]}}, True),
        ({"path": "$.obj", "eq": {"k": [1, True]}}, False),
        ({"path": "$.amount", "ne": 100}, True),
        ({"path": "$.amount", "ne": 150}, False),
        ({"path": "$.qty", "ne": 3}, False),
        ({"path": "$.missing", "ne": 1}, False),  # missing path: every op but exists:false is false
        ({"path": "$.none", "ne": "closed"}, True),
        # bools are not numbers
        ({"path": "$.flag", "eq": 1}, False),
        ({"path": "$.flag", "eq": True}, True),
        ({"path": "$.zero", "eq": False}, False),
        ({"path": "$.zero", "eq": 0}, True),
        ({"path": "$.flag", "gt": 0}, False),
        ({"path": "$.flag", "in": [1]}, False),
        ({"path": "$.zero", "in": [False]}, False),
        ({"path": "$.flag", "in": [True]}, True),
        # ordering
        ({"path": "$.amount", "gt": 100}, True),
        ({"path": "$.amount", "gt": 150}, False),
        ({"path": "$.amount", "gte": 150}, True),
        ({"path": "$.amount", "lt": 150}, False),
        ({"path": "$.amount", "lte": 150}, True),
        ({"path": "$.price", "gt": 19}, True),
        ({"path": "$.price", "lt": 20}, True),
        ({"path": "$.name", "gt": 1}, False),  # str vs int: false, no error
        ({"path": "$.amount", "gt": "100"}, False),  # int vs str rule value: false
        ({"path": "$.none", "gt": 0}, False),
        ({"path": "$.none", "lt": 0}, False),
        ({"path": "$.name", "gt": "Aaron"}, True),  # strings order lexicographically
        ({"path": "$.customer", "gt": 0}, False),
        ({"path": "$.missing", "lt": 10}, False),
        # in / not_in
        ({"path": "$.customer.country", "in": ["DE", "FR"]}, True),
        ({"path": "$.customer.country", "in": ["IT"]}, False),
        ({"path": "$.qty", "in": [1, 2, 3]}, True),
        ({"path": "$.amount", "in": ["150"]}, False),
        ({"path": "$.none", "in": [None]}, True),
        ({"path": "$.obj.k", "in": [[1, 2]]}, True),
        ({"path": "$.customer.country", "not_in": ["IT"]}, True),
        ({"path": "$.customer.country", "not_in": ["DE"]}, False),
        ({"path": "$.qty", "not_in": [3]}, False),
        ({"path": "$.missing", "not_in": ["x"]}, False),
        ({"path": "$.missing", "in": ["x"]}, False),
        # contains
        ({"path": "$.name", "contains": "Smith"}, True),
        ({"path": "$.name", "contains": "smith"}, False),
        ({"path": "$.tags", "contains": "vip"}, True),
        ({"path": "$.tags", "contains": "vi"}, False),
        ({"path": "$.tags", "contains": 7}, True),  # numeric string member, number rule value
        ({"path": "$.scores", "contains": 5}, True),
        ({"path": "$.scores", "contains": "5"}, False),
        ({"path": "$.name", "contains": 5}, False),
        ({"path": "$.amount", "contains": 1}, False),
        ({"path": "$.missing", "contains": "a"}, False),
        # matches
        ({"path": "$.name", "matches": "^Ali"}, True),
        ({"path": "$.name", "matches": "Smith$"}, True),
        ({"path": "$.name", "matches": "mit"}, True),  # search, not full match
        ({"path": "$.name", "matches": "^Smith"}, False),
        ({"path": "$.amount", "matches": "150"}, False),  # only on strings
        ({"path": "$.missing", "matches": ".*"}, False),
        # exists
        ({"path": "$.customer.country", "exists": True}, True),
        ({"path": "$.none", "exists": True}, True),  # null is a value
        ({"path": "$.missing", "exists": True}, False),
        ({"path": "$.missing", "exists": False}, True),
        ({"path": "$.amount", "exists": False}, False),
        ({"path": "$.empty[*]", "exists": True}, False),
        ({"path": "$.empty", "exists": True}, True),
    ],
)
def test_leaf_operators(cond: dict[str, Any], expected: bool) -> None:
    assert check(cond) is expected


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"path": "$.items[*].sku", "eq": "B"}, True),  # some value satisfies
        ({"path": "$.items[*].sku", "eq": "C"}, False),
        ({"path": "$.items[*].sku", "ne": "A"}, True),  # B is not A
        ({"path": "$.items[*].n", "gt": 10}, True),  # "12" parses
        ({"path": "$.items[*].n", "lt": 1}, False),
        ({"path": "$.scores[*]", "gte": 10}, True),
        ({"path": "$.scores", "gte": 10}, False),  # the list itself is not a number
        ({"path": "$.scores[*]", "not_in": [1, 5]}, True),
        ({"path": "$.scores[*]", "not_in": [1, 5, 10]}, False),
        ({"path": "$..country", "eq": "DE"}, True),
    ],
)
def test_multi_valued_paths(cond: dict[str, Any], expected: bool) -> None:
    assert check(cond) is expected


def test_numeric_string_edge_cases() -> None:
    for text, expected in [
        (" 12 ", True),
        ("12.0", True),
        ("1.2e1", True),
        ("+12", True),
        ("12abc", False),
        ("nan", False),
        ("1_2", False),
        ("", False),
    ]:
        assert check({"path": "$.v", "eq": 12}, {"v": text}) is expected, text
    assert check({"path": "$.v", "gt": 5}, {"v": "inf"}) is False
    assert check({"path": "$.v", "eq": 12345678901234567891}, {"v": "12345678901234567891"})
    assert not check({"path": "$.v", "eq": 12345678901234567891}, {"v": "12345678901234567890"})


def test_combinators_nest() -> None:
    cond = {
        "all": [
            {"path": "$.amount", "gt": 100},
            {
                "any": [
                    {"path": "$.customer.country", "in": ["FR"]},
                    {"not": {"path": "$.customer.eu", "eq": False}},
                ]
            },
            {"not": {"all": [{"path": "$.flag", "eq": True}, {"path": "$.zero", "ne": 0}]}},
        ]
    }
    assert check(cond) is True
    assert check({"not": cond}) is False
    assert (
        check({"any": [{"path": "$.missing", "exists": True}, {"path": "$.x", "eq": 1}]}) is False
    )
    assert check({"all": [{"path": "$.amount", "eq": 150}]}) is True


def test_not_of_missing_path_is_true() -> None:
    assert check({"not": {"path": "$.missing", "eq": 1}}) is True


def test_no_condition_matches_everything() -> None:
    assert compile_condition(None)({}) is True


def test_templates_render_to_native_values() -> None:
    variables = {"params": {"min_amount": 100, "countries": ["DE", "FR"], "pattern": "^A"}}
    pred = compile_condition(
        {
            "all": [
                {"path": "$.amount", "gt": "{{ params.min_amount }}"},
                {"path": "$.customer.country", "in": "{{ params.countries }}"},
                {"path": "$.name", "matches": "{{ params.pattern }}"},
                {"path": "$.label", "eq": "min={{ params.min_amount }}"},
            ]
        },
        variables=variables,
    )
    assert pred({**RECORD, "label": "min=100"}) is True
    assert pred({**RECORD, "label": "min=100", "amount": 99}) is False
    # a number param stays a number: numeric-string records still compare numerically
    assert pred({**RECORD, "label": "min=100", "amount": "101"}) is True


def test_templates_render_once_not_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_dataflow.routing import templates

    calls: list[Any] = []
    real = templates.render_value

    def counting(value: Any, variables: dict[str, Any]) -> Any:
        calls.append(value)
        return real(value, variables)

    monkeypatch.setattr(templates, "render_value", counting)
    router = compile_router(
        [
            {
                "name": "r",
                "when": {"path": "$.amount", "gte": "{{ params.n }}"},
                "transform": [{"set": {"run": "{{ run_id }}"}}],
                "to": ["d"],
            }
        ],
        variables={"params": {"n": 5}, "run_id": "manual__1"},
    )
    assert len(calls) == 2
    for amount in range(100):
        router.route({"amount": amount})
    assert len(calls) == 2
    assert router.route({"amount": 7}).deliveries == [("d", {"amount": 7, "run": "manual__1"})]


def test_nothing_compiled_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    pred = compile_condition(
        {"any": [{"path": "$.name", "matches": "^A"}, {"path": "$.items[*].n", "gt": 1}]}
    )

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled during evaluation")

    monkeypatch.setattr(conditions_module, "compile_path", forbidden)
    monkeypatch.setattr(conditions_module.re, "compile", forbidden)
    assert pred(RECORD) is True
