"""The generated matcher and transforms (`routing.codegen`) agree with the closures and the
reference interpreter, and pathological records become dead letters instead of errors."""

from __future__ import annotations

import copy
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_dataflow.routing import TransformStepError, compile_router, compile_transforms
from airflow_dataflow.routing.codegen import MAX_INLINE_DEPTH, build_select_cast
from tests.routing.test_routing_property import (
    OPS,
    canon,
    conditions,
    confusable_leaf,
    json_values,
    leaves,
    records,
    ref_when,
)

RULES = [
    {"name": "big", "when": {"path": "$.p.amount", "gt": 100}, "to": ["big"]},
    {"name": "de", "when": {"path": "$.p.country", "in": ["DE", "AT"]}, "to": ["de", "all"]},
    {
        "name": "sel",
        "when": {"not": {"path": "$.p.closed", "exists": True}},
        "transform": [
            {"select": {"id": "$.id", "amount": "$.p.amount"}},
            {"cast": {"amount": "float"}},
        ],
        "to": ["open"],
    },
]


def test_the_generated_matcher_is_used() -> None:
    router = compile_router(RULES, unmatched=["rest"])
    assert router._match != router._match_closures
    assert "def match(r):" in router._match.source
    routed = router.route({"id": 1, "p": {"amount": "150.5", "country": "DE"}})
    assert routed.rules == ["big", "de", "sel"]
    assert routed.deliveries[-1] == ("open", {"id": 1, "amount": 150.5})


def _single(cond: dict[str, Any]) -> Any:
    return compile_router([{"name": "r", "when": cond, "to": ["x"]}])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cond=st.one_of(leaves, conditions), record=records)
def test_generated_conditions_agree_with_reference(cond: dict[str, Any], record: Any) -> None:
    routed = _single(cond).route(record)
    if isinstance(record, dict):
        assert (routed.rules == ["r"]) is ref_when(cond, record)


@settings(max_examples=1500, deadline=None)
@given(
    cond=st.sampled_from(OPS).flatmap(confusable_leaf),
    value=st.one_of(st.sampled_from([None, True, False, 0, 1, 1.0, "1", "0", "true", 12, "12"])),
    nested=st.booleans(),
)
def test_generated_type_confusion_agrees(cond: dict[str, Any], value: Any, nested: bool) -> None:
    record: dict[str, Any] = {"a": value}
    if nested:  # the same leaf one object deeper: exercises the parent lookups
        cond = {**cond, "path": cond["path"].replace("$.", "$.o.")}
        record = {"o": record}
    assert (_single(cond).route(record).rules == ["r"]) is ref_when(cond, record)


SELECT_PATHS = ["$.a", "$.b", "$.a.b", "$.c.a", "$"]
select_steps = st.dictionaries(
    st.sampled_from(["x", "y", "z"]), st.sampled_from(SELECT_PATHS), min_size=1, max_size=3
)
cast_steps = st.dictionaries(
    st.sampled_from(["x", "y", "q"]),
    st.sampled_from(["int", "float", "str", "bool", "datetime"]),
    min_size=1,
    max_size=2,
)


@settings(max_examples=800, deadline=None)
@given(
    select=select_steps,
    casts=st.lists(cast_steps, max_size=2),
    record=st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3),
)
def test_generated_select_cast_agrees_with_closures(
    select: dict[str, str], casts: list[dict[str, str]], record: dict[str, Any]
) -> None:
    steps = [{"select": select}] + [{"cast": cast} for cast in casts]
    generated = build_select_cast(steps)
    assert generated is not None
    reference = compile_transforms(steps)
    before = copy.deepcopy(record)
    try:
        expected: Any = canon(reference(record))
    except TransformStepError as exc:
        expected = (exc.step, exc.kind, exc.reason)
    try:
        actual: Any = canon(generated(record))
    except TransformStepError as exc:
        actual = (exc.step, exc.kind, exc.reason)
    assert actual == expected
    assert canon(record) == canon(before)


def test_other_transform_shapes_keep_the_closures() -> None:
    assert build_select_cast([{"select": {"a.b": "$.x"}}]) is None
    assert build_select_cast([{"select": {"a": "$.x[*]"}}]) is None
    assert build_select_cast([{"set": {"a": 1}}]) is None
    assert build_select_cast([{"select": {"a": "$.x"}}, {"drop": ["a"]}]) is None


def test_deep_conditions_fall_back_to_the_closures() -> None:
    cond: dict[str, Any] = {"path": "$.a", "eq": 1}
    for _ in range(MAX_INLINE_DEPTH * 4):
        cond = {"not": {"not": cond}}
    router = _single(cond)
    assert router.route({"a": 1}).rules == ["r"]
    assert router.route({"a": 2}).rules == []


# ---------------------------------------------------------------- pathological records


def _deep(levels: int) -> dict[str, Any]:
    record: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        record = {"a": record}
    return record


def test_a_record_too_deep_to_copy_becomes_a_dead_letter() -> None:
    router = compile_router(RULES[:2], unmatched=["rest"])
    record = _deep(100_000)
    routed = router.route(record)
    assert routed.status == "dead" and routed.deliveries == []
    (letter,) = routed.dead
    assert letter.record is record
    assert letter.error.startswith("record is nested too deeply to route (RecursionError")
    # without copies nothing recurses: it is simply unmatched
    assert router.route(record, copies=False).status == "unmatched"


def test_a_condition_recursing_on_a_deep_value_dead_letters_that_rule() -> None:
    router = compile_router(
        [
            {"name": "descend", "when": {"path": "$.a", "eq": _deep(300)}, "to": ["x"]},
            {"name": "all", "to": ["y"]},
        ]
    )
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 100)  # comparing needs ~300 levels
    try:
        routed = router.route({"a": _deep(300)}, copies=False)
    finally:
        sys.setrecursionlimit(limit)
    assert routed.status == "dead"
    assert [letter.rule for letter in routed.dead] == ["descend"]
    assert "RecursionError" in routed.dead[0].error
    assert routed.rules == ["all"]


