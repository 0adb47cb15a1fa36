"""Real DAG runs of an incremental ``sql`` source (PostgreSQL): the cursor moves only after delivery."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, assert_conserved
from tests.support.databases import Database, unique
from tests.support.routes import read_jsonl, write_route

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROUTE = """
    source:
      type: sql
      connection: {conn}
      query: SELECT id, updated_at, amount FROM {table}
      cursor: {{column: updated_at, initial: "2000-01-01T00:00:00"}}
    rules:
      - {{name: all, to: [out]}}
    destinations:
      out: {{type: file, path: "{out}/{{{{ run_id }}}}.jsonl"}}
"""


@pytest.fixture
def orders(db: Database) -> Database:
    db.execute(
        f"CREATE TABLE {db.table('orders')} (id INTEGER PRIMARY KEY, updated_at TIMESTAMP, "
        "amount NUMERIC(10, 2))"
    )
    return db


def _insert(db: Database, *rows: tuple[int, str]) -> None:
    for id_, at in rows:
        db.execute(
            f"INSERT INTO {db.table('orders')} VALUES (:id, CAST(:at AS TIMESTAMP), 10)",
            id=id_,
            at=at,
        )


def _route(tmp_path: Path, db: Database, out: str = "out") -> tuple[str, Path]:
    route_id = unique("incremental")
    text = ROUTE.format(conn=db.conn_id, table=db.table("orders"), out=out)
    return route_id, write_route(tmp_path, route_id, text)


def _run(dataflow: Callable[..., CliResult], route: Path, *args: str) -> dict[str, Any]:
    result = dataflow("run", str(route), "--json", *args)
    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert_conserved(summary)
    return summary


def _ids(summary: dict[str, Any]) -> list[int]:
    """The ids the run delivered to its own file, in order."""
    [location] = summary["locations"]["out"]
    return [record["id"] for record in read_jsonl(Path(location.removeprefix("file://")))]


def _cursor(dataflow: Callable[..., CliResult], route_id: str) -> dict[str, Any]:
    shown = dataflow("cursor", "show", route_id, "--json")
    assert shown.returncode == 0, shown.output[-3000:]
    return json.loads(shown.stdout.splitlines()[-1])


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_runs_read_only_new_rows_and_params_re_read(
    orders: Database, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route = _route(tmp_path, orders)
    _insert(orders, (1, "2024-01-03 10:00:00"), (2, "2024-01-01 10:00:00"), (3, "2024-01-02"))

    first = _run(dataflow, route)
    assert first["counts"]["read"] == 3
    assert _ids(first) == [2, 3, 1]  # in cursor order
    cursor = _cursor(dataflow, route_id)
    assert (cursor["column"], cursor["value"]) == ("updated_at", "2024-01-03T10:00:00")
    assert cursor["run_id"] == first["run_id"]

    _insert(orders, (4, "2024-01-05 00:00:00"), (5, "2024-01-04 00:00:00"), (6, "2024-01-02"))
    second = _run(dataflow, route)
    assert _ids(second) == [5, 4]  # 6 is older than the cursor: never read
    assert _cursor(dataflow, route_id)["value"] == "2024-01-05T00:00:00"

    assert _run(dataflow, route)["counts"]["read"] == 0  # nothing new
    assert _cursor(dataflow, route_id)["run_id"] == second["run_id"]  # and nothing committed

    again = _run(dataflow, route, "--conf", json.dumps({"reset_cursor": True}))
    assert _ids(again) == [2, 3, 6, 1, 5, 4]

    since = _run(dataflow, route, "--conf", json.dumps({"since": "2024-01-03T00:00:00"}))
    assert _ids(since) == [1, 5, 4]
    assert _cursor(dataflow, route_id)["value"] == "2024-01-05T00:00:00"

    # The CLI moves it by hand: --to, then a reset back to initial.
    moved = dataflow("cursor", "reset", route_id, "--to", "2024-01-04T12:00:00")
    assert moved.returncode == 0, moved.output[-3000:]
    assert _ids(_run(dataflow, route)) == [4]
    assert dataflow("cursor", "reset", route_id).returncode == 0
    assert _cursor(dataflow, route_id)["committed"] is False
    assert len(_ids(_run(dataflow, route))) == 6


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_failed_delivery_leaves_the_cursor_and_the_next_run_re_reads(
    orders: Database, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route = _route(tmp_path, orders, out="target")
    _insert(orders, (1, "2024-01-01"), (2, "2024-01-02"))
    assert _ids(_run(dataflow, route)) == [1, 2]
    committed = _cursor(dataflow, route_id)
    assert committed["value"] == "2024-01-02T00:00:00"

    _insert(orders, (3, "2024-01-03"), (4, "2024-01-04"))
    (tmp_path / "target").rename(tmp_path / "earlier")
    (tmp_path / "target").write_text("a file where the destination needs a folder")
    failed = dataflow("run", str(route), "--json")
    assert failed.returncode == 1
    assert failed.summary["state"] == "failed"
    assert "deliver_out" in failed.summary["failed_tasks"]
    assert _cursor(dataflow, route_id) == committed  # the cursor did not move

    (tmp_path / "target").unlink()  # the destination is fixed: the same rows again
    assert _ids(_run(dataflow, route)) == [3, 4]
    assert _cursor(dataflow, route_id)["value"] == "2024-01-04T00:00:00"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_hand_corrupted_cursor_fails_the_run_with_the_remedy(
    orders: Database, dataflow: Callable[..., CliResult], tmp_path: Path, airflow_home: Path
) -> None:
    route_id, route = _route(tmp_path, orders)
    _insert(orders, (1, "2024-01-01"), (2, "2024-01-02"))
    _run(dataflow, route)

    def corrupt(text: str) -> None:
        with sqlite3.connect(airflow_home / "dataflow" / "state.db") as connection:
            connection.execute(
                "UPDATE dataflow_sync_cursors SET cursor = ? WHERE route = ?", (text, route_id)
            )

    for text, problem in [
        ('{"column": "updated_at", "value": 17}', "has a number value, but source.cursor.initial"),
        ('{"column": "updated_at", "value": "2024-01-0', "is not valid JSON"),
        ('{"column": "created_at", "value": "2024-01-01"}', "was committed for column"),
        (
            '{"column": "updated_at", "value": "last tuesday"}',
            'invalid input syntax for type timestamp: "last tuesday"',
        ),
    ]:
        corrupt(text)
        result = dataflow("run", str(route), "--json")
        assert result.returncode == 1, text
        summary = result.summary
        assert summary["state"] == "failed"
        assert summary["counts"]["read"] == 0  # nothing re-read, nothing skipped
        error = summary["errors"]["extract"]
        assert f"route {route_id!r}" in error and problem in error, error
        assert f"airflow-dataflow cursor reset {route_id}" in error
        assert '{"reset_cursor": true}' in error

    corrupt("garbage")
    shown = dataflow("cursor", "show", route_id)
    assert shown.returncode == 1 and "'garbage', which is not valid JSON" in shown.stderr

    # One run with reset_cursor re-reads from initial and commits a good cursor again.
    assert _run(dataflow, route, "--conf", '{"reset_cursor": true}')["counts"]["read"] == 2
    assert _cursor(dataflow, route_id)["value"] == "2024-01-02T00:00:00"
