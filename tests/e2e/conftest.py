"""End-to-end fixtures: one Airflow home for all real DAG runs of the session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult, run_cli


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow-home")


@pytest.fixture
def dataflow(airflow_home: Path, tmp_path: Path) -> Callable[..., CliResult]:
    """Runs ``airflow-dataflow`` with a shared AIRFLOW_HOME and this test's connections."""
    connections: dict[str, str] = {}

    def run(*args: str, **env: str) -> CliResult:
        environment = {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            **connections,
            **env,
        }
        return run_cli(*args, env=environment)

    def connect(conn_id: str, uri: str) -> None:
        connections[f"AIRFLOW_CONN_{conn_id.upper()}"] = uri

    run.connect = connect  # type: ignore[attr-defined]
    return run
