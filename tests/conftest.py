"""Test-wide setup: an isolated AIRFLOW_HOME (set before anything imports Airflow)."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="dataflow-tests-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(_HOME, "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

pytest_plugins = ["tests.support.databases"]
