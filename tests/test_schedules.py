"""A route's ``schedule`` as Airflow timetables and Assets; each destination is an Asset."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from airflow_dataflow.config import load_route
from airflow_dataflow.dag_factory import build_dag, destination_asset
from airflow_dataflow.errors import RouteConfigError
from tests.support.routes import write_route

ROUTE = """
    schedule: {schedule}
    source: {{type: file, path: in.jsonl}}
    rules:
      - {{name: all, to: [warehouse, archive]}}
    destinations:
      warehouse: {{type: file, path: out/w.jsonl}}
      archive: {{type: file, path: out/a.jsonl}}
"""


def dag_for(tmp_path: Path, schedule: str, name: str = "orders"):  # type: ignore[no-untyped-def]
    route = load_route(write_route(tmp_path, name, ROUTE.format(schedule=schedule)))
    return build_dag(route, register=False)


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("30m", timedelta(minutes=30)), ("6h", timedelta(hours=6)), ("1d", timedelta(days=1))],
)
def test_an_interval_runs_the_route_every_interval(
    tmp_path: Path, schedule: str, interval: timedelta
) -> None:
    timetable = dag_for(tmp_path, f'"{schedule}"').timetable
    # DeltaTriggerTimetable, or DeltaDataIntervalTimetable when Airflow's
    # [scheduler] create_delta_data_intervals says so
    assert type(timetable).__name__.startswith("Delta")
    assert timetable.delta == interval


@pytest.mark.parametrize(
    ("schedule", "timetable"),
    [
        ('"0 6 * * 1-5"', "Cron"),
        ('"@daily"', "Cron"),
        ("null", "NullTimetable"),
    ],
)
def test_cron_presets_and_null(tmp_path: Path, schedule: str, timetable: str) -> None:
    assert type(dag_for(tmp_path, schedule).timetable).__name__.startswith(timetable)


def test_one_asset_or_all_of_several(tmp_path: Path) -> None:
    one = dag_for(tmp_path, "{asset: sales}", "one").timetable
    assert [a.uri for a in one.asset_condition.objects] == ["dataflow://assets/sales"]
    every = dag_for(tmp_path, "{asset: [sales, stock]}", "every").timetable
    assert type(every.asset_condition).__name__ == "AssetAll"
    assert [a.name for a in every.asset_condition.objects] == ["sales", "stock"]


def test_any_of_several_assets(tmp_path: Path) -> None:
    timetable = dag_for(tmp_path, "{asset: [sales, stock], match: any}").timetable
    assert type(timetable.asset_condition).__name__ == "AssetAny"


def test_each_destination_is_an_asset_the_commit_task_updates(tmp_path: Path) -> None:
    dag = dag_for(tmp_path, "null")
    assert dag.get_task("commit").outlets == [
        destination_asset("orders", "warehouse"),
        destination_asset("orders", "archive"),
    ]
    assert destination_asset("orders", "warehouse").uri == "dataflow://orders/warehouse"


def test_a_route_can_run_on_another_routes_output(tmp_path: Path) -> None:
    producer = dag_for(tmp_path, "null", "orders")
    consumer = dag_for(tmp_path, "{asset: dataflow://orders/warehouse}", "report")
    [wanted] = consumer.timetable.asset_condition.objects
    assert wanted in producer.get_task("commit").outlets


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('"0m"', "must be longer than zero"),
        ('"5 minutes"', "or an interval like 30m, 6h, 1d"),
        ("{asset: [sales], match: sometimes}", "schedule.match"),
        ("{asset: []}", "give at least one asset"),
        ("{asset: sales, when: any}", "when"),
    ],
)
def test_bad_schedules_are_errors_naming_the_problem(
    tmp_path: Path, schedule: str, message: str
) -> None:
    with pytest.raises(RouteConfigError) as caught:
        load_route(write_route(tmp_path, "bad", ROUTE.format(schedule=schedule)))
    assert message in str(caught.value)
    assert "bad.route.yaml:1:" in str(caught.value)
