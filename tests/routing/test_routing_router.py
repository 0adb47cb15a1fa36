"""Router: priorities, modes, unmatched, dead letters, statuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_dataflow.routing import DeadLetter, Routed, compile_router

RULES: list[dict[str, Any]] = [
    {
        "name": "big",
        "priority": 10,
        "when": {"path": "$.amount", "gt": 100},
        "transform": [
            {"select": {"id": "$.id", "amount": "$.amount", "country": "$.customer.country"}}
        ],
        "to": ["big_orders"],
    },
    {
        "name": "eu",
        "when": {
            "any": [
                {"path": "$.customer.country", "in": ["DE", "FR"]},
                {"path": "$.customer.eu", "eq": True},
            ]
        },
        "to": ["eu_orders"],
    },
]

BIG_EU = {"id": 1, "amount": 150, "customer": {"country": "DE"}}


def test_example_from_the_design() -> None:
    router = compile_router(RULES, unmatched=["rest"])
    assert router.rule_names == ["big", "eu"]
    assert router.destinations == ["big_orders", "eu_orders", "rest"]
    before = copy.deepcopy(BIG_EU)
    routed = router.route(BIG_EU)
    assert routed == Routed(
        rules=["big", "eu"],
        deliveries=[
            ("big_orders", {"id": 1, "amount": 150, "country": "DE"}),
            ("eu_orders", BIG_EU),
        ],
        dead=[],
        status="matched",
    )
    assert before == BIG_EU
    assert all(record is not BIG_EU for _, record in routed.deliveries)


def test_unmatched_goes_to_unmatched_destinations_as_fresh_copies() -> None:
    router = compile_router(RULES, unmatched=["rest", "audit"])
    record = {"id": 2, "amount": 5, "customer": {"country": "US"}}
    routed = router.route(record)
    assert routed.status == "unmatched" and routed.rules == []
    assert routed.deliveries == [("rest", record), ("audit", record)]
    rest, audit = (out for _, out in routed.deliveries)
    assert rest is not record and audit is not rest and rest["customer"] is not record["customer"]


def test_unmatched_without_destinations_is_dropped() -> None:
    routed = compile_router(RULES).route({"amount": 1})
    assert routed == Routed(rules=[], deliveries=[], dead=[], status="unmatched")


def test_priority_orders_rules_and_ties_keep_list_order() -> None:
    rules = [
        {"name": "a", "to": ["x"]},
        {"name": "b", "priority": 5, "to": ["x"]},
        {"name": "c", "priority": -1, "to": ["x"]},
        {"name": "d", "priority": 5, "to": ["y"]},
        {"name": "e", "priority": 0, "to": ["z"]},
    ]
    router = compile_router(rules)
    assert router.rule_names == ["b", "d", "a", "e", "c"]
    assert router.route({}).rules == ["b", "d", "a", "e", "c"]
    assert [d for d, _ in router.route({}).deliveries] == ["x", "y", "x", "z", "x"]
    assert router.destinations == ["x", "y", "z"]


def test_mode_first_applies_only_the_first_match() -> None:
    router = compile_router(RULES, mode="first", unmatched=["rest"])
    routed = router.route(BIG_EU)
    assert routed.rules == ["big"]
    assert [d for d, _ in routed.deliveries] == ["big_orders"]
    small_eu = {"amount": 1, "customer": {"country": "FR"}}
    assert router.route(small_eu).rules == ["eu"]
    assert router.route({"amount": 1}).deliveries == [("rest", {"amount": 1})]


def test_mode_all_applies_every_match() -> None:
    router = compile_router(RULES, mode="all")
    assert router.route(BIG_EU).rules == ["big", "eu"]


def test_one_rule_many_destinations_get_separate_objects() -> None:
    router = compile_router([{"name": "r", "to": ["a", "b"]}])
    routed = router.route({"k": [1]})
    (_, first), (_, second) = routed.deliveries
    assert first == second == {"k": [1]}
    assert first is not second and first["k"] is not second["k"]


def test_transform_failure_becomes_a_dead_letter_for_that_rule() -> None:
    rules = [
        {
            "name": "typed",
            "priority": 1,
            "transform": [{"set": {"a": 1}}, {"cast": {"amount": "int"}}],
            "to": ["typed_out"],
        },
        {"name": "raw", "to": ["raw_out"]},
    ]
    router = compile_router(rules, unmatched=["rest"])
    record = {"amount": "abc"}
    routed = router.route(record)
    assert routed.rules == ["typed", "raw"]
    assert routed.deliveries == [("raw_out", record)]
    assert routed.dead == [
        DeadLetter(
            rule="typed",
            step=1,
            step_kind="cast",
            error="cast amount to int: invalid literal 'abc'",
            record=record,
        )
    ]
    assert routed.status == "dead"
    first = compile_router(rules, mode="first", unmatched=["rest"]).route(record)
    assert first.rules == ["typed"] and first.deliveries == [] and first.status == "dead"


@pytest.mark.parametrize(
    ("record", "kind"),
    [([1, 2], "list"), (3, "number"), ("s", "string"), (None, "null"), (True, "boolean")],
)
def test_non_object_records_are_dead(record: Any, kind: str) -> None:
    routed = compile_router(RULES, unmatched=["rest"]).route(record)
    assert routed.status == "dead"
    assert routed.rules == [] and routed.deliveries == []
    assert routed.dead == [
        DeadLetter(None, None, None, f"record is not a JSON object (got {kind})", record)
    ]


def test_statuses_are_conserved() -> None:
    rules = [
        {"name": "big", "when": {"path": "$.amount", "gt": 100}, "to": ["big"]},
        {
            "name": "cast",
            "when": {"path": "$.amount", "exists": True},
            "transform": [{"cast": {"amount": "int"}}],
            "to": ["typed"],
        },
    ]
    router = compile_router(rules, unmatched=["rest"])
    records: list[Any] = [
        {"amount": 150},
        {"amount": "x"},
        {"amount": "500.5"},
        {},
        {"other": 1},
        [],
        {"amount": 3},
    ]
    counts = {"matched": 0, "unmatched": 0, "dead": 0}
    for record in records:
        counts[router.route(record).status] += 1
    assert counts == {"matched": 2, "unmatched": 2, "dead": 3}
    assert sum(counts.values()) == len(records)


def test_explain() -> None:
    router = compile_router(RULES, mode="first")
    assert router.explain({"amount": 1, "customer": {"eu": True}}) == [
        {"rule": "big", "matched": False},
        {"rule": "eu", "matched": True},
    ]
    assert router.explain(BIG_EU) == [
        {"rule": "big", "matched": True},
        {"rule": "eu", "matched": True},
    ]
    assert router.explain([]) == [
        {"rule": "big", "matched": False},
        {"rule": "eu", "matched": False},
    ]


def test_rule_without_when_or_transform() -> None:
    router = compile_router([{"name": "all", "when": None, "transform": None, "to": ["d"]}])
    assert router.route({"a": 1}).deliveries == [("d", {"a": 1})]


def test_routed_and_dead_letter_are_slotted() -> None:
    assert hasattr(Routed, "__slots__") and hasattr(DeadLetter, "__slots__")


def test_routing_does_not_import_airflow() -> None:
    import subprocess
    import sys

    code = "import sys, airflow_dataflow.routing; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
