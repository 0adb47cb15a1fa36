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
                    "airflow_dataflow.operators.wait",
                    "airflow_dataflow.operators.hubspot_webhooks",
                ],
            },
        ],
        "hooks": [
            {"integration-name": "HubSpot", "python-modules": ["airflow_dataflow.hooks.hubspot"]},
            {
                "integration-name": "Google Analytics 4",
                "python-modules": ["airflow_dataflow.hooks.ga4"],
            },
        ],
        "connection-types": [
            {
                "connection-type": "hubspot",
                "hook-class-name": "airflow_dataflow.hooks.hubspot.HubSpotHook",
            }
        ],
        "integrations": [
            {
                "integration-name": "Dataflow",
                "external-doc-url": "https://pypi.org/project/airflow-dataflow/",
                "tags": ["software"],
            },
            {
                "integration-name": "HubSpot",
                "external-doc-url": "https://developers.hubspot.com/docs/api/overview",
                "tags": ["software"],
            },
            {
                "integration-name": "Google Analytics 4",
                "external-doc-url": "https://developers.google.com/analytics/devguides/reporting/data/v1",
                "tags": ["gcp"],
            },
        ],
    }
