"""The Airflow plugin of airflow-dataflow (entry point ``airflow.plugins``): it mounts the
webhook receiver and the Dataflow view (its JSON API and page) in the Airflow API server at
``/dataflow``, and links the page from the Airflow UI's navigation."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_dataflow.plugins.app import dataflow_app


class DataflowPlugin(AirflowPlugin):
    name = "airflow_dataflow"
    fastapi_apps = [{"app": dataflow_app(), "url_prefix": "/dataflow", "name": "Dataflow"}]
    external_views = [
        {"name": "Dataflow", "href": "/dataflow/ui", "destination": "nav", "url_route": "dataflow"}
    ]
