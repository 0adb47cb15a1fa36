"""Test-wide setup: an isolated AIRFLOW_HOME (set before anything imports Airflow)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import fsspec
import pytest

_HOME = tempfile.mkdtemp(prefix="dataflow-tests-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(_HOME, "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

pytest_plugins = ["tests.support.databases", "tests.support.faults"]


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh bucket on fsspec's ``memory://`` filesystem (object storage in tests)."""
    fs = fsspec.filesystem("memory")
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    yield bucket
    if fs.exists(f"/{bucket}"):
        fs.rm(f"/{bucket}", recursive=True)
