"""``airflow-dataflow cursor show|reset ROUTE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import airflow.configuration  # noqa: F401 - unit-test mode logs one line on load: before capsys
import pytest
import sqlalchemy as sa

from airflow_dataflow.cli import main
from airflow_dataflow.state.cursors import CursorStore
from tests.support.routes import write_route

ROUTE = """
    source:
      type: sql
      connection: dwh
      query: SELECT id, amount FROM orders
      cursor: {column: id, initial: 0}
    destinations:
      out: {type: file, path: out.jsonl}
"""


@pytest.fixture
def dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    folder = tmp_path / "dags"
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    write_route(folder, "orders", ROUTE)
    write_route(
        folder,
        "plain",
        """
        source: {type: file, path: in.jsonl}
        destinations:
          out: {type: file, path: out.jsonl}
        """,
    )
    return folder


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def show(capsys: pytest.CaptureFixture[str], route: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "cursor", "show", route, "--json")
    assert code == 0, err
    return json.loads(out.splitlines()[-1])


def test_show_without_a_committed_cursor(dags: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "cursor", "show", "orders")
    assert code == 0
    assert out.strip() == "route orders: no committed cursor; the next run reads after 0 (initial)"
    report = show(capsys, str(dags / "orders.route.yaml"))  # a route file works as well
    assert report["committed"] is False and report["value"] is None and report["initial"] == 0


def test_reset_to_a_value_then_back_to_initial(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "cursor", "reset", "orders", "--to", "100")
    assert code == 0 and out.strip() == "route orders: the cursor is now id > 100"
    report = show(capsys, "orders")
    assert (report["committed"], report["column"], report["value"]) == (True, "id", 100)
    assert report["run_id"] is None and report["error"] is None

    code, out, _ = cli(capsys, "cursor", "show", "orders")
    assert out.splitlines()[0] == "route orders: id > 100"
    assert "committed by a cursor reset" in out

    code, out, _ = cli(capsys, "cursor", "reset", "orders", "--json")
    assert code == 0
    assert json.loads(out) == {
        "route": "orders",
        "stream": "source",
        "previous": '{"column": "id", "value": 100}',
        "column": "id",
        "value": None,
        "action": "deleted",
    }
    assert show(capsys, "orders")["committed"] is False
    code, out, _ = cli(capsys, "cursor", "reset", "orders")
    assert "had no committed cursor" in out


def test_reset_to_a_value_of_the_wrong_type_is_refused(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "cursor", "reset", "orders", "--to", "last week")
    assert code == 1
    assert (
        "route 'orders': --to is 'last week'; it must be a number like source.cursor.initial" in err
    )
    assert show(capsys, "orders")["committed"] is False


def test_reset_to_a_string_value(
    tmp_path: Path, dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_route(dags, "events", ROUTE.replace("initial: 0", 'initial: "2024-01-01"'))
    assert cli(capsys, "cursor", "reset", "events", "--to", "2024-06-01T00:00:00")[0] == 0
    assert show(capsys, "events")["value"] == "2024-06-01T00:00:00"
    assert cli(capsys, "cursor", "reset", "events", "--to", '"2024"')[0] == 0  # JSON string
    assert show(capsys, "events")["value"] == "2024"


def test_setting_a_cursor_needs_a_route_with_one(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "cursor", "reset", "plain", "--to", "1")
    assert code == 1 and "route 'plain': its source has no cursor (source.cursor)" in err
    code, _, err = cli(capsys, "cursor", "reset", "nowhere", "--to", "1")
    assert code == 1 and "no route 'nowhere' under the dags folder" in err


def test_a_route_id_not_under_the_dags_folder_can_still_be_shown_and_reset(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CursorStore.open().save("gone", "id", 7, run_id="r")
    assert show(capsys, "gone")["value"] == 7
    assert cli(capsys, "cursor", "reset", "gone")[0] == 0
    assert show(capsys, "gone")["committed"] is False


def test_show_reports_a_corrupted_cursor(dags: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = CursorStore.open()
    store.save("orders", "id", 7, run_id="r")
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE dataflow_sync_cursors SET cursor = :text"),
            {"text": '{"column": "id", "value": "7"}'},
        )
    code, _, err = cli(capsys, "cursor", "show", "orders")
    assert code == 1
    assert "has a string value, but source.cursor.initial (0) is a number" in err
    code, out, _ = cli(capsys, "cursor", "show", "orders", "--json")
    report = json.loads(out)
    assert code == 1 and report["raw"] == '{"column": "id", "value": "7"}'
    assert "airflow-dataflow cursor reset orders" in report["error"]
    assert cli(capsys, "cursor", "reset", "orders", "--to", "8")[0] == 0  # the remedy works
    assert show(capsys, "orders")["value"] == 8
