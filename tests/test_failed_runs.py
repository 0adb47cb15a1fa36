"""Failed runs are summarised by the failing task on its last attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.errors import DestinationError, FatalError, RouteConfigError
from airflow_dataflow.operators.failures import is_last_attempt, partial_counts, record_failed_run
from airflow_dataflow.state.store import StateStore


class FakeTI:
    """What the failure summary reads from a task instance: its try and the XComs."""

    def __init__(self, try_number: int, xcoms: dict[tuple[str, str | None], Any]) -> None:
        self.try_number = try_number
        self.task_id = "deliver_dwh"
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.xcoms.get((task_ids, key))


XCOMS = {
    ("extract", None): {"read": 10},
    (
        "route",
        "routing",
    ): {
        "counts": {
            "read": 10,
            "matched": 8,
            "unmatched": 1,
            "dead_lettered": 1,
            "rules": {"big": 8},
            "routed": {"dwh": 8, "lake": 8},
        }
    },
    ("deliver_lake", None): {"delivered": 8},
}


@pytest.mark.parametrize(
    ("try_number", "retries", "exc", "last"),
    [
        (1, 2, DestinationError("x"), False),
        (2, 2, DestinationError("x"), False),
        (3, 2, DestinationError("x"), True),
        (1, 0, DestinationError("x"), True),
        (1, 5, FatalError("corrupted cursor"), True),
        (1, 5, RouteConfigError([]), True),
    ],
)
def test_only_the_last_attempt_records(
    try_number: int, retries: int, exc: Exception, last: bool
) -> None:
    assert is_last_attempt({"ti": FakeTI(try_number, {})}, retries, exc) is last


def test_partial_counts_show_what_finished_before_the_failure() -> None:
    counts = partial_counts(FakeTI(1, XCOMS), ["dwh", "lake"])
    assert counts == {
        "read": 10,
        "matched": 8,
        "unmatched": 1,
        "dead_lettered": 1,
        "rules": {"big": 8},
        "routed": {"dwh": 8, "lake": 8},
        "destinations": {"dwh": 0, "lake": 8},
    }
    assert partial_counts(FakeTI(1, {}), ["dwh"])["read"] == 0  # failed in extract


def test_the_failed_run_is_stored_with_its_task_and_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    record_failed_run(
        route_id="orders",
        destinations=["dwh", "lake"],
        context={"ti": FakeTI(3, XCOMS), "run_id": "run-9"},
        exc=DestinationError("table 'dwh' refused record 5"),
    )
    [run] = StateStore.open().recent_runs("orders")
    assert run["state"] == "failed"
    assert run["failed_task"] == "deliver_dwh"
    assert run["error"] == "DestinationError: table 'dwh' refused record 5"
    assert run["counts"]["destinations"] == {"dwh": 0, "lake": 8}


def test_a_store_that_cannot_be_written_never_hides_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DATAFLOW_STATE", "postgres://nobody@127.0.0.1:1/none")
    record_failed_run(  # logs a warning, raises nothing
        route_id="orders",
        destinations=[],
        context={"ti": FakeTI(1, {}), "run_id": "r"},
        exc=DestinationError("boom"),
    )
