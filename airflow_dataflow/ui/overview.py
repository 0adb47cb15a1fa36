"""What the Dataflow view shows, as plain data: routes, their last runs, dead letters and the
route files that do not load (no Airflow needed: it reads the dags folder and the state store)."""

from __future__ import annotations

import os
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.state.store import StateStore

LAST_RUNS = 5


def dags_folder() -> str:
    from airflow.configuration import conf

    return os.path.expanduser(conf.get("core", "dags_folder"))


def describe_schedule(schedule: Any) -> str | None:
    if schedule is None or isinstance(schedule, str):
        return schedule
    if isinstance(schedule, dict):
        return ", ".join(f"{key}: {value}" for key, value in schedule.items())
    names = schedule.asset if isinstance(schedule.asset, list) else [schedule.asset]
    return f"asset ({schedule.match}): {', '.join(names)}"


def describe_route(route: LoadedRoute, store: StateStore) -> dict[str, Any]:
    config = route.config
    return {
        "id": route.route_id,
        "file": route.file,
        "description": config.description,
        "schedule": describe_schedule(config.schedule),
        "source": config.source.type,
        "rules": [rule.name for rule in config.rules],
        "destinations": {name: dest.type for name, dest in config.destinations.items()},
        "last_runs": store.recent_runs(route.route_id, limit=LAST_RUNS),
        "pending_dead_letters": len(store.list_dead_letters(route.route_id)),
    }


def routes_overview(folder: str, store: StateStore) -> dict[str, Any]:
    """Every valid route with its last runs, and every invalid route file with its errors."""
    from airflow_dataflow.dag_factory import load_routes

    loaded = load_routes(folder, build=False)
    return {
        "routes": [describe_route(route, store) for _, route in sorted(loaded.routes.items())],
        "invalid": [issue.to_dict() for issue in loaded.issues],
    }


def dead_letters(folder: str, store: StateStore) -> list[dict[str, Any]]:
    """The pending dead letters of every route, oldest first per route."""
    from airflow_dataflow.dag_factory import load_routes

    letters: list[dict[str, Any]] = []
    for route_id in sorted(load_routes(folder, build=False).routes):
        letters.extend(store.list_dead_letters(route_id))
    return letters
