"""Airflow settings the command line needs, read without importing Airflow (which takes ~1 s)."""

from __future__ import annotations

import configparser
import os


def airflow_home() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow"))


def configured_dags_folder() -> str:
    """``[core] dags_folder`` as Airflow resolves it: environment, then airflow.cfg, then default."""
    home = airflow_home()
    value = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if not value:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(os.environ.get("AIRFLOW_CONFIG") or os.path.join(home, "airflow.cfg"))
        value = parser.get("core", "dags_folder", fallback=None) or os.path.join(home, "dags")
    value = value.replace("{AIRFLOW_HOME}", home)
    return os.path.abspath(os.path.expanduser(value))
