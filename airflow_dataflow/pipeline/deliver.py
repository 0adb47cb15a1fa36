"""Deliver: send one destination's partition in batches, through the delivery ledger.

A destination that takes batches one at a time (``open_batches``) gets a ledger entry per
batch; one that writes everything at once (a file, a replaced table) gets one entry for the
whole delivery. Either way a batch already delivered by this run (a task retry) or by an
uncommitted earlier run (a partial failure, then a re-read of the same records) is skipped.
See ``state/ledger.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.base import BatchSender, Destination
from airflow_dataflow.pipeline.kinds import make_destination
from airflow_dataflow.pipeline.partitions import records_in
from airflow_dataflow.staging import StagedBatches, staged_batches_with_lines, staged_lines
from airflow_dataflow.state.ledger import DeliveryLedger, batch_key

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


def wanted_destinations(route: LoadedRoute, partitions: dict[str, Any]) -> list[str]:
    """Destinations whose partition has records (and at least ``min_records`` of them)."""
    wanted = []
    for name, manifest in partitions.items():
        count = records_in(manifest)
        if count and count >= route.config.destinations[name].min_records:
            wanted.append(name)
    return wanted


def deliver(
    route: LoadedRoute,
    name: str,
    context: RunContext,
    partition: dict[str, Any],
    *,
    state_engine: sa.Engine | None = None,
) -> dict[str, Any]:
    """Deliver a staged partition; returns ``{"delivered", "locations", "batches", "skipped"}``.

    ``delivered`` counts the records now at the destination from this partition, whether
    sent now or skipped as sent before; ``batches``/``skipped`` count ledger batches.
    """
    destination = make_destination(route, name, context)
    if state_engine is None:
        from airflow_dataflow.state.store import StateStore

        state_engine = StateStore.open().engine
    ledger = DeliveryLedger(state_engine, route.route_id, name, context.run_id)
    batch_size = getattr(destination.settings, "batch_size", None) or DEFAULT_BATCH_SIZE
    batches = StagedBatches(partition, batch_size=batch_size)
    sender = destination.open_batches(batches)
    if sender is None:
        outcome = _deliver_whole(destination, ledger, partition, batches)
    else:
        with sender:
            outcome = _deliver_batches(destination, sender, ledger, partition, batch_size)
    if "records" in partition and outcome["delivered"]:  # a per: batch summary stands for more
        outcome["delivered"] = records_in(partition)
    log.info(
        "delivered %d records to %s in %d batches, %d of them skipped as already delivered (%s)",
        outcome["delivered"],
        name,
        outcome["batches"],
        outcome["skipped"],
        ", ".join(outcome["locations"]),
    )
    return outcome


def _deliver_batches(
    destination: Destination,
    sender: BatchSender,
    ledger: DeliveryLedger,
    partition: dict[str, Any],
    batch_size: int,
) -> dict[str, Any]:
    target = destination.target()
    delivered = batches = skipped = 0
    for index, (lines, records) in enumerate(staged_batches_with_lines(partition, batch_size)):
        key = batch_key(ledger.route, ledger.destination, target, index, lines)
        batches += 1
        if _already_delivered(ledger, key, sender):
            skipped += 1
        else:
            entry = ledger.begin(key, len(records))
            try:
                sender.send(records, key, entry.token, delivered)
            except Exception as exc:
                ledger.failed(key, f"{type(exc).__name__}: {exc}")
                raise
            ledger.delivered(key)
        delivered += len(records)
    ledger.flush()
    return {
        "delivered": delivered,
        "locations": [target] if target else [],
        "batches": batches,
        "skipped": skipped,
    }


def _already_delivered(ledger: DeliveryLedger, key: str, sender: BatchSender | None) -> bool:
    """Whether the batch arrived before: delivered, or an interrupted send the destination got."""
    entry = ledger.entry(key)
    if entry is None:
        return False
    if entry.status == "delivered" or (
        entry.status == "sending" and sender is not None and sender.received(key, entry.token)
    ):
        ledger.adopt(key)
        return True
    return False


def _deliver_whole(
    destination: Destination,
    ledger: DeliveryLedger,
    partition: dict[str, Any],
    batches: StagedBatches,
) -> dict[str, Any]:
    target = destination.target()
    key = batch_key(ledger.route, ledger.destination, target, 0, staged_lines(partition))
    outcome: dict[str, Any] = {"batches": 1, "skipped": 0}
    if _already_delivered(ledger, key, None):
        ledger.flush()
        return {**outcome, "skipped": 1, "delivered": partition["count"], "locations": [target]}
    ledger.begin(key, partition["count"])
    try:
        result = destination.deliver(batches)
    except Exception as exc:
        ledger.failed(key, f"{type(exc).__name__}: {exc}")
        raise
    ledger.delivered(key)
    ledger.flush()
    return {**outcome, "delivered": result.delivered, "locations": result.locations}
