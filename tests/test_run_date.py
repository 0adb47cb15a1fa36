"""``ds`` of runs with and without a logical date (REST API and asset-triggered runs)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from airflow_dataflow.errors import DataflowError
from airflow_dataflow.operators.base import run_date


def test_the_logical_dates_ds_when_there_is_one() -> None:
    dag_run = SimpleNamespace(run_after=datetime(2024, 5, 9, tzinfo=timezone.utc))
    assert run_date({"ds": "2024-05-01", "dag_run": dag_run}) == "2024-05-01"


def test_without_a_logical_date_the_day_the_run_is_for() -> None:
    dag_run = SimpleNamespace(run_after=datetime(2024, 5, 9, 23, 59, tzinfo=timezone.utc))
    assert run_date({"dag_run": dag_run}) == "2024-05-09"


def test_neither_is_an_error_not_a_key_error() -> None:
    with pytest.raises(DataflowError, match="neither ds nor"):
        run_date({"dag_run": SimpleNamespace(run_after=None, start_date=None)})


def test_triggering_asset_events_oldest_first_with_their_uris() -> None:
    from airflow_dataflow.operators.base import triggering_asset_events

    def event(uri: str, minute: int, payload: int) -> SimpleNamespace:
        when = datetime(2024, 5, 9, 10, minute, tzinfo=timezone.utc)
        return SimpleNamespace(asset=SimpleNamespace(uri=uri), timestamp=when, extra={"n": payload})

    context = {
        "triggering_asset_events": {
            "a": [event("dataflow://webhooks/a", 5, 2), event("dataflow://webhooks/a", 1, 1)],
            "b": [event("dataflow://webhooks/b", 3, 3)],
        }
    }
    assert triggering_asset_events(context) == (
        ("dataflow://webhooks/a", {"n": 1}),
        ("dataflow://webhooks/b", {"n": 3}),
        ("dataflow://webhooks/a", {"n": 2}),
    )
    assert triggering_asset_events({}) == ()
