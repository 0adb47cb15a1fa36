"""A real run updates each destination's Asset, with what it delivered in the event's extra."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult, run_route
from tests.support.databases import unique
from tests.support.routes import write_jsonl, write_route

pytestmark = [pytest.mark.e2e]

ROUTE = """
    source: {type: file, path: in.jsonl}
    rules:
      - {name: big, when: {path: $.amount, gt: 100}, to: [big]}
    unmatched: [rest]
    destinations:
      big: {type: file, path: out/big.jsonl}
      rest: {type: file, path: out/rest.jsonl}
"""


def asset_events(airflow_home: Path, uri: str) -> list[dict[str, object]]:
    """The extras of the metadata DB's events for the Asset ``uri``, oldest first."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = ? ORDER BY e.id",
            (uri,),
        ).fetchall()
    return [json.loads(extra) if isinstance(extra, str) else extra for (extra,) in rows]


def test_each_run_records_an_event_per_destination_with_its_counts(
    dataflow: Callable[..., CliResult], tmp_path: Path, airflow_home: Path
) -> None:
    route_id = unique("assets")
    write_jsonl(tmp_path / "in.jsonl", [{"id": n, "amount": n * 50} for n in range(1, 6)])
    route = write_route(tmp_path, route_id, ROUTE)

    summary = run_route(dataflow, route)
    run_route(dataflow, route)

    big = asset_events(airflow_home, f"dataflow://{route_id}/big")
    rest = asset_events(airflow_home, f"dataflow://{route_id}/rest")
    assert len(big) == 2 and len(rest) == 2  # one event per run and destination
    assert big[0]["delivered"] == 3 and rest[0]["delivered"] == 2  # amounts 150..250 / 50, 100
    assert big[0]["read"] == 5
    assert big[0]["route"] == route_id and big[0]["destination"] == "big"
    assert big[0]["run_id"] == summary["run_id"]
    assert big[1]["run_id"] != big[0]["run_id"]
