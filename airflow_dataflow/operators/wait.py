"""WaitForOperator: one ``wait_for`` entry of a route, a sensor before ``extract``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator

from airflow_dataflow.config.waits import BigQueryTableWait, FileWait, HttpWait
from airflow_dataflow.operators.base import RouteTaskMixin
from airflow_dataflow.pipeline.waits import (
    bigquery_table_ready,
    file_ready,
    http_ready,
    sql_ready,
)


class WaitForOperator(RouteTaskMixin, BaseSensorOperator):
    """Pokes the route's ``wait_for[index]`` check until it holds or ``timeout`` passes.

    Runs in ``reschedule`` mode, so a waiting route holds no worker slot between pokes.
    """

    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        route_file: str,
        route_id: str,
        index: int,
        dags_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.serve_route(route_file, route_id, dags_root)
        self.index = index

    def poke(self, context: Any) -> bool:
        with self.reporting_errors(context):
            wait = self.route.config.wait_for[self.index]
            run_context = self.run_context(context)
            if isinstance(wait, FileWait):
                return file_ready(wait, run_context)
            if isinstance(wait, BigQueryTableWait):
                setting = f"wait_for[{self.index}]"
                return bigquery_table_ready(wait, run_context, setting=setting)
            if isinstance(wait, HttpWait):
                return http_ready(wait, run_context, setting=f"wait_for[{self.index}]")
            return sql_ready(wait, run_context, setting=f"wait_for[{self.index}].connection")
