"""Build connector and destination instances for a loaded route."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.connectors.base import Connector, Cursor
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.base import Destination
from airflow_dataflow.registry import connector_class, destination_class

DEAD_LETTER = "dead_letter"


def make_connector(
    route: LoadedRoute, context: RunContext, cursor: Cursor | None = None
) -> Connector:
    """The route's connector; ``cursor`` is the run's cursor of an incremental source."""
    settings = route.config.source
    kind = connector_class(settings.type)
    # Only incremental connectors are handed a cursor: others may keep a two-argument __init__.
    connector: Connector = (
        kind(settings, context) if cursor is None else kind(settings, context, cursor)
    )
    return connector


def make_destination(route: LoadedRoute, name: str, context: RunContext) -> Destination:
    settings: Any = (
        route.config.dead_letter if name == DEAD_LETTER else route.config.destinations[name]
    )
    destination: Destination = destination_class(settings.type)(name, settings, context)
    return destination
