"""Run one route in-process as a real Airflow DAG run (``airflow-dataflow run``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.errors import DataflowError

log = logging.getLogger(__name__)


def ensure_metadata_db() -> None:
    """Create or upgrade Airflow's metadata database when it is the embedded SQLite one.

    With nothing configured that is a SQLite file under ``$AIRFLOW_HOME`` (``~/airflow`` by
    default), so ``run`` works on a fresh machine. A configured server database (PostgreSQL,
    MySQL) is never migrated from here: that is its operators' decision.
    """
    from airflow.configuration import conf
    from airflow.utils import db

    try:
        with db._configured_alembic_environment() as env:
            source_heads = set(env.script.get_heads())
            db_heads = set(env.get_context().get_current_heads())
    except Exception:  # unknown layout of a future Airflow: let initdb decide
        source_heads, db_heads = {"?"}, set()
    if db_heads == source_heads:
        return
    if not conf.get("database", "sql_alchemy_conn").startswith("sqlite"):
        raise DataflowError(
            "the configured Airflow metadata database is not at this Airflow's revision; "
            "run `airflow db migrate` first (airflow-dataflow only sets up the embedded SQLite one)"
        )
    if not db_heads:
        log.warning("initialising the Airflow metadata database (first run)")
        db.initdb()
    else:
        log.warning("upgrading the Airflow metadata database")
        db.upgradedb()


_LOADER = """\
# Written by `airflow-dataflow run`: builds the one route this run needs.
from airflow_dataflow.loader import dag_for_route_file

globals().update(dag_for_route_file({file!r}, root={root!r}))
"""


def run_dags_folder(route: LoadedRoute, dags_root: str | None) -> str:
    """A dags folder holding a loader for just this route (``dag.test`` syncs it to the DB)."""
    from airflow_dataflow.staging import safe_segment

    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    folder = os.path.join(home, "dataflow", "cli_dags", safe_segment(route.route_id))
    os.makedirs(folder, exist_ok=True)
    loader = _LOADER.format(file=os.path.abspath(route.file), root=dags_root)
    path = os.path.join(folder, "dataflow_route.py")
    current = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else None
    if current != loader:
        Path(path).write_text(loader, encoding="utf-8")
    return folder


def use_dags_folder(folder: str) -> None:
    """Point Airflow at ``folder``, also when ``airflow.settings`` was imported before (a plugin
    or hook imported while the route was validated): ``dag.test`` syncs the DAG from there."""
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = folder
    settings = sys.modules.get("airflow.settings")
    if settings is not None:
        settings.DAGS_FOLDER = folder


def run_route(
    route: LoadedRoute, *, conf: dict[str, Any] | None = None, dags_root: str | None = None
) -> dict[str, Any]:
    """Run ``route`` once with ``conf`` as params; returns state, summary counts and warnings."""
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    use_dags_folder(run_dags_folder(route, dags_root))
    ensure_metadata_db()
    from airflow_dataflow.dag_factory import build_dag

    dag = build_dag(route, dags_root=dags_root)
    dag_run = dag.test(run_conf=conf or {})
    return _outcome(route, dag_run)


def _outcome(route: LoadedRoute, dag_run: Any) -> dict[str, Any]:
    """State, summary and delivery locations of a finished run, read from the metadata DB.

    When ``commit`` did not run (a delivery failed), the counts come from what the ``route``
    task routed and what each ``deliver_*`` task delivered, so a failed run still reports.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_dataflow.operators.base import ERROR_KEY
    from airflow_dataflow.operators.branch import ROUTING_KEY
    from airflow_dataflow.operators.commit import SUMMARY_KEY
    from airflow_dataflow.pipeline.summary import summarize

    state = str(getattr(dag_run.state, "value", dag_run.state))
    with create_session() as session:
        xcoms = {
            (row.task_id, row.key): _xcom_value(row)
            for row in session.scalars(
                XComModel.get_many(run_id=dag_run.run_id, dag_ids=route.route_id)
            )
        }
        failed = session.scalars(
            select(TaskInstance.task_id).where(
                TaskInstance.dag_id == route.route_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.state == "failed",
            )
        ).all()
    deliveries = {
        task_id.removeprefix("deliver_"): value
        for (task_id, key), value in xcoms.items()
        if task_id.startswith("deliver_") and key == "return_value" and value
    }
    summary = xcoms.get(("commit", SUMMARY_KEY))
    routing = xcoms.get(("route", ROUTING_KEY))
    if summary is None and routing is not None:
        summary = summarize(route, dag_run.run_id, routing, deliveries)
    return {
        "dag_id": route.route_id,
        "run_id": dag_run.run_id,
        "state": state,
        "counts": summary["counts"] if summary else _no_counts(route),
        "warnings": summary.get("warnings", []) if summary else [],
        "dead_letters": summary.get("dead_letters") if summary else None,
        "locations": {name: result.get("locations", []) for name, result in deliveries.items()},
        "failed_tasks": sorted(failed),
        "errors": {
            task_id: value for (task_id, key), value in sorted(xcoms.items()) if key == ERROR_KEY
        },
    }


def _no_counts(route: LoadedRoute) -> dict[str, Any]:
    """The counts of a run that failed before routing: nothing read, nothing delivered."""
    return {
        "read": 0,
        "matched": 0,
        "unmatched": 0,
        "dead_lettered": 0,
        "rules": {rule.name: 0 for rule in route.config.rules},
        "destinations": dict.fromkeys(route.config.destinations, 0),
        "routed": dict.fromkeys(route.config.destinations, 0),
        "held_back": {},
    }


def _xcom_value(row: Any) -> Any:
    from airflow.models.xcom import XComModel

    return XComModel.deserialize_value(row)
