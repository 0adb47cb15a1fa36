"""``airflow-dataflow dead-letters list|show|replay`` in process: arguments and human output."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import airflow.configuration  # noqa: F401 - unit-test mode logs one line on load: before capsys
import pytest

from airflow_dataflow.cli import load_route_ref, main, parse_since
from airflow_dataflow.errors import DataflowError
from airflow_dataflow.state.store import StateStore
from tests.support.routes import write_route

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=timezone.utc)

ROUTE = """
    source: {type: file, path: in.jsonl}
    rules:
      - name: big
        transform: [{cast: {amount: int}}]
        to: [big]
    destinations:
      big: {type: file, path: out/big.jsonl}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - timedelta(hours=1)),
        ("7d", NOW - timedelta(days=7)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
        ("2024-05-01T08:30", datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc)),
        ("2024-05-01T08:30:00Z", datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc)),
        ("2024-05-01T10:30:00+02:00", datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc)),
    ],
)
def test_since_takes_a_date_a_time_or_a_duration_ago(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


def test_since_names_the_accepted_forms() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"ISO date .* nor a duration"):
        parse_since("last tuesday")


@pytest.fixture
def dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dags folder with route `orders`, and its own Airflow home and state store."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "dags"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    monkeypatch.delenv("AIRFLOW__LOGGING__LOGGING_LEVEL", raising=False)  # replay sets it
    write_route(tmp_path / "dags", "orders", ROUTE)
    return tmp_path / "dags"


def _store_letters(*records: Any) -> None:
    StateStore.open().add_dead_letters(
        [
            [
                {
                    "route": "orders",
                    "run_id": "manual__1",
                    "rule": "big",
                    "step": 0,
                    "error": "cast amount to int: invalid literal " + "x" * 200,
                    "position": "in.jsonl:2",
                    "record": record,
                }
                for record in records
            ]
        ]
    )


def test_routes_are_found_by_id_under_the_dags_folder_or_by_file(dags: Path) -> None:
    assert load_route_ref("orders").file == str(dags / "orders.route.yaml")
    assert load_route_ref(str(dags / "orders.route.yaml")).route_id == "orders"
    with pytest.raises(DataflowError, match=r"no route 'nowhere' under the dags folder"):
        load_route_ref("nowhere")


def test_list_show_and_replay_print_one_line_per_dead_letter(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_letters({"id": 1, "amount": "abc"}, {"id": 2, "amount": "7"})
    capsys.readouterr()

    assert main(["dead-letters", "list", "orders"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert "manual__1  big  cast amount to int" in lines[0] and lines[0].endswith("…")
    assert "2 pending dead letter(s) of route 'orders'" in err

    assert main(["dead-letters", "show", "orders", "1"]) == 0
    shown = capsys.readouterr().out
    assert "dead letter 1 of route 'orders': pending" in shown
    assert "rule:         big (transform step 0)" in shown and '"amount": "abc"' in shown

    assert main(["dead-letters", "replay", "orders"]) == 1  # "abc" still fails the cast
    out = capsys.readouterr().out
    assert "1 replayed, 1 stayed" in out
    assert "     1  stayed (rule big): cast amount to int: invalid literal 'abc'" in out
    assert "     2  replayed (rule big) -> big" in out
    assert "destination big: 1 delivered -> " in out
    assert json.loads((dags / "out" / "big.jsonl").read_text()) == {"id": 2, "amount": 7}

    assert main(["dead-letters", "list", "orders", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "after replay: cast amount to int: invalid literal 'abc'" in lines[0]
    assert "replayed 20" in lines[1]

    assert main(["dead-letters", "replay", "orders", "--id", "2"]) == 0
    assert "2  already replayed" in capsys.readouterr().out
    assert main(["dead-letters", "replay", "orders", "--id", "5"]) == 1
    assert "route 'orders' has no dead letter with id 5" in capsys.readouterr().err


def test_replay_with_nothing_pending_succeeds_quietly(
    dags: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dead-letters", "replay", "orders", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["replayed"], report["stayed"], report["entries"]) == (0, 0, [])
    assert main(["dead-letters", "replay", "orders"]) == 0
    assert "no pending dead letters of route 'orders'" in capsys.readouterr().err
