"""The Dataflow view's data, and its API refusing anonymous callers."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from airflow_dataflow.plugins.app import dataflow_app
from airflow_dataflow.state.migrate import upgrade
from airflow_dataflow.state.store import StateStore
from airflow_dataflow.ui.overview import routes_overview
from tests.support.routes import write_route


def test_routes_their_last_runs_and_invalid_files(tmp_path: Path) -> None:
    write_route(
        tmp_path,
        "orders",
        """
        schedule: "@hourly"
        source: {type: file, path: in.jsonl}
        rules:
          - {name: big, when: {path: $.amount, gt: 100}, to: [warehouse]}
        destinations:
          warehouse: {type: file, path: out.jsonl}
        """,
    )
    write_route(tmp_path, "broken", "source: {type: file}\nrules: []\ndestinations: {}\n")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    store = StateStore(engine)
    counts = {"read": 3, "matched": 1, "unmatched": 2, "dead_lettered": 0}
    counts |= {"rules": {"big": 1}, "destinations": {"warehouse": 1}, "rejected": {}}
    store.save_run_summary(
        route="orders", run_id="run-1", state="success", counts=counts, warnings=[], started_at=None
    )

    overview = routes_overview(str(tmp_path), store)

    [route] = overview["routes"]
    assert route["id"] == "orders" and route["source"] == "file"
    assert route["schedule"] == "@hourly" and route["rules"] == ["big"]
    assert route["destinations"] == {"warehouse": "file"}
    assert [run["run_id"] for run in route["last_runs"]] == ["run-1"]
    assert route["pending_dead_letters"] == 0
    [issue] = {issue["file"] for issue in overview["invalid"]}
    assert issue.endswith("broken.route.yaml")


def test_the_api_and_the_page_refuse_anonymous_callers() -> None:
    client = TestClient(dataflow_app())
    for path in ("/api/routes", "/api/routes/orders/runs", "/api/dead-letters", "/ui"):
        assert client.get(path).status_code == 401, path
