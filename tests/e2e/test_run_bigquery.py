"""Real DAG runs of the bigquery docs example: BigQuery -> rules -> PostgreSQL, incrementally.

The route is the example of docs/connectors/bigquery.md (its connections pointed at the fake
BigQuery API and the test's PostgreSQL schema), run through ``airflow-dataflow run`` in a
subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.bigquery import FakeBigQuery
from tests.support.cli import CliResult, run_route
from tests.support.databases import Database, unique
from tests.support.routes import doc_route_example

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COLUMNS = {"id": "INT64", "country": "STRING", "amount": "NUMERIC", "updated_at": "TIMESTAMP"}


@pytest.fixture
def bigquery(dataflow: Callable[..., CliResult]) -> Iterator[FakeBigQuery]:
    with FakeBigQuery() as fake:
        dataflow.connect("bigquery_default", fake.connection())  # type: ignore[attr-defined]
        fake.create_table("shop.orders", COLUMNS)
        yield fake


def _order(id_: int, country: str, amount: int, day: int) -> dict[str, Any]:
    at = dt.datetime(2024, 1, day, 10, tzinfo=dt.UTC)
    return {"id": id_, "country": country, "amount": amount, "updated_at": at}


def _route(tmp_path: Path, db: Database, wait_for_table: bool = False) -> tuple[str, Path]:
    route = yaml.safe_load(doc_route_example("bigquery.md", folder="connectors"))
    if wait_for_table:  # a bigquery_table sensor before extract (the table exists: it passes)
        wait = {"type": "bigquery_table", "connection": "bigquery_default", "table": "shop.orders"}
        route["wait_for"] = [{**wait, "poke_interval": 1, "timeout": 60}]
    route["retries"] = 0  # a failed delivery fails the run now, not after retry delays
    route["destinations"]["warehouse"].update(connection=db.conn_id, table=db.table("eu_orders"))
    route_id = unique("bigquery")
    path = tmp_path / f"{route_id}.route.yaml"
    path.write_text(yaml.safe_dump(route, sort_keys=False), encoding="utf-8")
    return route_id, path


def _cursor(dataflow: Callable[..., CliResult], route_id: str) -> dict[str, Any]:
    shown = dataflow("cursor", "show", route_id, "--json")
    assert shown.returncode == 0, shown.output[-3000:]
    return dict(json.loads(shown.stdout.splitlines()[-1]))


def _warehouse(db: Database) -> list[tuple[int, int]]:
    return [(row["id"], row["amount"]) for row in db.rows("eu_orders")]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_runs_read_only_rows_changed_since_the_last_run(
    db: Database, bigquery: FakeBigQuery, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route = _route(tmp_path, db, wait_for_table=True)
    bigquery.insert(
        "shop.orders",
        [_order(1, "DE", 150, 3), _order(2, "FR", 50, 1), _order(3, "US", 500, 2),
         _order(4, "IT", 120, 2)],
    )  # fmt: skip

    first = run_route(dataflow, route)
    assert first["counts"]["read"] == 3  # US is not among the countries
    assert first["counts"]["destinations"] == {"warehouse": 2, "small": 1}
    assert _warehouse(db) == [(1, 150), (4, 120)]
    assert _cursor(dataflow, route_id)["value"] == "2024-01-03T10:00:00+00:00"

    # Order 1 changes, order 5 is new, order 6 arrives stamped before the cursor.
    bigquery.delete("shop.orders", "id", [1])
    bigquery.insert(
        "shop.orders",
        [_order(1, "DE", 175, 5), _order(5, "FR", 300, 4), _order(6, "DE", 999, 1)],
    )
    second = run_route(dataflow, route)
    assert second["counts"]["read"] == 2
    assert second["counts"]["destinations"] == {"warehouse": 2, "small": 0}
    assert _warehouse(db) == [(1, 175), (4, 120), (5, 300)]
    assert _cursor(dataflow, route_id)["value"] == "2024-01-05T10:00:00+00:00"

    # One job per run, each with the cursor and the run's snapshot as typed parameters.
    first_job, second_job = (bigquery.jobs[job_id] for job_id in bigquery.inserted)
    assert first_job.parameters["dataflow_cursor"] == {"value": "2024-01-01T00:00:00+00:00"}
    assert second_job.parameters["dataflow_cursor"] == {"value": "2024-01-03T10:00:00+00:00"}
    assert [r.method for r in bigquery.requests].count("tables.get") == 2  # the sensor, each run
    assert {"countries", "min_amount", "dataflow_snapshot"} <= second_job.parameters.keys()


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_failed_delivery_leaves_the_cursor_and_the_next_run_re_reads(
    db: Database, bigquery: FakeBigQuery, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route = _route(tmp_path, db)
    bigquery.insert("shop.orders", [_order(1, "DE", 150, 1), _order(2, "FR", 50, 2)])
    run_route(dataflow, route)
    committed = _cursor(dataflow, route_id)
    assert committed["value"] == "2024-01-02T10:00:00+00:00"

    bigquery.insert("shop.orders", [_order(3, "DE", 200, 3), _order(4, "FR", 20, 4)])
    exports = tmp_path / "exports"
    exports.rename(tmp_path / "earlier")
    exports.write_text("a file where the small destination needs a folder")
    failed = dataflow("run", str(route), "--json")
    assert failed.returncode == 1
    assert failed.summary["state"] == "failed"
    assert "deliver_small" in failed.summary["failed_tasks"]
    assert _cursor(dataflow, route_id) == committed  # extracted, not delivered: not moved

    exports.unlink()  # the destination is fixed: the next run reads the same rows again
    again = run_route(dataflow, route)
    assert again["counts"]["read"] == 2
    assert again["counts"]["destinations"] == {"warehouse": 1, "small": 1}
    assert _warehouse(db) == [(1, 150), (3, 200)]  # upserted: no duplicate of order 3
    assert _cursor(dataflow, route_id)["value"] == "2024-01-04T10:00:00+00:00"
    assert len(bigquery.inserted) == 3  # one job per run
