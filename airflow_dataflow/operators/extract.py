"""ExtractOperator: the connector's records into staging."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.operators.base import RouteOperator
from airflow_dataflow.pipeline.extract import extract


class ExtractOperator(RouteOperator):
    """Streams the route's source into staged chunks; returns the manifest (XCom)."""

    ui_color = "#d6eaf8"

    def execute(self, context: Any) -> dict[str, Any]:
        with self.reporting_errors(context):
            return extract(self.route, self.run_context(context), self.staging(context))
