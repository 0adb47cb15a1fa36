"""Route files to Airflow DAGs: ``build_dag`` for one route, ``load_routes`` for a folder.

Each route becomes ``[wait_for_*] -> extract -> route -> deliver_<dest>... -> commit`` (``route -> commit`` too,
so the run commits when nothing was routed). Only the DAG is built here: no connection is
opened and no provider SDK imported at parse time.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cache
from typing import Any

from airflow_dataflow.config import LoadedRoute, find_route_files, load_route
from airflow_dataflow.config.loader import route_id_from_file
from airflow_dataflow.errors import ConfigIssue, RouteConfigError

log = logging.getLogger(__name__)

_ROUTE_KEY = re.compile(r"^route:\s*['\"]?([A-Za-z0-9_.-]+)['\"]?\s*(?:#.*)?$", re.MULTILINE)


@dataclass
class LoadResult:
    """Valid DAGs by id, and the issues of every route file that could not be built."""

    dags: dict[str, Any] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    routes: dict[str, LoadedRoute] = field(default_factory=dict)


def build_dag(route: LoadedRoute, *, dags_root: str | None = None, register: bool = True) -> Any:
    """The Airflow DAG of one validated route (``register=False``: a trial build Airflow won't collect)."""
    from airflow.sdk import DAG

    from airflow_dataflow.operators.branch import RouteBranchOperator, deliver_task_id
    from airflow_dataflow.operators.commit import CommitOperator
    from airflow_dataflow.operators.deliver import DeliverOperator
    from airflow_dataflow.operators.extract import ExtractOperator
    from airflow_dataflow.operators.wait import WaitForOperator

    config = route.config
    common = {
        "route_file": route.file,
        "route_id": route.route_id,
        "dags_root": dags_root,
        # Given to each task rather than as DAG default_args: Airflow deep-copies and merges
        # default_args into every operator, a sixth of the build time with many routes.
        "retries": config.retries,
        "retry_delay": config.retry_delay,
    }
    with DAG(
        dag_id=route.route_id,
        description=config.description,
        schedule=_schedule(config.schedule),
        start_date=_start_date(config.start_date),
        catchup=config.catchup,
        tags=sorted({"dataflow", *config.tags}),
        params=_params(config.params),
        doc_md=_doc_md(route),
        max_active_runs=1,
        auto_register=register,
        **_config_defaults(),
    ) as dag:
        extract = ExtractOperator(task_id="extract", **common)
        branch = RouteBranchOperator(task_id="route", **common)
        commit = CommitOperator(
            task_id="commit",
            trigger_rule="none_failed",
            outlets=[destination_asset(route.route_id, name) for name in config.destinations],
            **common,
        )
        deliveries = [
            DeliverOperator(task_id=deliver_task_id(name), destination=name, **common)
            for name in config.destinations
        ]
        waits = [
            WaitForOperator(
                task_id=f"wait_for_{index}_{wait.type}",
                index=index,
                timeout=wait.timeout.total_seconds(),
                poke_interval=wait.poke_interval.total_seconds(),
                **common,
            )
            for index, wait in enumerate(config.wait_for)
        ]
        waits >> extract
        extract >> branch
        branch >> deliveries
        deliveries >> commit
        branch >> commit
    return dag


def load_routes(
    folder: str | os.PathLike[str],
    *,
    only_dag_id: str | None = None,
    build: bool = True,
    register: bool = True,
) -> LoadResult:
    """Build every valid route under ``folder``; collect the issues of the others.

    With ``only_dag_id`` (a worker running one DAG) only the file defining that route is
    loaded: the file named after it, else the file whose ``route:`` key names it. With
    ``build=False`` routes are validated but no DAG is built; with ``register=False`` DAGs are
    built (so Airflow's refusals are found) but not registered with the module being parsed.
    """
    root = os.path.abspath(folder)
    result = LoadResult()
    files = find_route_files(root)
    with _collector_paused():
        if only_dag_id is None:
            _load_files(files, root, result, build=build, register=register)
            return result
        by_name = [file for file in files if route_id_from_file(file) == only_dag_id]
        _load_files(by_name, root, result, build=build, register=register, only_dag_id=only_dag_id)
        if only_dag_id not in result.routes:
            others = _files_declaring(only_dag_id, (file for file in files if file not in by_name))
            _load_files(
                others, root, result, build=build, register=register, only_dag_id=only_dag_id
            )
    return result


def _load_files(
    files: Iterable[str],
    root: str,
    result: LoadResult,
    *,
    build: bool,
    register: bool = True,
    only_dag_id: str | None = None,
) -> None:
    for file in files:
        try:
            route = load_route(file, root=root)
        except RouteConfigError as exc:
            result.issues.extend(exc.issues)
            continue
        if only_dag_id is not None and route.route_id != only_dag_id:
            continue
        existing = result.routes.get(route.route_id)
        if existing is not None:
            if not _named_after_its_id(route) or _named_after_its_id(existing):
                result.issues.append(_duplicate(route, existing))
                continue
            # The file named after the id wins (as on a worker, which looks for it by name).
            result.issues.append(_duplicate(existing, route))
        result.routes[route.route_id] = route
        result.dags.pop(route.route_id, None)
        if build:
            try:
                result.dags[route.route_id] = build_dag(route, dags_root=root, register=register)
            except Exception as exc:  # a DAG Airflow refuses must not hide the others
                result.issues.append(ConfigIssue(route.file, 1, 1, f"cannot build the DAG: {exc}"))


def _named_after_its_id(route: LoadedRoute) -> bool:
    return route_id_from_file(route.file) == route.route_id


def _duplicate(loser: LoadedRoute, winner: LoadedRoute) -> ConfigIssue:
    message = (
        f"route id {loser.route_id!r} is already defined by {winner.file}; this file is not loaded"
    )
    return ConfigIssue(loser.file, 1, 1, message)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many DAGs are built.

    Building a DAG allocates thousands of long-lived objects; the collector would scan them
    over and over (a fifth of the parse time with a thousand routes). Reference counting
    still frees everything as usual; the collector runs again afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@cache
def _config_defaults() -> dict[str, Any]:
    """DAG settings Airflow reads from its config for every DAG: read once per process.

    Same values as Airflow's own defaults, without three config look-ups per route
    (a third of the build time with a thousand routes).
    """
    from airflow.configuration import conf

    return {
        "max_active_tasks": conf.getint("core", "max_active_tasks_per_dag"),
        "max_consecutive_failed_dag_runs": conf.getint(
            "core", "max_consecutive_failed_dag_runs_per_dag"
        ),
        "disable_bundle_versioning": conf.getboolean("dag_processor", "disable_bundle_versioning"),
    }


def _files_declaring(dag_id: str, files: Iterable[str]) -> list[str]:
    """The files whose ``route:`` key names ``dag_id`` (a cheap text scan, no YAML parsing)."""
    found = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            continue
        match = _ROUTE_KEY.search(text)
        if match and match.group(1) == dag_id:
            found.append(file)
    return found


def _schedule(schedule: Any) -> Any:
    """The route's ``schedule`` as Airflow takes it: cron or preset strings as they are, an
    interval as a ``timedelta``, Assets (all or any of them), the webhook's Asset."""
    from airflow.sdk import Asset, AssetAll, AssetAny

    from airflow_dataflow.config.models import ScheduleAsset, schedule_interval

    if isinstance(schedule, ScheduleAsset):
        names = schedule.asset if isinstance(schedule.asset, list) else [schedule.asset]
        assets = [Asset(name=name, uri=asset_uri(name)) for name in names]
        if len(assets) == 1:
            return assets
        return AssetAny(*assets) if schedule.match == "any" else AssetAll(*assets)
    if isinstance(schedule, dict) and "webhook" in schedule:
        from airflow_dataflow.webhooks.names import webhook_asset_name, webhook_asset_uri

        name = schedule["webhook"]
        return [Asset(name=webhook_asset_name(name), uri=webhook_asset_uri(name))]
    if isinstance(schedule, str):
        return schedule_interval(schedule) or schedule
    return schedule


def asset_uri(name: str) -> str:
    """The URI of the Asset a route names: a URI as written, else ``dataflow://assets/NAME``."""
    return name if "://" in name else f"dataflow://assets/{name}"


def destination_asset(route_id: str, destination: str) -> Any:
    """The Asset a route's destination updates: ``dataflow://<route>/<destination>`` (its name
    is the URI too, so another route's ``schedule: {asset: dataflow://...}`` is the same)."""
    from airflow.sdk import Asset

    uri = f"dataflow://{route_id}/{destination}"
    return Asset(name=uri, uri=uri)


def _start_date(value: date | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk import Param

    from airflow_dataflow.config.models import ParamSpec

    built: dict[str, Any] = {}
    for name, spec in params.items():
        if isinstance(spec, ParamSpec):
            schema = spec.model_dump(exclude_none=True, exclude={"default"})
            built[name] = Param(spec.default, **schema)
        else:
            built[name] = Param(spec)
    return built


def _doc_md(route: LoadedRoute) -> str:
    description = route.config.description or ""
    fence = "````" if "```" in route.text else "```"
    return f"{description}\n\nRoute file `{route.file}`:\n\n{fence}yaml\n{route.text.rstrip()}\n{fence}\n"
