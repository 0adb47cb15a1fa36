"""Transform steps: select, set, rename, drop, cast; dotted fields; failures name the step."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_dataflow.routing import TransformStepError, compile_transforms

RECORD: dict[str, Any] = {
    "id": 7,
    "amount": "12",
    "customer": {"country": "DE", "name": "Ann"},
    "items": [{"sku": "A"}, {"sku": "B"}],
    "tags": ["x"],
}


def apply(steps: list[dict[str, Any]], record: dict[str, Any] = RECORD, **kw: Any) -> Any:
    before = copy.deepcopy(record)
    out = compile_transforms(steps, **kw)(record)
    assert record == before, "input record was mutated"
    return out


def test_no_steps_returns_a_fresh_copy() -> None:
    out = apply([])
    assert out == RECORD
    assert out is not RECORD and out["customer"] is not RECORD["customer"]
    assert compile_transforms(None)(RECORD) == RECORD


def test_select() -> None:
    out = apply(
        [
            {
                "select": {
                    "id": "$.id",
                    "country": "$.customer.country",
                    "skus": "$.items[*].sku",
                    "first": "$.items[0].sku",
                    "missing": "$.nope",
                    "tags": "$.tags",
                    "meta.name": "$.customer.name",
                }
            }
        ]
    )
    assert out == {
        "id": 7,
        "country": "DE",
        "skus": ["A", "B"],
        "first": "A",
        "missing": None,
        "tags": ["x"],
        "meta": {"name": "Ann"},
    }


def test_select_copies_values_so_later_steps_do_not_touch_the_input() -> None:
    out = apply([{"select": {"c": "$.customer"}}, {"set": {"c.vip": True}}])
    assert out == {"c": {"country": "DE", "name": "Ann", "vip": True}}


def test_set_with_dotted_fields_and_templates() -> None:
    out = apply(
        [{"set": {"source": "crm", "meta.run.id": "{{ run_id }}", "limit": "{{ params.n }}"}}],
        variables={"run_id": "r1", "params": {"n": 3}},
    )
    assert out["source"] == "crm"
    assert out["meta"] == {"run": {"id": "r1"}}
    assert out["limit"] == 3
    assert apply([{"set": {"customer.tier": "gold"}}])["customer"]["tier"] == "gold"


def test_set_values_are_not_shared_between_records() -> None:
    transform = compile_transforms([{"set": {"list": [1]}}])
    first = transform({})
    first["list"].append(2)
    assert transform({}) == {"list": [1]}


def test_set_through_a_non_object_fails() -> None:
    with pytest.raises(TransformStepError) as info:
        apply([{"set": {"id.x": 1}}])
    assert (info.value.step, info.value.kind) == (0, "set")
    assert "'id' is not an object" in info.value.reason


def test_rename() -> None:
    out = apply([{"rename": {"id": "order_id", "customer.country": "country", "nope": "x"}}])
    assert out["order_id"] == 7 and "id" not in out
    assert out["country"] == "DE" and out["customer"] == {"name": "Ann"}
    assert "x" not in out
    swapped = apply([{"rename": {"a": "b", "b": "a"}}], {"a": 1, "b": 2})
    assert swapped == {"b": 1, "a": 2}
    nested = apply([{"rename": {"id": "meta.order.id"}}])
    assert nested["meta"] == {"order": {"id": 7}}


def test_drop() -> None:
    out = apply([{"drop": ["id", "customer.name", "nope", "items.sku", "tags.x"]}])
    assert out == {
        "amount": "12",
        "customer": {"country": "DE"},
        "items": [{"sku": "A"}, {"sku": "B"}],
        "tags": ["x"],
    }


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "12", 12),
        ("int", " -3 ", -3),
        ("int", 12.0, 12),
        ("int", "12.0", 12),
        ("int", 5, 5),
        ("float", "12.5", 12.5),
        ("float", 3, 3.0),
        ("float", "1e3", 1000.0),
        ("str", 12, "12"),
        ("str", 1.5, "1.5"),
        ("str", "x", "x"),
        ("str", {"a": [1, "é"]}, '{"a": [1, "é"]}'),
        ("str", [1, 2], "[1, 2]"),
        ("str", True, "true"),
        ("str", None, "null"),
        ("bool", "true", True),
        ("bool", "False", False),
        ("bool", "1", True),
        ("bool", "0", False),
        ("bool", "yes", True),
        ("bool", " NO ", False),
        ("bool", 1, True),
        ("bool", 0, False),
        ("bool", False, False),
        ("datetime", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
        ("datetime", "2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05+00:00"),
        ("datetime", "2024-01-02T03:04:05", "2024-01-02T03:04:05+00:00"),
        ("datetime", "2024-01-02", "2024-01-02T00:00:00+00:00"),
        ("datetime", 1704164645, "2024-01-02T03:04:05+00:00"),
        ("datetime", "1704164645", "2024-01-02T03:04:05+00:00"),
        ("datetime", 1704164645.5, "2024-01-02T03:04:05.500000+00:00"),
    ],
)
def test_cast(kind: str, value: Any, expected: Any) -> None:
    out = apply([{"cast": {"v": kind}}], {"v": value})
    assert out["v"] == expected
    assert type(out["v"]) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("int", "abc", "cast v to int: invalid literal 'abc'"),
        ("int", "12.5", "cast v to int: '12.5' is not a whole number"),
        ("int", 12.5, "cast v to int: 12.5 is not a whole number"),
        ("int", True, "cast v to int: cannot convert boolean true"),
        ("int", None, "cast v to int: cannot convert null"),
        ("int", [1], "cast v to int: cannot convert [1]"),
        ("float", "x1", "cast v to float: invalid literal 'x1'"),
        ("float", "nan", "cast v to float: invalid literal 'nan'"),
        ("bool", "maybe", "cast v to bool: invalid literal 'maybe'"),
        ("bool", 2, "cast v to bool: cannot convert 2"),
        ("bool", None, "cast v to bool: cannot convert null"),
        ("datetime", "yesterday", "cast v to datetime: not an ISO 8601 date-time"),
        ("datetime", None, "cast v to datetime: cannot convert null"),
        ("datetime", 1e20, "cast v to datetime:"),
    ],
)
def test_cast_failures_name_step_and_reason(kind: str, value: Any, message: str) -> None:
    steps = [{"set": {"ok": 1}}, {"cast": {"v": kind}}]
    with pytest.raises(TransformStepError) as info:
        apply(steps, {"v": value})
    assert info.value.step == 1
    assert info.value.kind == "cast"
    assert info.value.reason.startswith(message)
    assert str(info.value).startswith("transform step 1 (cast): ")


def test_cast_dotted_and_missing_fields() -> None:
    out = apply([{"cast": {"customer.age": "int", "missing.deep": "int", "amount": "float"}}])
    assert out["amount"] == 12.0 and "missing" not in out
    assert apply([{"cast": {"c.n": "int"}}], {"c": {"n": "4"}}) == {"c": {"n": 4}}


def test_steps_run_in_order() -> None:
    steps = [
        {"select": {"id": "$.id", "amount": "$.amount", "c": "$.customer.country"}},
        {"rename": {"c": "country"}},
        {"cast": {"amount": "int", "id": "str"}},
        {"set": {"meta.kind": "order"}},
        {"drop": ["meta.kind"]},
    ]
    assert apply(steps) == {"id": "7", "amount": 12, "country": "DE", "meta": {}}
