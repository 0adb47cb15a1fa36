"""One registry of connector and destination kinds, built-ins and plugins alike.

Kinds are found through the entry-point groups ``airflow_dataflow.connectors`` and
``airflow_dataflow.destinations``. Each entry point names a class with a ``settings_model``
(a pydantic model whose ``type`` field is a ``Literal`` of the kind's name).
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from airflow_dataflow.errors import DataflowError

log = logging.getLogger(__name__)

CONNECTOR_GROUP = "airflow_dataflow.connectors"
DESTINATION_GROUP = "airflow_dataflow.destinations"


class UnknownKindError(DataflowError):
    """A route names a connector or destination type nobody registered."""


@cache
def _all_entry_points() -> Any:
    """Every installed entry point, read once (scanning distributions is the slow part)."""
    return entry_points()


@cache
def _load_group(group: str) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for entry in _all_entry_points().select(group=group):
        try:
            kinds[entry.name] = entry.load()
        except Exception as exc:  # a broken plugin must not hide the others
            log.error("cannot load %s plugin %r (%s): %s", group, entry.name, entry.value, exc)
    return dict(sorted(kinds.items()))


def connector_kinds() -> dict[str, Any]:
    """Every installed connector class by type name."""
    return _load_group(CONNECTOR_GROUP)


def destination_kinds() -> dict[str, Any]:
    """Every installed destination class by type name."""
    return _load_group(DESTINATION_GROUP)


def connector_class(kind: str) -> Any:
    return _lookup(connector_kinds(), kind, "source")


def destination_class(kind: str) -> Any:
    return _lookup(destination_kinds(), kind, "destination")


def _lookup(kinds: dict[str, Any], kind: str, what: str) -> Any:
    try:
        return kinds[kind]
    except KeyError:
        known = ", ".join(kinds) or "none installed"
        raise UnknownKindError(f"unknown {what} type {kind!r}; known: {known}") from None
