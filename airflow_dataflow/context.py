"""The run context every connector, destination and template sees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """What is known about the current route run: ids, dates and params.

    Plain data so connectors and destinations can be tested without Airflow.
    """

    route: str
    run_id: str = "manual"
    ds: str = "1970-01-01"
    params: Mapping[str, Any] = field(default_factory=dict)
    route_file: str = ""
    # When the DAG run started (UTC); the same for every task and every retry of the run, so a
    # source can pin what it reads to it (``None`` outside a DAG run: use the current time).
    run_started: datetime | None = None
    # The Asset events that triggered the run: (asset URI, event extra), oldest first.
    asset_events: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def base_dir(self) -> str:
        """The route file's folder: relative paths in the route resolve against it."""
        import os

        return os.path.dirname(os.path.abspath(self.route_file)) if self.route_file else ""

    def template_vars(self, **extra: Any) -> dict[str, Any]:
        """Variables every template sees (DESIGN.md: route, destination, run_id, ds, params;
        also ``ds_nodash``, Airflow's ``YYYYMMDD`` form, common in table names)."""
        values: dict[str, Any] = {
            "route": self.route,
            "run_id": self.run_id,
            "ds": self.ds,
            "ds_nodash": self.ds.replace("-", ""),
            "params": dict(self.params),
        }
        values.update(extra)
        return values
