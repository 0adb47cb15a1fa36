"""`test-route --explain`: the tracing evaluator in `routing.explain` (DESIGN.md "Conditions")."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_dataflow.routing import ConditionError, RuleError, compile_router
from airflow_dataflow.routing.explain import NO_WHEN, SKIPPED_FIRST, Explainer, explain_record

try:  # the router's property-test strategies: random rules and records of confusable types
    from tests.routing.test_routing_property import OPS, conditions, confusable_leaf, rule_lists
    from tests.routing.test_routing_property import records as random_records
except ImportError:  # pragma: no cover - run from elsewhere: a smaller local stand-in
    random_records = st.dictionaries(
        st.sampled_from(["a", "b"]),
        st.one_of(st.integers(-3, 3), st.sampled_from(["1", "x", "2.5"]), st.none()),
    )
    rule_lists = conditions = None


def by_rule(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["rule"]: entry for entry in report}


# ---------------------------------------------------------------- shape and decided_by


def test_leaf_trace_shows_the_rule_value_and_what_the_path_saw() -> None:
    rules = [{"name": "big", "when": {"path": "$.amount", "gt": 100}, "to": ["out"]}]
    [entry] = explain_record(rules, {"amount": 150})
    leaf = {
        "where": "when",
        "path": "$.amount",
        "op": "gt",
        "value": 100,
        "saw": [150],
        "result": True,
    }
    assert entry == {
        "rule": "big",
        "priority": 0,
        "matched": True,
        "decided_by": leaf,
        "conditions": [leaf],
        "destinations": ["out"],
        "output": {"amount": 150},
    }
    json.dumps(entry)  # JSON all the way down


def test_all_is_decided_by_its_first_false_leaf_and_stops_there() -> None:
    when = {
        "all": [
            {"path": "$.a", "eq": 1},
            {"path": "$.b", "eq": 2},
            {"path": "$.c", "eq": 3},
        ]
    }
    [entry] = explain_record([{"name": "r", "when": when, "to": ["d"]}], {"a": 1, "b": 5, "c": 3})
    assert entry["matched"] is False
    assert entry["decided_by"]["where"] == "when.all[1]"
    assert entry["decided_by"]["saw"] == [5] and entry["decided_by"]["result"] is False
    assert [leaf["where"] for leaf in entry["conditions"]] == ["when.all[0]", "when.all[1]"]
    assert entry["destinations"] == [] and entry["output"] is None


def test_all_true_is_decided_by_its_last_leaf() -> None:
    when = {"all": [{"path": "$.a", "eq": 1}, {"path": "$.b", "eq": 2}]}
    [entry] = explain_record([{"name": "r", "when": when, "to": ["d"]}], {"a": 1, "b": 2})
    assert entry["matched"] is True
    assert entry["decided_by"]["where"] == "when.all[1]"
    assert len(entry["conditions"]) == 2


def test_any_is_decided_by_its_first_true_leaf_else_its_last_false_one() -> None:
    when = {
        "any": [
            {"path": "$.customer.country", "in": ["DE", "FR", "IT"]},
            {"path": "$.customer.eu", "eq": True},
            {"path": "$.customer.vat", "exists": True},
        ]
    }
    rules = [{"name": "eu", "when": when, "to": ["eu"]}]
    [hit] = explain_record(rules, {"customer": {"country": "US", "eu": True}})
    assert hit["matched"] is True
    assert hit["decided_by"]["where"] == "when.any[1]"
    assert hit["decided_by"]["value"] is True and hit["decided_by"]["saw"] == [True]
    assert [leaf["result"] for leaf in hit["conditions"]] == [False, True]  # any[2] not evaluated

    [miss] = explain_record(rules, {"customer": {"country": "US"}})
    assert miss["matched"] is False
    assert miss["decided_by"]["where"] == "when.any[2]"
    assert miss["decided_by"]["op"] == "exists" and miss["decided_by"]["saw"] == []
    assert len(miss["conditions"]) == 3


def test_nested_all_any_not_decided_by_the_deepest_leaf_with_its_negation() -> None:
    when = {
        "all": [
            {"path": "$.amount", "gte": 10},
            {
                "any": [
                    {"path": "$.tags", "contains": "vip"},
                    {"not": {"path": "$.country", "in": ["US", "CA"]}},
                ]
            },
        ]
    }
    rules = [{"name": "r", "when": when, "to": ["d"]}]

    [us] = explain_record(rules, {"amount": 20, "tags": ["new"], "country": "US"})
    assert us["matched"] is False
    decided = us["decided_by"]
    assert decided["where"] == "when.all[1].any[1].not"
    assert (decided["op"], decided["saw"], decided["result"]) == ("in", ["US"], True)
    assert decided["negated_by"] == ["when.all[1].any[1]"]
    assert [leaf["where"] for leaf in us["conditions"]] == [
        "when.all[0]",
        "when.all[1].any[0]",
        "when.all[1].any[1].not",
    ]

    [fr] = explain_record(rules, {"amount": 20, "tags": ["new"], "country": "FR"})
    assert fr["matched"] is True
    assert fr["decided_by"]["result"] is False and fr["decided_by"]["negated_by"]

    [vip] = explain_record(rules, {"amount": 20, "tags": ["vip"], "country": "US"})
    assert vip["matched"] is True
    assert vip["decided_by"]["where"] == "when.all[1].any[0]"
    assert "negated_by" not in vip["decided_by"]

    [small] = explain_record(rules, {"amount": 5, "tags": ["vip"]})
    assert small["decided_by"]["where"] == "when.all[0]"
    assert len(small["conditions"]) == 1


def test_double_not_lists_both_negations() -> None:
    when = {"not": {"not": {"path": "$.a", "exists": True}}}
    [entry] = explain_record([{"name": "r", "when": when, "to": ["d"]}], {"a": None})
    assert entry["matched"] is True
    assert entry["decided_by"]["negated_by"] == ["when", "when.not"]
    assert entry["decided_by"]["saw"] == [None]


def test_a_rule_without_when_matches_every_record() -> None:
    [entry] = explain_record([{"name": "all", "to": ["d"]}], {"x": 1})
    assert entry["matched"] is True
    assert entry["decided_by"] == {"reason": NO_WHEN}
    assert entry["conditions"] == []
    assert entry["output"] == {"x": 1}


# ---------------------------------------------------------------- DESIGN.md value semantics


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 1, False),
        ("ne", 1, False),
        ("not_in", [1], False),
        ("exists", True, False),
        ("exists", False, True),
    ],
)
def test_a_missing_path_sees_nothing(op: str, value: Any, expected: bool) -> None:
    rules = [{"name": "r", "when": {"path": "$.customer.country", op: value}, "to": ["d"]}]
    [entry] = explain_record(rules, {"customer": {}})
    assert entry["decided_by"]["saw"] == []
    assert entry["matched"] is expected


def test_numeric_strings_compare_as_numbers_only_when_the_rule_value_is_a_number() -> None:
    def matched(cond: dict[str, Any], record: dict[str, Any]) -> bool:
        [entry] = explain_record([{"name": "r", "when": cond, "to": ["d"]}], record)
        return entry["matched"]

    assert matched({"path": "$.amount", "gt": 100}, {"amount": "150.5"})
    assert matched({"path": "$.amount", "eq": 12}, {"amount": " 12 "})
    assert matched({"path": "$.amount", "in": [1, 12]}, {"amount": "1.2e1"})
    assert matched({"path": "$.tags", "contains": 7}, {"tags": ["7"]})
    assert not matched({"path": "$.amount", "eq": "12"}, {"amount": 12})  # string rule value
    assert not matched({"path": "$.amount", "gt": 100}, {"amount": "lots"})
    assert not matched({"path": "$.amount", "gt": 100}, {"amount": "nan"})
    assert not matched({"path": "$.flag", "eq": 1}, {"flag": True})  # bools are not numbers
    assert not matched({"path": "$.amount", "lt": "b"}, {"amount": 1})  # mixed types: false


def test_any_selected_value_satisfying_the_op_is_enough() -> None:
    rules = [{"name": "r", "when": {"path": "$.items[*].sku", "matches": "^X-"}, "to": ["d"]}]
    [entry] = explain_record(rules, {"items": [{"sku": "A-1"}, {"sku": "X-9"}]})
    assert entry["matched"] is True
    assert entry["decided_by"]["saw"] == ["A-1", "X-9"]


def test_values_are_shown_after_rendering_their_templates() -> None:
    rules = [
        {
            "name": "big",
            "when": {"path": "$.amount", "gt": "{{ params.min_amount }}"},
            "transform": [{"set": {"source": "{{ route }}"}}],
            "to": ["d"],
        }
    ]
    variables = {"params": {"min_amount": 100}, "route": "orders"}
    [entry] = explain_record(rules, {"amount": "120"}, variables=variables)
    assert entry["decided_by"]["value"] == 100  # a native number, not "100"
    assert entry["matched"] is True
    assert entry["output"] == {"amount": "120", "source": "orders"}


# ---------------------------------------------------------------- rules, modes, transforms


RULES = [
    {"name": "low", "when": {"path": "$.amount", "gt": 0}, "to": ["all_orders"]},
    {
        "name": "big",
        "priority": 10,
        "when": {"path": "$.amount", "gt": 100},
        "transform": [{"select": {"id": "$.id", "amount": "$.amount"}}],
        "to": ["big_orders", "audit"],
    },
    {"name": "tie", "when": {"path": "$.id", "exists": True}, "to": ["ids"]},
]


def test_rules_in_priority_order_ties_keep_file_order() -> None:
    report = explain_record(RULES, {"id": 1, "amount": 500, "extra": "x"})
    assert [(entry["rule"], entry["priority"]) for entry in report] == [
        ("big", 10),
        ("low", 0),
        ("tie", 0),
    ]
    assert all(entry["matched"] for entry in report)
    assert report[0]["destinations"] == ["big_orders", "audit"]
    assert report[0]["output"] == {"id": 1, "amount": 500}
    assert report[1]["output"] == {"id": 1, "amount": 500, "extra": "x"}


def test_mode_first_skips_the_rules_after_the_first_match() -> None:
    report = explain_record(RULES, {"id": 1, "amount": 5}, mode="first")
    entries = by_rule(report)
    assert entries["big"]["matched"] is False and "skipped" not in entries["big"]
    assert entries["low"]["matched"] is True
    assert entries["tie"] == {
        "rule": "tie",
        "priority": 0,
        "matched": False,
        "skipped": SKIPPED_FIRST,
    }


def test_mode_first_still_stops_when_the_matching_rule_dead_letters() -> None:
    rules = [
        {
            "name": "a",
            "when": {"path": "$.n", "exists": True},
            "transform": [{"cast": {"n": "int"}}],
            "to": ["d"],
        },
        {"name": "b", "to": ["e"]},
    ]
    report = explain_record(rules, {"n": "abc"}, mode="first")
    assert report[0]["matched"] is True
    assert report[1]["skipped"] == SKIPPED_FIRST
    assert compile_router(rules, mode="first").route({"n": "abc"}).rules == ["a"]


def test_a_failing_transform_shows_the_dead_letter_reason() -> None:
    rules = [
        {
            "name": "typed",
            "transform": [{"set": {"seen": True}}, {"cast": {"amount": "int"}}],
            "to": ["d"],
        }
    ]
    [entry] = explain_record(rules, {"amount": "12.5"})
    assert entry["matched"] is True
    assert entry["destinations"] == []
    reason = entry["output"]["dead_letter"]
    assert reason.startswith("transform step 1 (cast): cast amount to int")
    [letter] = compile_router(rules).route({"amount": "12.5"}).dead
    assert letter.error in reason  # the same reason the dead letter carries


def test_output_is_exactly_what_delivery_gets_and_the_input_is_untouched() -> None:
    record = {"id": 7, "amount": "300", "customer": {"country": "DE"}}
    before = copy.deepcopy(record)
    rules = [
        {
            "name": "r",
            "when": {"path": "$.amount", "gte": 300},
            "transform": [
                {
                    "select": {
                        "id": "$.id",
                        "amount": "$.amount",
                        "geo.country": "$.customer.country",
                    }
                },
                {"cast": {"amount": "float"}},
                {"rename": {"geo.country": "country"}},
            ],
            "to": ["d"],
        }
    ]
    [entry] = explain_record(rules, record)
    [(_, delivered)] = compile_router(rules).route(record).deliveries
    assert entry["output"] == delivered == {"id": 7, "amount": 300.0, "geo": {}, "country": "DE"}
    assert record == before


def test_a_record_that_is_not_an_object_evaluates_no_rule() -> None:
    report = explain_record(RULES, [1, 2])
    assert [entry["matched"] for entry in report] == [False, False, False]
    assert all("not a JSON object" in entry["skipped"] for entry in report)


def test_malformed_rules_raise_the_routers_errors() -> None:
    with pytest.raises(ConditionError, match="did you mean 'gt'"):
        Explainer([{"name": "r", "when": {"path": "$.a", "gtt": 1}, "to": ["d"]}])
    with pytest.raises(RuleError, match="mode"):
        Explainer(RULES, mode="some")


def test_explainer_compiles_once_and_explains_many_records() -> None:
    explainer = Explainer(RULES, mode="all", unmatched=["rest"])
    reports = [explainer.explain({"id": n, "amount": n * 60}) for n in range(4)]
    assert [[e["rule"] for e in report if e["matched"]] for report in reports] == [
        ["tie"],
        ["low", "tie"],
        ["big", "low", "tie"],
        ["big", "low", "tie"],
    ]


# ---------------------------------------------------------------- agreement with the router


def _check_agreement(rules: list[dict[str, Any]], mode: str, record: Any) -> None:
    router = compile_router(rules, mode=mode, unmatched=["rest"])
    routed = router.route(record)
    report = Explainer(rules, mode=mode, unmatched=["rest"]).explain(record)
    assert [entry["rule"] for entry in report] == router.rule_names
    assert [entry["rule"] for entry in report if entry["matched"]] == routed.rules
    delivered = [
        (name, entry["output"])
        for entry in report
        if entry["matched"] and "dead_letter" not in (entry["output"] or {})
        for name in entry["destinations"]
    ]
    if routed.rules:
        assert delivered == routed.deliveries
    for entry in report:
        decided = entry.get("decided_by", {})
        if "result" in decided:  # the deciding leaf, through its negations, gives the outcome
            flipped = len(decided.get("negated_by", [])) % 2 == 1
            assert (decided["result"] != flipped) is entry["matched"]
            leaf = {key: value for key, value in decided.items() if key != "negated_by"}
            assert leaf in entry["conditions"]


if rule_lists is not None:

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        rules=rule_lists(),
        mode=st.sampled_from(["all", "first"]),
        batch=st.lists(random_records, min_size=1, max_size=4),
    )
    def test_explainer_agrees_with_the_router(
        rules: list[dict[str, Any]], mode: str, batch: list[Any]
    ) -> None:
        for record in batch:
            _check_agreement(rules, mode, record)

    @settings(max_examples=1500, deadline=None)
    @given(
        cond=st.one_of(conditions, st.sampled_from(OPS).flatmap(confusable_leaf)),
        record=random_records,
    )
    def test_every_condition_agrees_with_the_compiled_one(
        cond: dict[str, Any], record: Any
    ) -> None:
        _check_agreement([{"name": "r", "when": cond, "to": ["d"]}], "all", record)
