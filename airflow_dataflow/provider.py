"""Airflow provider metadata, read through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_dataflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-dataflow",
        "name": "Dataflow",
        "description": "Declarative data routing: route files become DAGs that move records "
        "from sources to destinations.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "Dataflow",
                "python-modules": [
                    "airflow_dataflow.operators.extract",
                    "airflow_dataflow.operators.branch",
                    "airflow_dataflow.operators.deliver",
                    "airflow_dataflow.operators.commit",
                ],
            }
        ],
        "integrations": [
            {
                "integration-name": "Dataflow",
                "external-doc-url": "https://pypi.org/project/airflow-dataflow/",
                "tags": ["software"],
            }
        ],
    }
