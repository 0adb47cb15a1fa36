"""Replaying dead letters without Airflow: the current rules re-applied, delivered, marked."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.config import LoadedRoute, load_route
from airflow_dataflow.replay import plan_replay, replay, replay_context
from airflow_dataflow.state.store import StateStore
from tests.support.routes import read_jsonl, write_route

BROKEN = """
    source: {type: file, path: in.jsonl}
    rules:
      - name: big
        when: {path: $.amount, exists: true}
        transform: [{cast: {amount: int}}]
        to: [big, audit]
    destinations:
      big: {type: file, path: out/big.jsonl}
      audit: {type: file, path: out/audit.jsonl}
"""

FIXED = """
    source: {type: file, path: in.jsonl}
    rules:
      - name: big
        when: {path: $.amount, exists: true}
        transform: [{rename: {amount: raw_amount}}]
        to: [big, audit]
      - name: small
        when: {path: $.amount, lt: 10}
        to: [small]
    unmatched: [rest]
    destinations:
      big: {type: file, path: out/big.jsonl}
      audit: {type: file, path: out/audit.jsonl}
      small: {type: file, path: out/small.jsonl}
      rest: {type: file, path: out/rest.jsonl}
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateStore:
    """The default store under a fresh AIRFLOW_HOME (the delivery ledger uses it too)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    return StateStore.open()


def _letter(record: Any, rule: str | None = "big", **extra: Any) -> dict[str, Any]:
    """A dead letter as the route task stages it."""
    return {
        "route": "orders",
        "run_id": "run-1",
        "rule": rule,
        "step": 0 if rule else None,
        "error": "cast amount to int: invalid literal" if rule else "not a JSON object",
        "position": "in.jsonl:1",
        "record": record,
        **extra,
    }


def _route(tmp_path: Path, text: str) -> LoadedRoute:
    return load_route(write_route(tmp_path, "orders", text))


def _replay(tmp_path: Path, store: StateStore, route: LoadedRoute) -> Any:
    pending = store.list_dead_letters(route.route_id)
    return replay(route, pending, store=store, staging_url=f"file://{tmp_path / 'staging'}")


def _statuses(report: Any) -> list[tuple[str, str | None]]:
    return [(entry.to_dict()["status"], entry.reason) for entry in report.entries]


def test_a_fixed_rule_delivers_to_its_destinations_and_a_second_replay_is_a_no_op(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters(
        [[_letter({"id": 1, "amount": "abc"}), _letter({"id": 2, "amount": "x"})]]
    )
    route = _route(tmp_path, FIXED)

    report = _replay(tmp_path, store, route)

    assert _statuses(report) == [("replayed", None), ("replayed", None)]
    assert [entry.destinations for entry in report.entries] == [("big", "audit")] * 2
    assert report.run_id.startswith("replay__")
    expected = [{"id": 1, "raw_amount": "abc"}, {"id": 2, "raw_amount": "x"}]
    assert read_jsonl(tmp_path / "out" / "big.jsonl") == expected
    assert read_jsonl(tmp_path / "out" / "audit.jsonl") == expected
    assert {name: result.delivered for name, result in report.destinations.items()} == {
        "big": 2,
        "audit": 2,
    }
    assert store.list_dead_letters("orders") == []
    replayed = store.list_dead_letters("orders", include_replayed=True)
    assert {letter["replay_run_id"] for letter in replayed} == {report.run_id}
    assert all(letter["replayed_to"] == ["audit", "big"] for letter in replayed)
    assert not list((tmp_path / "staging").rglob("*.jsonl"))  # staging cleaned

    written = (tmp_path / "out" / "big.jsonl").stat().st_mtime_ns
    again = _replay(tmp_path, store, route)
    assert again.entries == () and again.destinations == {}
    assert (tmp_path / "out" / "big.jsonl").stat().st_mtime_ns == written


def test_a_record_that_still_fails_stays_with_the_new_reason(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters([[_letter({"id": 1, "amount": "abc"})]])
    route = _route(tmp_path, BROKEN.replace("amount: int", "amount: float"))

    report = _replay(tmp_path, store, route)

    ((status, reason),) = _statuses(report)
    assert status == "stayed" and reason is not None
    assert reason.startswith("cast amount to float")
    assert report.destinations == {}
    (letter,) = store.list_dead_letters("orders")
    assert letter["reason"] == "cast amount to int: invalid literal"  # the original is kept
    assert letter["replay_error"] == reason and letter["replay_run_id"] == report.run_id
    assert not (tmp_path / "out").exists()


def test_a_removed_rule_or_destination_and_a_condition_no_longer_met_stay(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters(
        [
            [
                _letter({"id": 1}, rule="gone"),
                _letter({"id": 2, "amount": 50}, rule="small"),
                _letter({"id": 3}, rule=None, destination="vanished"),
            ]
        ]
    )
    route = _route(tmp_path, FIXED)

    report = _replay(tmp_path, store, route)

    assert [status for status, _ in _statuses(report)] == ["stayed"] * 3
    reasons = [reason or "" for _, reason in _statuses(report)]
    assert reasons[0].startswith("rule 'gone' is no longer in route 'orders'")
    assert reasons[1] == "the record no longer matches the condition of rule 'small'"
    assert reasons[2].startswith("destination 'vanished' is no longer in route 'orders'")
    assert len(store.list_dead_letters("orders")) == 3


def test_dead_letters_without_a_rule_go_through_the_whole_router(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters(
        [
            [
                _letter({"id": 1, "amount": 5}, rule=None),  # big and small
                _letter({"id": 2}, rule=None),  # no rule matches: unmatched
                _letter(["not", "an", "object"], rule=None),
                _letter("{broken json", rule=None),
            ]
        ]
    )
    route = _route(tmp_path, FIXED)

    report = _replay(tmp_path, store, route)

    assert [entry.to_dict()["status"] for entry in report.entries] == [
        "replayed",
        "replayed",
        "stayed",
        "stayed",
    ]
    assert report.entries[0].destinations == ("big", "audit", "small")
    assert report.entries[1].destinations == ("rest",)
    assert report.entries[2].reason == "record is not a JSON object (got list)"
    assert read_jsonl(tmp_path / "out" / "small.jsonl") == [{"id": 1, "amount": 5}]
    assert read_jsonl(tmp_path / "out" / "rest.jsonl") == [{"id": 2}]
    assert len(store.list_dead_letters("orders")) == 2


def test_a_refused_record_goes_back_to_its_destination_as_it_is(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters([[_letter({"id": 7, "amount": "abc"}, destination="audit")]])
    route = _route(tmp_path, BROKEN)  # the rule's transform would fail: it is not re-applied

    report = _replay(tmp_path, store, route)

    assert _statuses(report) == [("replayed", None)]
    assert read_jsonl(tmp_path / "out" / "audit.jsonl") == [{"id": 7, "amount": "abc"}]
    assert not (tmp_path / "out" / "big.jsonl").exists()


def test_a_failed_destination_keeps_the_entry_and_the_next_replay_sends_only_there(
    tmp_path: Path, store: StateStore
) -> None:
    store.add_dead_letters([[_letter({"id": 1, "amount": "abc"})]])
    (tmp_path / "blocked").write_text("a file where a folder should be")
    route = _route(tmp_path, FIXED.replace("out/audit.jsonl", "blocked/audit.jsonl"))

    first = _replay(tmp_path, store, route)

    ((status, reason),) = _statuses(first)
    assert status == "stayed" and (reason or "").startswith("delivery to 'audit' failed: ")
    assert first.destinations["audit"].error and not first.destinations["big"].error
    (letter,) = store.list_dead_letters("orders")
    assert letter["replayed_to"] == ["big"] and letter["replay_error"] == reason
    big = tmp_path / "out" / "big.jsonl"
    written = big.stat().st_mtime_ns

    (tmp_path / "blocked").unlink()
    second = _replay(tmp_path, store, route)

    assert _statuses(second) == [("replayed", None)]
    assert list(second.destinations) == ["audit"]  # big already has it
    assert big.stat().st_mtime_ns == written
    assert read_jsonl(tmp_path / "blocked" / "audit.jsonl") == [{"id": 1, "raw_amount": "abc"}]
    assert store.list_dead_letters("orders") == []


def test_a_crash_before_marking_is_covered_by_the_delivery_ledger(
    tmp_path: Path, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_dead_letters([[_letter({"id": 1, "amount": "abc"})]])
    route = _route(tmp_path, FIXED)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as patched:
        patched.setattr(StateStore, "note_replay_attempts", crash)
        with pytest.raises(RuntimeError, match="killed"):
            _replay(tmp_path, store, route)
    big = tmp_path / "out" / "big.jsonl"
    written = big.stat().st_mtime_ns
    assert len(store.list_dead_letters("orders")) == 1  # delivered, but not marked

    report = _replay(tmp_path, store, route)

    assert _statuses(report) == [("replayed", None)]
    assert big.stat().st_mtime_ns == written  # the ledger knew the batch: not written again
    assert read_jsonl(big) == [{"id": 1, "raw_amount": "abc"}]


def test_the_plan_follows_ids_and_the_replay_context_uses_param_defaults(tmp_path: Path) -> None:
    route = _route(
        tmp_path,
        FIXED.replace("lt: 10", 'lt: "{{ params.limit }}"').replace(
            "source:", "params:\n      limit: {type: number, default: 10}\n    source:"
        ),
    )
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    context = replay_context(route, conf={"limit": 3}, now=now)
    assert context.run_id == "replay__2024-05-01T12:00:00+00:00"
    assert context.ds == "2024-05-01" and context.params == {"limit": 3}
    letters = [
        {"id": 9, "run_id": "r", "rule": "small", "record": {"amount": 2}},
        {"id": 4, "run_id": "r", "rule": "small", "record": {"amount": 5}},
    ]
    attempts = plan_replay(route, letters, context)
    assert [attempt.id for attempt in attempts] == [4, 9]
    assert attempts[0].reason == "the record no longer matches the condition of rule 'small'"
    assert attempts[1].deliveries == [("small", {"amount": 2})]
