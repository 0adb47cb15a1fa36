"""DeliverOperator: one destination's partition, delivered."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.operators.base import RouteOperator
from airflow_dataflow.operators.branch import ROUTING_KEY
from airflow_dataflow.pipeline.deliver import deliver


class DeliverOperator(RouteOperator):
    """Delivers what the route task staged for ``destination``."""

    ui_color = "#d5f5e3"

    def __init__(self, *, destination: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination

    def execute(self, context: Any) -> dict[str, Any]:
        routing = context["ti"].xcom_pull(task_ids="route", key=ROUTING_KEY)
        partition = routing["partitions"][self.destination]
        return deliver(self.route, self.destination, self.run_context(context), partition)
