"""The destination interface: a destination delivers batches of records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_dataflow.context import RunContext


class DestinationSettings(BaseModel):
    """Base of every destination's settings model (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["__base__"]
    min_records: int = Field(
        default=0, ge=0, description="Deliver only when at least this many records were routed here"
    )
    per: Literal["record", "batch"] = Field(
        default="record",
        description="record: deliver every record; batch: deliver one summary per run, "
        "{count, records: [up to sample_size]}",
    )
    sample_size: int = Field(default=10, ge=0, description="Records kept in a per: batch summary")


@dataclass
class DeliveryResult:
    """What one delivery did: records delivered and where they went."""

    delivered: int = 0
    locations: list[str] = field(default_factory=list)


class Destination:
    """Delivers records. Subclasses set ``settings_model`` and implement ``deliver``.

    ``deliver`` receives the destination's records as an iterable of batches (lists of dicts),
    streamed from staging, and returns a ``DeliveryResult``.
    """

    settings_model: ClassVar[type[DestinationSettings]]

    def __init__(self, name: str, settings: DestinationSettings, context: RunContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    def deliver(self, batches: Iterable[list[dict[str, Any]]]) -> DeliveryResult:
        raise NotImplementedError
