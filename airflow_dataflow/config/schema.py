"""The JSON Schema (draft 2020-12) of a route file, for editors and outside tools."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.config.models import route_model

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def route_schema() -> dict[str, Any]:
    schema = route_model().model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": DIALECT,
        "$id": "https://airflow-dataflow.dev/schema/route.json",
        "title": "airflow-dataflow route file (*.route.yaml)",
        **schema,
    }
