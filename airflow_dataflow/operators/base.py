"""What every dataflow operator shares: the route file it serves and the run context."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_dataflow.config import LoadedRoute, load_route
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import DataflowError, FatalError, RouteConfigError
from airflow_dataflow.staging import StagingArea, default_staging_url

ERROR_KEY = "error"


class RouteTaskMixin:
    """Loads the route at execute time (never at parse time) and builds its run context."""

    route_file: str
    route_id: str
    dags_root: str | None

    def serve_route(self, route_file: str, route_id: str, dags_root: str | None) -> None:
        """Remember which route file this task runs (only names: no loading at parse time)."""
        self.route_file = route_file
        self.route_id = route_id
        self.dags_root = dags_root

    @cached_property
    def route(self) -> LoadedRoute:
        loaded = load_route(self.route_file, root=self.dags_root)
        if loaded.route_id != self.route_id:
            raise DataflowError(
                f"route file {self.route_file} now defines route {loaded.route_id!r}, "
                f"not {self.route_id!r}; wait for the DAG to be re-parsed"
            )
        return loaded

    @contextmanager
    def reporting_errors(self, context: Any) -> Iterator[None]:
        """Keep a failure's message as the task's ``error`` XCom; never retry a broken route file.

        The message (route, setting, remedy) is what ``airflow-dataflow run`` and the run
        summary show; retrying cannot fix a route file (or a ``FatalError``, such as a corrupted
        cursor), so those fail without retries.
        """
        try:
            yield
        except Exception as exc:
            context["ti"].xcom_push(key=ERROR_KEY, value=f"{type(exc).__name__}: {exc}")
            self.record_if_last_attempt(context, exc)
            if isinstance(exc, RouteConfigError | FatalError):
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(str(exc)) from exc
            raise

    def record_if_last_attempt(self, context: Any, exc: BaseException) -> None:
        """On the last attempt, the failed run's summary goes to the state store."""
        from airflow_dataflow.operators.failures import is_last_attempt, record_failed_run

        if not is_last_attempt(context, getattr(self, "retries", 0), exc):
            return
        try:
            destinations = list(self.route.config.destinations)
        except DataflowError:  # the route file itself is broken
            destinations = []
        record_failed_run(
            route_id=self.route_id, destinations=destinations, context=context, exc=exc
        )

    def run_context(self, context: Any) -> RunContext:
        return RunContext(
            route=self.route_id,
            run_id=context["run_id"],
            ds=run_date(context),
            params=dict(context.get("params") or {}),
            route_file=self.route_file,
            run_started=getattr(context.get("dag_run"), "start_date", None),
            asset_events=triggering_asset_events(context),
        )

    def staging(self, context: Any) -> StagingArea:
        return StagingArea(default_staging_url(), self.route_id, context["run_id"])


def triggering_asset_events(context: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    """``(asset URI, extra)`` of each Asset event that triggered the run, oldest first."""
    triggering = context.get("triggering_asset_events") or {}
    found = []
    for events in triggering.values():
        for event in events:
            asset = getattr(event, "asset", None)
            uri = getattr(asset, "uri", None)
            extra = getattr(event, "extra", None)
            if uri:
                found.append((getattr(event, "timestamp", None), str(uri), dict(extra or {})))
    found.sort(key=lambda item: (item[0] is None, item[0] or 0))
    return tuple((uri, extra) for _, uri, extra in found)


def run_date(context: Any) -> str:
    """The run's ``ds`` (``YYYY-MM-DD``). Runs triggered without a logical date (the REST API's
    default in Airflow 3, and asset-triggered runs) have no ``ds``: their ``run_after`` day."""
    ds = context.get("ds")
    if ds:
        return str(ds)
    dag_run = context.get("dag_run")
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
    if when is None:
        raise DataflowError("the task context has neither ds nor the DAG run's run_after")
    return str(when.date().isoformat())


class RouteOperator(RouteTaskMixin, BaseOperator):
    """Base of the extract, deliver and commit operators."""

    def __init__(
        self, *, route_file: str, route_id: str, dags_root: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.serve_route(route_file, route_id, dags_root)
