"""DeliverOperator: one destination's partition, delivered."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_dataflow.operators.base import RouteTaskMixin
from airflow_dataflow.operators.branch import ROUTING_KEY
from airflow_dataflow.pipeline.deliver import deliver


class DeliverOperator(RouteTaskMixin, BaseOperator):
    """Delivers what the route task staged for ``destination``.

    Subclasses ``BaseOperator`` directly (not ``RouteOperator``): each ``__init__`` level
    costs a decorator pass at parse time, and a route has one deliver task per destination.
    """

    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        route_file: str,
        route_id: str,
        destination: str,
        dags_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.serve_route(route_file, route_id, dags_root)
        self.destination = destination

    def execute(self, context: Any) -> dict[str, Any]:
        with self.reporting_errors(context):
            routing = context["ti"].xcom_pull(task_ids="route", key=ROUTING_KEY)
            partition = routing["partitions"][self.destination]
            return deliver(self.route, self.destination, self.run_context(context), partition)
