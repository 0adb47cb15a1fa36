"""RouteBranchOperator: the compiled rules, choosing which deliver tasks run."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator

from airflow_dataflow.operators.base import RouteTaskMixin
from airflow_dataflow.pipeline.deliver import wanted_destinations

ROUTING_KEY = "routing"


def deliver_task_id(destination: str) -> str:
    return f"deliver_{destination}"


class RouteBranchOperator(RouteTaskMixin, BaseBranchOperator):
    """Routes staged records into partitions; deliver tasks without records are skipped."""

    ui_color = "#fcf3cf"

    def __init__(
        self, *, route_file: str, route_id: str, dags_root: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.serve_route(route_file, route_id, dags_root)

    def choose_branch(self, context: Any) -> list[str]:
        from airflow_dataflow.pipeline.route import (
            route_records,
        )  # the routing engine: run time only

        with self.reporting_errors(context):
            extracted = context["ti"].xcom_pull(task_ids="extract")
            routing = route_records(
                self.route, self.run_context(context), self.staging(context), extracted
            )
            context["ti"].xcom_push(key=ROUTING_KEY, value=routing)
        wanted = [
            deliver_task_id(name) for name in wanted_destinations(self.route, routing["partitions"])
        ]
        return [*wanted, "commit"]  # commit is downstream too: it runs when nothing was routed
