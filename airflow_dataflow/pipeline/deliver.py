"""Deliver: send one destination's partition in batches."""

from __future__ import annotations

import logging
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.kinds import make_destination
from airflow_dataflow.pipeline.partitions import records_in
from airflow_dataflow.staging import StagedBatches

log = logging.getLogger(__name__)


def wanted_destinations(route: LoadedRoute, partitions: dict[str, Any]) -> list[str]:
    """Destinations whose partition has records (and at least ``min_records`` of them)."""
    wanted = []
    for name, manifest in partitions.items():
        count = records_in(manifest)
        if count and count >= route.config.destinations[name].min_records:
            wanted.append(name)
    return wanted


def deliver(
    route: LoadedRoute, name: str, context: RunContext, partition: dict[str, Any]
) -> dict[str, Any]:
    """Deliver a staged partition; returns ``{"delivered": n, "locations": [...]}``."""
    destination = make_destination(route, name, context)
    batch_size = getattr(destination.settings, "batch_size", None) or 1000
    result = destination.deliver(StagedBatches(partition, batch_size=batch_size))
    delivered = (
        records_in(partition) if "records" in partition and result.delivered else result.delivered
    )
    log.info("delivered %d records to %s (%s)", delivered, name, ", ".join(result.locations))
    return {"delivered": delivered, "locations": result.locations}
