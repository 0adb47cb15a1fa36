"""The Airflow plugin of airflow-dataflow (entry point ``airflow.plugins``): it mounts the
webhook receiver in the Airflow API server at ``/dataflow``."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_dataflow.webhooks.receiver import create_app


class DataflowPlugin(AirflowPlugin):
    name = "airflow_dataflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/dataflow", "name": "Dataflow"}]
