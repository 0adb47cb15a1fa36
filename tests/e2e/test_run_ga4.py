"""Real DAG runs of the documented GA4 route: fake Data API -> rules -> PostgreSQL (upsert)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.ga4 import FakeGA4, fake_ga4
from tests.support.cli import CliResult, run_route
from tests.support.databases import Database, unique
from tests.support.routes import doc_route_example

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

KEY = ("date", "country", "deviceCategory")


@pytest.fixture
def ga4() -> Iterator[FakeGA4]:
    with fake_ga4() as server:
        yield server


def _write(tmp_path: Path, route_id: str, route: dict[str, Any], end: str) -> Path:
    route["source"]["date_range"] = {"start": "2024-03-01", "end": end}
    path = tmp_path / f"{route_id}.route.yaml"
    path.write_text(yaml.safe_dump(route, sort_keys=False), encoding="utf-8")
    return path


def _setup(
    tmp_path: Path, db: Database, dataflow: Callable[..., CliResult], ga4: FakeGA4, warehouse: str
) -> tuple[str, dict[str, Any]]:
    route = yaml.safe_load(doc_route_example("ga4.md", folder="connectors"))
    route["source"]["property_id"] = int(next(iter(ga4.properties)))
    route["destinations"]["warehouse"]["table"] = db.table("ga4_daily")
    dataflow.connect("ga4", json.dumps(ga4.connection()))  # type: ignore[attr-defined]
    dataflow.connect("warehouse", warehouse)  # type: ignore[attr-defined]
    return unique("ga4_daily"), route


def _rows(db: Database) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(row[k] for k in KEY): row for row in db.rows("ga4_daily", order_by="date")}


def _cursor(dataflow: Callable[..., CliResult], route_id: str) -> Any:
    shown = dataflow("cursor", "show", route_id, "--json")
    assert shown.returncode == 0, shown.output[-3000:]
    return json.loads(shown.stdout.splitlines()[-1])


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_runs_read_new_days_and_replace_the_re_read_ones(
    db: Database, dataflow: Callable[..., CliResult], tmp_path: Path, ga4: FakeGA4
) -> None:
    route_id, route = _setup(tmp_path, db, dataflow, ga4, db_uri(db))

    first = run_route(dataflow, _write(tmp_path, route_id, route, "2024-03-05"))
    # 5 days x 4 countries x 2 devices (tablets are filtered out by the example's filter).
    assert first["counts"]["read"] == 40 and first["counts"]["destinations"] == {"warehouse": 40}
    assert first["warnings"] == []
    rows = _rows(db)
    assert len(rows) == 40 and {key[2] for key in rows} == {"desktop", "mobile"}
    before = rows[("20240305", "France", "desktop")]
    assert isinstance(before["sessions"], int) and isinstance(before["engagementRate"], float)
    assert _cursor(dataflow, route_id)["value"] == "2024-03-05"

    # Three days later, with late data for 2024-03-05 and a sampled day.
    ga4.late_data["2024-03-05"] = 500
    ga4.sampled = {"2024-03-07"}
    served = len(ga4.requests)
    second = run_route(dataflow, _write(tmp_path, route_id, route, "2024-03-08"))
    days = [request.dates[0] for request in ga4.requests[served:]]
    assert days == ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"]
    assert second["counts"]["read"] == 40
    [warning] = second["warnings"]
    assert "sampled the report for 2024-03-07" in warning
    rows = _rows(db)
    assert len(rows) == 64  # 8 days, the re-read ones replaced, not added
    after = rows[("20240305", "France", "desktop")]
    assert after["sessions"] == before["sessions"] + 500
    assert _cursor(dataflow, route_id)["value"] == "2024-03-08"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_failed_delivery_leaves_the_cursor_and_the_next_run_re_reads(
    db: Database, dataflow: Callable[..., CliResult], tmp_path: Path, ga4: FakeGA4
) -> None:
    route_id, route = _setup(tmp_path, db, dataflow, ga4, db_uri(db))
    route["source"]["lookback_days"] = 0
    run_route(dataflow, _write(tmp_path, route_id, route, "2024-03-02"))
    committed = _cursor(dataflow, route_id)
    assert committed["value"] == "2024-03-02"

    # The warehouse connection breaks: extract succeeds, delivery fails, the run fails.
    broken = json.dumps({"conn_type": "http", "host": "127.0.0.1"})
    dataflow.connect("warehouse", broken)  # type: ignore[attr-defined]
    path = _write(tmp_path, route_id, route, "2024-03-04")
    failed = dataflow("run", str(path), "--json")
    assert failed.returncode == 1, failed.output[-3000:]
    assert failed.summary["state"] == "failed"
    assert failed.summary["counts"]["read"] == 16  # 03-03 and 03-04 were extracted
    assert "deliver_warehouse" in failed.summary["failed_tasks"]
    assert _cursor(dataflow, route_id) == committed  # the cursor did not move

    dataflow.connect("warehouse", db_uri(db))  # type: ignore[attr-defined]
    served = len(ga4.requests)
    again = run_route(dataflow, path)
    assert [request.dates[0] for request in ga4.requests[served:]] == ["2024-03-03", "2024-03-04"]
    assert again["counts"]["destinations"] == {"warehouse": 16}
    assert len(_rows(db)) == 32
    assert _cursor(dataflow, route_id)["value"] == "2024-03-04"


def db_uri(db: Database) -> str:
    """The Airflow URI of the test database (what ``db``'s own connection holds)."""
    import os

    return os.environ[f"AIRFLOW_CONN_{db.conn_id.upper()}"]
