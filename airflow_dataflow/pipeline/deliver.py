"""Deliver: send one destination's partition in batches, through the delivery ledger.

A destination that takes batches one at a time (``open_batches``) gets a ledger entry per
batch; one that writes everything at once (a file, a replaced table) gets one entry for the
whole delivery. Either way a batch already delivered by this run (a task retry) or by an
uncommitted earlier run (a partial failure, then a re-read of the same records) is skipped.
See ``state/ledger.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.base import BatchSender, Destination, Rejection
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
    """Deliver a staged partition.

    Returns ``{"delivered", "rejected", "locations", "batches", "skipped"}``: ``delivered``
    counts the records now at the destination from this partition, whether sent now or
    skipped as sent before; ``rejected`` those it refused for good (kept as dead letters);
    ``batches``/``skipped`` count ledger batches.
    """
    from airflow_dataflow.state.store import StateStore

    destination = make_destination(route, name, context)
    store = StateStore.open() if state_engine is None else StateStore(state_engine)
    batch_size = getattr(destination.settings, "batch_size", None) or DEFAULT_BATCH_SIZE
    batches = StagedBatches(partition, batch_size=batch_size)
    with DeliveryLedger(store.engine, route.route_id, name, context.run_id) as ledger:
        delivery = _Delivery(destination, ledger, store)
        sender = destination.open_batches(batches)
        if sender is None:
            delivery.whole(partition, batches)
        else:
            with sender:
                delivery.in_batches(sender, partition, batch_size)
    outcome = delivery.outcome()
    if "records" in partition and outcome["delivered"]:  # a per: batch summary stands for more
        outcome["delivered"] = records_in(partition) - outcome["rejected"]
    log.info(
        "delivered %d records to %s in %d batches (%d skipped as already delivered, %d records "
        "refused and dead-lettered) (%s)",
        outcome["delivered"],
        name,
        outcome["batches"],
        outcome["skipped"],
        outcome["rejected"],
        ", ".join(outcome["locations"]),
    )
    return outcome


class _Delivery:
    """One destination's delivery through the ledger, and its counts."""

    def __init__(self, destination: Destination, ledger: DeliveryLedger, store: Any) -> None:
        self.destination = destination
        self.ledger = ledger
        self.store = store
        self.target = destination.target()
        self.delivered = self.rejected = self.batches = self.skipped = 0
        self.locations: list[str] = [self.target] if self.target else []

    def outcome(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "rejected": self.rejected,
            "locations": self.locations,
            "batches": self.batches,
            "skipped": self.skipped,
        }

    def in_batches(self, sender: BatchSender, partition: dict[str, Any], batch_size: int) -> None:
        """Send batch by batch; the ledger marks ``sender.window`` batches "sending" at a time."""
        ledger = self.ledger
        keyed = (
            (batch_key(ledger.route, ledger.destination, self.target, index, lines), records)
            for index, (lines, records) in enumerate(
                staged_batches_with_lines(partition, batch_size)
            )
        )
        offset = 0
        for window in _windows(keyed, max(1, sender.window)):
            self.batches += len(window)
            offsets = {}
            to_send = []
            for key, records in window:
                offsets[key] = offset
                offset += len(records)
                if not self._skip(key, len(records), sender):
                    to_send.append((key, records))
            if not to_send:
                continue
            entries = ledger.begin_many([(key, len(records)) for key, records in to_send])
            for key, records in to_send:
                try:
                    rejections = sender.send(records, key, entries[key].token, offsets[key])
                except Exception as exc:
                    ledger.failed(key, f"{type(exc).__name__}: {exc}")
                    raise
                self._sent(key, len(records), rejections or [])
        ledger.flush()

    def whole(self, partition: dict[str, Any], batches: StagedBatches) -> None:
        """The whole delivery as one ledger entry (a file, a replaced table)."""
        ledger = self.ledger
        key = batch_key(ledger.route, ledger.destination, self.target, 0, staged_lines(partition))
        self.batches = 1
        if not self._skip(key, partition["count"], None):
            ledger.begin(key, partition["count"])
            try:
                result = self.destination.deliver(batches)
            except Exception as exc:
                ledger.failed(key, f"{type(exc).__name__}: {exc}")
                raise
            self.locations = result.locations
            self._sent(key, result.delivered + len(result.rejections), result.rejections)
        ledger.flush()

    def _skip(self, key: str, records: int, sender: BatchSender | None) -> bool:
        """Whether the batch arrived before: delivered, or an interrupted send it received."""
        entry = self.ledger.entry(key)
        if entry is None:
            return False
        if entry.status == "delivered" or (
            entry.status == "sending" and sender is not None and sender.received(key, entry.token)
        ):
            self.ledger.adopt(key)
            self.skipped += 1
            self.rejected += entry.rejected
            self.delivered += records - entry.rejected
            return True
        return False

    def _sent(self, key: str, records: int, rejections: list[Rejection]) -> None:
        """Keep the refused records as dead letters, then mark the batch delivered."""
        if rejections:
            self.store.add_rejections(
                route=self.ledger.route,
                run_id=self.ledger.run_id,
                destination=self.ledger.destination,
                batch_key=key,
                rejections=[(item.record, item.reason) for item in rejections],
            )
            log.warning(
                "destination %s refused %d records of a batch (dead letters): first: %s",
                self.ledger.destination,
                len(rejections),
                rejections[0].reason,
            )
        self.ledger.delivered(key, rejected=len(rejections))
        self.rejected += len(rejections)
        self.delivered += records - len(rejections)


def _windows(
    items: Iterator[tuple[str, list[Any]]], size: int
) -> Iterator[list[tuple[str, list[Any]]]]:
    window: list[tuple[str, list[Any]]] = []
    for item in items:
        window.append(item)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window
