"""The loader files in a real Airflow DagBag: valid routes load, broken ones are import errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.routes import write_route

REPO_DAGS = Path(__file__).resolve().parents[1] / "dags"

VALID = """
    {route}description: {name}
    schedule: "{schedule}"
    tags: [team]
    params:
      limit: {{type: integer, default: 5}}
    retries: 3
    wait_for:
      - {{type: file, path: "data/{{{{ ds }}}}/_SUCCESS", timeout: 600, poke_interval: 30}}
    source: {{type: file, path: data/in.jsonl}}
    rules:
      - name: big
        when: {{path: $.amount, gt: 10}}
        to: [big]
      - name: small
        when: {{path: $.amount, lte: 10}}
        to: [small, audit]
    destinations:
      big: {{type: file, path: out/big.jsonl}}
      small: {{type: file, path: out/small.csv}}
      audit: {{type: database, connection: dwh, table: audit}}
"""


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    for loader in ("dataflow_routes.py", "dataflow_route_errors.py"):
        shutil.copy(REPO_DAGS / loader, folder / loader)
    write_route(folder, "alpha", VALID.format(route="", name="alpha", schedule="@hourly"))
    write_route(
        folder / "team",
        "beta",
        VALID.format(route="route: beta_custom\n    ", name="beta", schedule="0 6 * * 1-5"),
    )
    write_route(folder, "broken_yaml", "source: {type: file, path: [oops\n")
    write_route(
        folder,
        "broken_key",
        VALID.format(route="", name="x", schedule="@daily").replace("retries: 3", "retires: 3"),
    )
    (folder / "ignored").mkdir()
    write_route(folder / "ignored", "skipped", "this is: [not valid")
    (folder / ".airflowignore").write_text("ignored/\n")
    return folder


def _dagbag(folder: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


def test_valid_routes_become_dags_with_the_route_shape(dags_folder: Path) -> None:
    bag = _dagbag(dags_folder)
    assert sorted(bag.dag_ids) == ["alpha", "beta_custom"]
    dag = bag.dags["alpha"]
    assert set(dag.task_ids) == {
        "wait_for_0_file",
        "extract",
        "route",
        "deliver_big",
        "deliver_small",
        "deliver_audit",
        "commit",
    }
    sensor = dag.get_task("wait_for_0_file")
    assert sensor.downstream_task_ids == {"extract"}
    assert (sensor.timeout, sensor.poke_interval, sensor.mode) == (600, 30, "reschedule")
    assert dag.get_task("extract").downstream_task_ids == {"route"}
    assert dag.get_task("route").downstream_task_ids == {
        "deliver_big",
        "deliver_small",
        "deliver_audit",
        "commit",
    }
    assert dag.get_task("commit").upstream_task_ids == {
        "route",
        "deliver_big",
        "deliver_small",
        "deliver_audit",
    }
    assert dag.get_task("commit").trigger_rule == "none_failed"
    assert dag.get_task("deliver_big").retries == 3
    assert dag.params["limit"] == 5
    assert set(dag.tags) == {"team", "dataflow"}
    assert "alpha.route.yaml" in dag.doc_md and "```yaml" in dag.doc_md
    assert bag.dags["beta_custom"].schedule == "0 6 * * 1-5"


def test_each_broken_route_is_an_import_error_with_file_and_line(dags_folder: Path) -> None:
    bag = _dagbag(dags_folder)
    assert len(bag.import_errors) == 1
    ((loader, message),) = bag.import_errors.items()
    assert loader.endswith("dataflow_route_errors.py")
    assert f"{dags_folder / 'broken_yaml.route.yaml'}:2:1: YAML syntax error" in message
    assert f"{dags_folder / 'broken_key.route.yaml'}:6:1: unknown key 'retires'" in message
    assert "did you mean 'retries'?" in message
    assert "skipped.route.yaml" not in message  # .airflowignore is honoured


def test_worker_builds_only_the_requested_route(
    dags_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "beta_custom")
    bag = _dagbag(dags_folder)
    assert bag.dag_ids == ["beta_custom"]
    assert not bag.import_errors  # the errors loader stays quiet on workers


def test_repository_example_dags_load_without_errors() -> None:
    bag = _dagbag(REPO_DAGS)
    assert not bag.import_errors
    assert {"orders", "eu_report"} <= set(bag.dag_ids)


def test_a_route_airflow_refuses_is_an_import_error(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    for loader in ("dataflow_routes.py", "dataflow_route_errors.py"):
        shutil.copy(REPO_DAGS / loader, folder / loader)
    # Valid route file, but Airflow refuses a scheduled DAG whose param has no default.
    write_route(
        folder,
        "needs_input",
        """
        schedule: "@daily"
        params:
          day: {type: string}
        source: {type: file, path: in.jsonl}
        destinations:
          out: {type: file, path: out.jsonl}
        """,
    )
    bag = _dagbag(folder)
    assert bag.dag_ids == []
    ((loader, message),) = bag.import_errors.items()
    assert loader.endswith("dataflow_route_errors.py")
    assert f"{folder / 'needs_input.route.yaml'}:1:1: cannot build the DAG" in message


def test_the_file_named_after_a_route_id_wins_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dags"
    for loader in ("dataflow_routes.py", "dataflow_route_errors.py"):
        (folder / "b").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_DAGS / loader, folder / loader)
    write_route(
        folder / "a",
        "x",
        VALID.format(route="route: orders\n    ", name="by key", schedule="@daily"),
    )
    write_route(folder / "b", "orders", VALID.format(route="", name="by name", schedule="@daily"))
    bag = _dagbag(folder)
    assert bag.dags["orders"].description == "by name"
    ((_, message),) = bag.import_errors.items()
    assert (
        f"{folder / 'a' / 'x.route.yaml'}:1:1: route id 'orders' is already defined by" in message
    )
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "orders")
    assert _dagbag(folder).dags["orders"].description == "by name"  # a worker builds the same one
