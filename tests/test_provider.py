"""The package is an Airflow provider: `airflow providers list` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow_dataflow import __version__
from airflow_dataflow.provider import get_provider_info


def test_provider_info_names_the_package_and_its_operators() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-dataflow"
    assert info["versions"] == [__version__]
    modules = info["operators"][0]["python-modules"]
    for module in modules:
        __import__(module)


def airflow_command(tmp_path: Path, *args: str) -> str:
    """``airflow ARGS`` as a user runs it (a fresh home, no unit-test mode); its stdout."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    completed = subprocess.run(
        [airflow, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_airflow_providers_list_shows_it(tmp_path: Path) -> None:
    assert "airflow-dataflow" in airflow_command(tmp_path, "providers", "list", "--output", "plain")


def test_the_hubspot_connection_type_is_registered(tmp_path: Path) -> None:
    listed = json.loads(airflow_command(tmp_path, "providers", "hooks", "--output", "json"))
    hooks = {row["connection_type"]: row for row in listed}
    assert hooks["hubspot"]["class"] == "airflow_dataflow.hooks.hubspot.HubSpotHook"
    assert hooks["hubspot"]["package_name"] == "airflow-dataflow"
