"""The state store's run summaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.state.migrate import StateStoreError, state_engine, status
from airflow_dataflow.state.store import StateStore

COUNTS = {
    "read": 3,
    "matched": 2,
    "unmatched": 1,
    "dead_lettered": 0,
    "rules": {"a": 2},
    "destinations": {"x": 2},
}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateStore:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    return StateStore.open()


def test_the_default_store_is_migrated_on_first_use(store: StateStore) -> None:
    assert status(store.engine).up_to_date


def test_summaries_newest_first_with_duration(store: StateStore) -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    for n in range(3):
        store.save_run_summary(
            route="orders",
            run_id=f"run-{n}",
            state="success",
            counts=COUNTS,
            warnings=[],
            started_at=start + timedelta(hours=n),
            finished_at=start + timedelta(hours=n, seconds=30),
        )
    store.save_run_summary(
        route="other", run_id="x", state="success", counts=COUNTS, warnings=[], started_at=None
    )
    runs = store.recent_runs("orders", limit=2)
    assert [run["run_id"] for run in runs] == ["run-2", "run-1"]
    assert runs[0]["duration_seconds"] == 30.0 and runs[0]["counts"] == COUNTS
    assert runs[0]["finished_at"] == "2024-05-01T14:00:30+00:00"


def test_a_retried_commit_replaces_its_summary(store: StateStore) -> None:
    for state in ("failed", "success"):
        store.save_run_summary(
            route="orders", run_id="r", state=state, counts=COUNTS, warnings=["w"], started_at=None
        )
    (run,) = store.recent_runs("orders")
    assert run["state"] == "success" and run["warnings"] == ["w"]


def test_a_configured_store_behind_the_head_names_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "configured.db"
    sa.create_engine(f"sqlite:///{database}").connect().close()
    monkeypatch.setenv("AIRFLOW_CONN_DATAFLOW_STATE", f"sqlite:///{database}")
    with pytest.raises(StateStoreError, match="run `airflow-dataflow db upgrade`"):
        StateStore.open()
    assert status(state_engine()).current is None  # never migrated behind the operators' back
