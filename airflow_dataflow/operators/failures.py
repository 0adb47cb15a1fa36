"""The summary of a failed run: what was done before the task that failed it, and its error.

Written by the failing task itself on its last attempt (a retry may still succeed, so earlier
attempts write nothing). The counts are what the finished tasks reported: a run that failed
at delivery still shows how many records were read and routed, and what reached each
destination before the failure.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def is_last_attempt(context: Any, retries: int, exc: BaseException) -> bool:
    """Whether Airflow will not run this task again after ``exc``."""
    from airflow_dataflow.errors import FatalError, RouteConfigError

    if isinstance(exc, RouteConfigError | FatalError):
        return True  # these fail without retries
    return int(getattr(context["ti"], "try_number", 1) or 1) > int(retries or 0)


def partial_counts(ti: Any, destinations: list[str]) -> dict[str, Any]:
    """The run's counts so far, from the XComs of the tasks that finished."""
    from airflow_dataflow.operators.branch import ROUTING_KEY, deliver_task_id

    counts: dict[str, Any] = {
        "read": 0,
        "matched": 0,
        "unmatched": 0,
        "dead_lettered": 0,
        "rules": {},
        "destinations": {},
    }
    extracted = ti.xcom_pull(task_ids="extract") or {}
    counts["read"] = extracted.get("read", 0)
    routing = ti.xcom_pull(task_ids="route", key=ROUTING_KEY) or {}
    for name, value in (routing.get("counts") or {}).items():
        if name in counts or name == "routed":
            counts[name] = value
    for name in destinations:
        delivered = ti.xcom_pull(task_ids=deliver_task_id(name)) or {}
        counts["destinations"][name] = delivered.get("delivered", 0)
    return counts


def record_failed_run(
    *, route_id: str, destinations: list[str], context: Any, exc: BaseException
) -> None:
    """Save the failed run's summary; never raises (the task's own error is what matters)."""
    try:
        from airflow_dataflow.state.store import StateStore

        ti = context["ti"]
        dag_run = context.get("dag_run")
        StateStore.open().save_run_summary(
            route=route_id,
            run_id=context["run_id"],
            state="failed",
            counts=partial_counts(ti, destinations),
            warnings=[],
            started_at=getattr(dag_run, "start_date", None),
            failed_task=ti.task_id,
            error=f"{type(exc).__name__}: {exc}",
        )
    except Exception:  # a summary must never hide the failure itself
        log.warning("could not record the failed run's summary", exc_info=True)
    from airflow_dataflow.operators.metrics import push_failed_run_metrics

    push_failed_run_metrics(route_id, context)  # never raises
