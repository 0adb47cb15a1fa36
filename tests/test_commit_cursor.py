"""The commit task saves the source cursor before it fails a run for its dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.operators.commit import CommitOperator
from airflow_dataflow.state.cursors import CursorStore
from tests.support.routes import write_route

ROUTE = """
    source:
      type: sql
      connection: dwh
      query: SELECT id FROM orders
      cursor: {column: id, initial: 0}
    on_dead_letter: fail
    rules:
      - {name: all, to: [out]}
    destinations:
      out: {type: file, path: out.jsonl}
"""


class FakeTI:
    """The XComs commit pulls (extract's manifest, the routing, the delivery) and pushes."""

    task_id = "commit"
    try_number = 1

    def __init__(self, extracted: dict[str, Any]) -> None:
        self.pulls: dict[tuple[str, str | None], Any] = {
            ("extract", None): extracted,
            ("route", "routing"): {
                "counts": {
                    "read": 3,
                    "matched": 2,
                    "unmatched": 0,
                    "dead_lettered": 1,
                    "rules": {"all": 2},
                    "routed": {"out": 2},
                },
                "dead_letters": "dead.jsonl",
            },
            ("deliver_out", None): {"delivered": 2, "locations": []},
        }
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.pulls.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_dead_letters_fail_the_run_after_the_cursor_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    route = write_route(tmp_path, "orders_commit", ROUTE)
    commit = CommitOperator(task_id="commit", route_file=str(route), route_id="orders_commit")
    cursor = {"stream": "source", "column": "id", "previous": None, "start": 0, "value": 3}
    ti = FakeTI({"read": 3, "cursor": cursor})
    context = {"ti": ti, "run_id": "run-1", "ds": "2024-01-01", "params": {}}

    with pytest.raises(Exception, match="1 records were dead-lettered"):
        commit.execute(context)

    committed = CursorStore.open().get("orders_commit")
    assert committed is not None and (committed.value, committed.run_id) == (3, "run-1")
