"""CommitOperator: the run summary, once every delivery succeeded."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.operators.base import RouteOperator
from airflow_dataflow.operators.branch import ROUTING_KEY, deliver_task_id
from airflow_dataflow.operators.metrics import push_run_metrics
from airflow_dataflow.pipeline.summary import check_conservation, check_dead_letters, summarize

SUMMARY_KEY = "summary"


class CommitOperator(RouteOperator):
    """Summarises the run, checks every record is accounted for, cleans staging."""

    ui_color = "#e8daef"

    def execute(self, context: Any) -> dict[str, Any]:
        with self.reporting_errors(context):
            ti = context["ti"]
            routing = ti.xcom_pull(task_ids="route", key=ROUTING_KEY)
            deliveries = {
                name: ti.xcom_pull(task_ids=deliver_task_id(name))
                for name in self.route.config.destinations
            }
            summary = summarize(self.route, context["run_id"], routing, deliveries)
            ti.xcom_push(key=SUMMARY_KEY, value=summary)
            check_conservation(summary, self.route)
            self.commit_cursor(context)
            self.staging(context).clean()
            self.record(context, summary)
            self.summary_recorded = True
            self.describe_outputs(context, summary)
            push_run_metrics(self.route, context, summary)  # never raises
            self.settle_deliveries(context)
            check_dead_letters(summary, self.route)
        self.log.info("run summary: %s", summary["counts"])
        return summary

    def describe_outputs(self, context: Any, summary: dict[str, Any]) -> None:
        """The extra of each destination's Asset event: what this run delivered there."""
        from airflow_dataflow.dag_factory import destination_asset

        events = context.get("outlet_events")
        if events is None:  # a context built by hand (tests): no Asset events to describe
            return
        counts = summary["counts"]
        for name in self.route.config.destinations:
            events[destination_asset(self.route_id, name)].extra = {
                "route": self.route_id,
                "destination": name,
                "run_id": context["run_id"],
                "delivered": counts["destinations"].get(name, 0),
                "read": counts["read"],
            }

    def commit_cursor(self, context: Any) -> None:
        """Save the source's new cursor: every delivery succeeded or was durably dead-lettered."""
        from airflow_dataflow.pipeline.cursor import commit_cursor

        extracted = context["ti"].xcom_pull(task_ids="extract")
        commit_cursor(self.route_id, extracted, context["run_id"])

    summary_recorded = False

    def record_if_last_attempt(self, context: Any, exc: BaseException) -> None:
        """A failure after the summary was recorded (dead letters with ``fail``) keeps it."""
        if not self.summary_recorded:
            super().record_if_last_attempt(context, exc)

    def record(self, context: Any, summary: dict[str, Any]) -> None:
        """Keep the summary in the state store (``airflow-dataflow runs`` reads it)."""
        from airflow_dataflow.state.store import StateStore

        dead_letters_fail = (
            summary["counts"]["dead_lettered"] or any(summary["counts"]["rejected"].values())
        ) and self.route.config.on_dead_letter == "fail"
        dag_run = context.get("dag_run")
        StateStore.open().save_run_summary(
            route=self.route_id,
            run_id=context["run_id"],
            state="failed" if dead_letters_fail else "success",
            counts=summary["counts"],
            warnings=summary["warnings"],
            started_at=getattr(dag_run, "start_date", None),
        )

    def settle_deliveries(self, context: Any) -> None:
        """This run's delivered batches are final: a later run with the same content sends again."""
        from airflow_dataflow.state.ledger import settle_run
        from airflow_dataflow.state.store import StateStore

        settle_run(StateStore.open().engine, self.route_id, context["run_id"])
