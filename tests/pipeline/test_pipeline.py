"""The run phases as plain functions (no Airflow): extract -> route -> deliver -> summarize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.config import load_route
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.deliver import deliver, wanted_destinations
from airflow_dataflow.pipeline.extract import extract
from airflow_dataflow.pipeline.route import route_records
from airflow_dataflow.pipeline.summary import (
    ConservationError,
    DeadLettersPresentError,
    check_conservation,
    check_dead_letters,
    summarize,
)
from airflow_dataflow.staging import StagingArea
from tests.support.routes import read_jsonl, write_jsonl, write_route

ROUTE = """
    source: {type: file, path: in.jsonl}
    on_dead_letter: fail
    rules:
      - name: big
        when: {path: $.amount, gt: 100}
        transform: [{cast: {amount: int}}]
        to: [big]
      - name: tiny
        when: {path: $.amount, lt: 5}
        to: [tiny]
    unmatched: [rest]
    destinations:
      big: {type: file, path: out/big.jsonl}
      tiny: {type: file, path: out/tiny.jsonl, min_records: 3}
      rest: {type: file, path: out/rest.jsonl}
"""


def _run(tmp_path: Path, records: list[Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    write_jsonl(tmp_path / "in.jsonl", records)
    route = load_route(write_route(tmp_path, "orders", ROUTE))
    context = RunContext(route="orders", run_id="run-1", route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "orders", "run-1", chunk_size=2)
    extracted = extract(route, context, staging)
    routing = route_records(route, context, staging, extracted)
    deliveries = {
        name: deliver(route, name, context, routing["partitions"][name])
        for name in wanted_destinations(route, routing["partitions"])
    }
    return route, routing, summarize(route, "run-1", routing, deliveries)


def test_phases_account_for_every_record(tmp_path: Path) -> None:
    records = [
        {"amount": 500},
        {"amount": "150.7"},
        {"amount": 50},
        {"amount": 1},
        {"amount": 150.5},
    ]
    route, routing, summary = _run(tmp_path, records)
    assert summary["counts"] == {
        "read": 5,
        "matched": 2,
        "unmatched": 1,
        "dead_lettered": 2,  # "150.7" and 150.5 cannot be cast to int
        "rules": {"big": 3, "tiny": 1},
        "destinations": {"big": 1, "tiny": 0, "rest": 1},
        "routed": {"big": 1, "tiny": 1, "rest": 1},
        "held_back": {"tiny": 1},
        "rejected": {},
    }
    assert [chunk["count"] for chunk in routing["partitions"]["big"]["chunks"]] == [1]
    assert read_jsonl(tmp_path / "out" / "big.jsonl") == [{"amount": 500}]
    assert not (tmp_path / "out" / "tiny.jsonl").exists()  # held back by min_records
    assert summary["warnings"] == ["destination 'tiny': 1 records held back (min_records is 3)"]
    check_conservation(summary, route)
    with pytest.raises(DeadLettersPresentError, match="2 records were dead-lettered"):
        check_dead_letters(summary, route)
    letters = read_jsonl(Path(summary["dead_letters"].removeprefix("file://")))
    assert [(letter["rule"], letter["record"]) for letter in letters] == [
        ("big", {"amount": "150.7"}),
        ("big", {"amount": 150.5}),
    ]
    assert all(letter["position"].split(":")[-1].isdigit() for letter in letters)


def test_conservation_check_catches_a_lost_record(tmp_path: Path) -> None:
    route, _, summary = _run(tmp_path, [{"amount": 500}, {"amount": 50}])
    summary["counts"]["destinations"]["big"] = 0
    with pytest.raises(ConservationError, match="'big' was routed 1 records but delivered 0"):
        check_conservation(summary, route)
    summary["counts"]["unmatched"] = 0
    with pytest.raises(ConservationError, match="read 2 records but accounted for 1"):
        check_conservation(summary, route)


def test_per_batch_destination_gets_one_summary_standing_for_every_record(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "in.jsonl", [{"id": n, "level": "error" if n % 2 else "info"} for n in range(7)]
    )
    route = load_route(
        write_route(
            tmp_path,
            "alerts",
            """
            source: {type: file, path: in.jsonl}
            rules:
              - {name: errors, when: {path: $.level, eq: error}, to: [digest, all_errors]}
            destinations:
              digest: {type: file, path: out/digest.jsonl, per: batch, sample_size: 2}
              all_errors: {type: file, path: out/errors.jsonl}
            """,
        )
    )
    context = RunContext(route="alerts", run_id="run-1", route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "alerts", "run-1")
    routing = route_records(route, context, staging, extract(route, context, staging))
    deliveries = {
        name: deliver(route, name, context, routing["partitions"][name])
        for name in wanted_destinations(route, routing["partitions"])
    }
    summary = summarize(route, "run-1", routing, deliveries)
    assert read_jsonl(tmp_path / "out" / "digest.jsonl") == [
        {"count": 3, "records": [{"id": 1, "level": "error"}, {"id": 3, "level": "error"}]}
    ]
    assert len(read_jsonl(tmp_path / "out" / "errors.jsonl")) == 3
    assert summary["counts"]["routed"] == {"digest": 3, "all_errors": 3}
    assert summary["counts"]["destinations"] == {
        "digest": 3,
        "all_errors": 3,
    }  # records, not messages
    check_conservation(summary, route)


def test_dead_letters_are_kept_in_the_state_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_dataflow.state.store import StateStore

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    _run(tmp_path, [{"amount": 500}, {"amount": "150.7"}, [1, 2]])
    _run(
        tmp_path, [{"amount": 500}, {"amount": "150.7"}, [1, 2]]
    )  # a retry replaces, never doubles
    letters = StateStore.open().dead_letters("orders", run_id="run-1")
    assert [(letter["rule"], letter["step"], letter["record"]) for letter in letters] == [
        ("big", 0, {"amount": "150.7"}),
        (None, None, [1, 2]),
    ]
    assert "cast amount to int" in letters[0]["reason"]
    assert letters[1]["position"].endswith("extract-00001.jsonl:1")  # chunks of 2 records
