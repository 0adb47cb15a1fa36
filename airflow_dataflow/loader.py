"""What the two loader files in the dags folder call.

``dags/dataflow_routes.py`` builds every valid route; ``dags/dataflow_route_errors.py`` raises
one import error listing every broken route (file, line, column, message). Two modules,
because a module that raises loses all its DAGs: the valid routes must come from a module
that does not raise.
"""

from __future__ import annotations

import os
from typing import Any

from airflow_dataflow.dag_factory import load_routes
from airflow_dataflow.errors import RouteConfigError


class BrokenRoutesError(RouteConfigError):
    """Raised by the errors loader so Airflow shows every broken route as an import error."""

    def __str__(self) -> str:
        files = sorted({issue.file for issue in self.issues})
        header = f"{len(files)} route file(s) could not be loaded:"
        return "\n".join([header, *(str(issue) for issue in self.issues)])


def dags_root(loader_file: str) -> str:
    """The dags folder: Airflow's ``[core] dags_folder`` when the loader is inside it."""
    here = os.path.dirname(os.path.abspath(loader_file))
    try:
        from airflow.configuration import conf

        configured = os.path.abspath(os.path.expanduser(conf.get("core", "dags_folder")))
    except Exception:
        return here
    if here == configured or here.startswith(configured + os.sep):
        return configured
    return here


def requested_dag_id() -> str | None:
    """The DAG a worker is parsing for, when it is parsing for one."""
    from airflow.sdk import get_parsing_context

    return get_parsing_context().dag_id


def dags_for(loader_file: str) -> dict[str, Any]:
    """Every valid route's DAG under the dags folder, by DAG id (only one on a worker)."""
    return load_routes(dags_root(loader_file), only_dag_id=requested_dag_id()).dags


def dag_for_route_file(file: str, *, root: str | None = None) -> dict[str, Any]:
    """The DAG of one route file, by DAG id (used by ``airflow-dataflow run``)."""
    from airflow_dataflow.config import load_route
    from airflow_dataflow.dag_factory import build_dag

    route = load_route(file, root=root)
    return {route.route_id: build_dag(route, dags_root=root)}


def raise_route_errors(loader_file: str) -> None:
    """Raise one error listing every broken route; nothing on a worker running one DAG."""
    if requested_dag_id() is not None:
        return
    # Building too: a route can be valid yet refused by Airflow (say, a scheduled DAG whose
    # param has no default); that must show here, not vanish.
    result = load_routes(dags_root(loader_file), build=True, register=False)
    if result.issues:
        raise BrokenRoutesError(result.issues)