def test_huge_numeric_strings_compare_without_raising() -> None:
    router = _single({"path": "$.n", "gt": 5})
    assert router.route({"n": "9" * 5000}).rules == ["r"]
    assert router.route({"n": "-" + "9" * 5000}).rules == []
    assert (
        compile_router([{"name": "r", "when": {"path": "$.n", "gt": 5}, "to": ["x"]}])
        .route({"n": "1" * 100_000 + "x"})
        .rules
        == []
    )


def test_huge_strings_route_normally() -> None:
    router = _single({"path": "$.s", "matches": "end$"})
    assert router.route({"s": "x" * 50_000_000 + "end"}).rules == ["r"]


def test_route_many_agrees_with_route() -> None:
    router = compile_router(RULES, unmatched=["rest"])
    batch = [{"p": {"amount": n, "country": "DE"}} for n in (1, 500)] + [[1], {"id": 3}]
    assert list(router.route_many(batch)) == [router.route(record) for record in batch]
    uncopied = list(router.route_many(batch, copies=False))
    assert [r.rules for r in uncopied] == [router.route(record).rules for record in batch]
    assert uncopied[0].deliveries[0][1] is batch[0]  # no copy: the input itself


def test_route_phase_dead_letters_bad_lines_and_unserialisable_records(tmp_path: Path) -> None:
    from airflow_dataflow.config import load_route
    from airflow_dataflow.context import RunContext
    from airflow_dataflow.pipeline.route import route_records
    from airflow_dataflow.staging import StagingArea, read_chunks
    from tests.support.routes import write_route

    route = load_route(
        write_route(
            tmp_path,
            "r",
            """
            source: {type: file, path: in.jsonl}
            rules:
              - {name: all, to: [out]}
            destinations:
              out: {type: file, path: out.jsonl}
            """,
        )
    )
    context = RunContext(route="r", run_id="run", route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "r", "run", chunk_size=10)
    with staging.writer("extract") as writer, staging.writer("malformed") as malformed:
        writer.write({"n": 1})
        writer.write_line(b'{"n": 2, broken\n')
        writer.write_line(b"[" * 5000 + b"]" * 5000 + b"\n")  # decodes nowhere: too deep
        writer.write({"n": 4})
        extracted = {"records": writer.close(), "malformed": malformed.close(), "read": 4}
    result = route_records(route, context, staging, extracted)
    assert result["counts"]["matched"] == 2 and result["counts"]["dead_lettered"] == 2
    uri = extracted["records"]["chunks"][0]["uri"]
    letters = [entry for _, _, entry in read_chunks({"chunks": [{"uri": result["dead_letters"]}]})]
    assert [entry["position"] for entry in letters] == [f"{uri}:2", f"{uri}:3"]
    assert all(entry["error"].startswith("staged line is not valid JSON") for entry in letters)
    assert letters[0]["record"] == '{"n": 2, broken'
    out = [entry for _, _, entry in read_chunks(result["partitions"]["out"])]
    assert out == [{"n": 1}, {"n": 4}]


def test_route_phase_takes_back_the_lines_of_a_record_it_cannot_serialise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_dataflow.config import load_route
    from airflow_dataflow.context import RunContext
    from airflow_dataflow.pipeline import route as route_module
    from airflow_dataflow.staging import StagingArea, read_chunks
    from tests.support.routes import write_route

    route = load_route(
        write_route(
            tmp_path,
            "r",
            """
            source: {type: file, path: in.jsonl}
            rules:
              - {name: all, to: [a, b]}
              - {name: pick, priority: 1, transform: [{select: {n: $.n}}], to: [c]}
            destinations:
              a: {type: file, path: a.jsonl}
              b: {type: file, path: b.jsonl}
              c: {type: file, path: c.jsonl}
            """,
        )
    )
    real_dumps_line = route_module.dumps_line

    def refuse_bad(output: object, **kwargs: object) -> bytes:
        if isinstance(output, dict) and output.get("bad") is None and "bad" not in output:
            return real_dumps_line(output)
        raise TypeError("refused")

    class FakeOrjson:
        dumps = staticmethod(refuse_bad)
        loads = staticmethod(route_module.orjson.loads)

    # the selected output {n} serialises, the whole record {n, bad} (for a and b) does not
    monkeypatch.setattr(route_module, "orjson", FakeOrjson)
    monkeypatch.setattr(route_module, "dumps_line", refuse_bad)
    context = RunContext(route="r", run_id="run", route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "r", "run", chunk_size=10)
    with staging.writer("extract") as writer, staging.writer("malformed") as malformed:
        writer.write_many([{"n": 1}, {"n": 2, "bad": True}, {"n": 3}])
        extracted = {"records": writer.close(), "malformed": malformed.close(), "read": 3}
    result = route_module.route_records(route, context, staging, extracted)
    counts = result["counts"]
    assert (counts["matched"], counts["dead_lettered"]) == (2, 1)
    assert counts["rules"] == {"all": 2, "pick": 2}
    for name in ("a", "b"):
        assert [r for _, _, r in read_chunks(result["partitions"][name])] == [{"n": 1}, {"n": 3}]
    assert [r for _, _, r in read_chunks(result["partitions"]["c"])] == [{"n": 1}, {"n": 3}]
    letters = [e for _, _, e in read_chunks({"chunks": [{"uri": result["dead_letters"]}]})]
    assert len(letters) == 1 and "cannot serialise the output for 'a'" in letters[0]["error"]
