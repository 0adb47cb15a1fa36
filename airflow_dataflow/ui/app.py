"""Routes of the plugin app behind Airflow's authentication: ``/dataflow/api/...`` and the
page ``/dataflow/ui``. A request needs the same JWT as Airflow's REST API (the
``Authorization: Bearer`` header, or the UI's session cookie); anonymous requests get 401."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse


def current_user() -> Any:
    """Airflow's own dependency resolving the caller from the token (401 without one)."""
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def router() -> APIRouter:
    from airflow_dataflow.state.store import StateStore
    from airflow_dataflow.ui.overview import dags_folder, dead_letters, routes_overview

    api = APIRouter(dependencies=[Depends(current_user())])

    @api.get("/api/routes", summary="Every route, its last runs, and invalid route files")
    def list_routes() -> dict[str, Any]:
        return routes_overview(dags_folder(), StateStore.open())

    @api.get("/api/routes/{route_id}/runs", summary="A route's last runs, newest first")
    def route_runs(route_id: str, limit: int = 20) -> list[dict[str, Any]]:
        overview = routes_overview(dags_folder(), StateStore.open())
        if route_id not in {route["id"] for route in overview["routes"]}:
            raise HTTPException(404, f"no route {route_id!r}")
        return StateStore.open().recent_runs(route_id, limit=limit)

    @api.get("/api/dead-letters", summary="Pending dead letters of every route")
    def list_dead_letters() -> list[dict[str, Any]]:
        return dead_letters(dags_folder(), StateStore.open())

    @api.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return files("airflow_dataflow.ui").joinpath("page.html").read_text(encoding="utf-8")

    return api
