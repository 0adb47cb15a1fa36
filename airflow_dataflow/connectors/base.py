"""The connector interface: a connector streams records from one source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from airflow_dataflow.context import RunContext


class ConnectorSettings(BaseModel):
    """Base of every connector's settings model (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["__base__"]


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Input that could not become a record: kept whole for the dead letters.

    ``position`` names where it was, e.g. ``/data/orders.jsonl:12``.
    """

    position: str
    error: str
    raw: Any


class Connector:
    """Reads records from a source. Subclasses set ``settings_model`` and implement ``read``.

    ``read`` yields each record (any JSON value; the router dead-letters non-objects) or a
    ``BadRecord`` for input that could not be decoded. It must stream: never hold the whole
    source in memory.
    """

    settings_model: ClassVar[type[ConnectorSettings]]

    def __init__(self, settings: ConnectorSettings, context: RunContext) -> None:
        self.settings = settings
        self.context = context

    def read(self) -> Iterator[Any | BadRecord]:
        raise NotImplementedError
