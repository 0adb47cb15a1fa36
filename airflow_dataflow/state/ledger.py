"""The delivery ledger: which batch of which destination was sent, so none is sent twice.

Each destination batch has a key derived from the route, the destination, where it writes
(its target: a rendered path, a table), the batch's position in the delivery and its content
(never the run id): re-reading the same records makes the same keys. An entry's status is

- ``sending``: written before the batch is sent; the outcome is unknown if it stays so (the
  process died). The destination is asked whether it received the batch (``token``), where it
  can tell; otherwise the batch is sent again.
- ``delivered``: written after the batch was sent. A task retry, or a later run re-sending the
  same batch before any run committed it (a partial failure), skips it.
- ``failed``: the send raised; the error is kept and the batch is sent again next time.
- ``committed``: the run that delivered it committed. A later run with the same content is a
  new delivery (a source without a cursor re-reads everything each run), so it sends again.

A later run that skips a batch takes it over (its run id becomes the entry's), so its commit
settles the batch. To keep the overhead small, the "delivered" mark of one batch is written
in the same transaction as the "sending" mark of the next (``flush`` writes the last one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import sqlalchemy as sa

from airflow_dataflow.state.schema import delivery_ledger

Status = Literal["sending", "delivered", "failed", "committed"]
COMMITTED_RETENTION = timedelta(days=7)
_ERROR_LENGTH = 2000


def batch_key(route: str, destination: str, target: str, index: int, lines: Iterable[bytes]) -> str:
    """The key of one batch: a hash of where it goes, its position and its staged lines."""
    digest = hashlib.blake2b(digest_size=32)
    for part in (route, destination, target, str(index)):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    for line in lines:
        digest.update(line)
    return digest.hexdigest()


@dataclass
class LedgerEntry:
    key: str
    run_id: str
    status: Status
    records: int
    attempts: int

    @property
    def token(self) -> str:
        """Names one attempt at sending the batch (destinations that record it can confirm it)."""
        return f"{self.run_id}#{self.attempts}"


class DeliveryLedger:
    """The ledger of one destination of one route, as used by one run's deliver task."""

    def __init__(self, engine: sa.Engine, route: str, destination: str, run_id: str) -> None:
        self.engine = engine
        self.route = route
        self.destination = destination
        self.run_id = run_id
        self._open = self._load_open_entries()
        self._delivered: list[str] = []  # keys whose "delivered" mark is not written yet

    def _scope(self) -> sa.ColumnElement[bool]:
        return (delivery_ledger.c.route == self.route) & (
            delivery_ledger.c.destination == self.destination
        )

    def _load_open_entries(self) -> dict[str, LedgerEntry]:
        """Entries no run committed yet: the only ones that can make a batch be skipped."""
        query = sa.select(
            delivery_ledger.c.batch_key,
            delivery_ledger.c.run_id,
            delivery_ledger.c.status,
            delivery_ledger.c.records,
            delivery_ledger.c.attempts,
        ).where(self._scope() & (delivery_ledger.c.status != "committed"))
        with self.engine.connect() as connection:
            return {
                row.batch_key: LedgerEntry(
                    row.batch_key, row.run_id, row.status, row.records, row.attempts
                )
                for row in connection.execute(query)
            }

    def entry(self, key: str) -> LedgerEntry | None:
        """The open entry of ``key`` (sent or being sent by a run that has not committed)."""
        return self._open.get(key)

    def begin(self, key: str, records: int) -> LedgerEntry:
        """Record that the batch is about to be sent; returns the entry (with its token)."""
        known = self._open.get(key)
        entry = LedgerEntry(
            key, self.run_id, "sending", records, (known.attempts if known else 0) + 1
        )
        now = datetime.now(timezone.utc)
        values = {
            "run_id": self.run_id,
            "status": "sending",
            "records": records,
            "attempts": entry.attempts,
            "last_error": None,
            "updated_at": now,
        }
        with self.engine.begin() as connection:
            self._write_delivered(connection, now)
            updated = connection.execute(
                sa.update(delivery_ledger).where(self._key(key)).values(**values)
            ).rowcount
            if not updated:
                connection.execute(
                    sa.insert(delivery_ledger).values(
                        route=self.route,
                        destination=self.destination,
                        batch_key=key,
                        created_at=now,
                        **values,
                    )
                )
        self._open[key] = entry
        return entry

    def delivered(self, key: str) -> None:
        """The batch was sent (written with the next ``begin`` or ``flush``)."""
        self._open[key].status = "delivered"
        self._delivered.append(key)

    def adopt(self, key: str) -> None:
        """Skip an already delivered batch, making this run the one that will commit it."""
        entry = self._open[key]
        entry.status = "delivered"
        entry.run_id = self.run_id
        self._delivered.append(key)

    def failed(self, key: str, error: str) -> None:
        """The send raised: keep the error; the batch is sent again next time."""
        now = datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            self._write_delivered(connection, now)
            connection.execute(
                sa.update(delivery_ledger)
                .where(self._key(key))
                .values(status="failed", last_error=error[:_ERROR_LENGTH], updated_at=now)
            )
        self._open[key].status = "failed"

    def flush(self) -> None:
        """Write the pending "delivered" marks."""
        if self._delivered:
            with self.engine.begin() as connection:
                self._write_delivered(connection, datetime.now(timezone.utc))

    def _write_delivered(self, connection: sa.Connection, now: datetime) -> None:
        if not self._delivered:
            return
        connection.execute(
            sa.update(delivery_ledger)
            .where(self._scope() & delivery_ledger.c.batch_key.in_(self._delivered))
            .values(status="delivered", run_id=self.run_id, updated_at=now)
        )
        self._delivered = []

    def _key(self, key: str) -> sa.ColumnElement[bool]:
        return self._scope() & (delivery_ledger.c.batch_key == key)


def settle_run(engine: sa.Engine, route: str, run_id: str) -> int:
    """The run committed: its delivered batches are final. Returns how many were settled.

    Also forgets batches committed more than ``COMMITTED_RETENTION`` ago (they can no longer
    make anything skip; they are kept a while for inspection).
    """
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        settled = connection.execute(
            sa.update(delivery_ledger)
            .where(
                (delivery_ledger.c.route == route)
                & (delivery_ledger.c.run_id == run_id)
                & (delivery_ledger.c.status == "delivered")
            )
            .values(status="committed", updated_at=now)
        ).rowcount
        connection.execute(
            sa.delete(delivery_ledger).where(
                (delivery_ledger.c.route == route)
                & (delivery_ledger.c.status == "committed")
                & (delivery_ledger.c.updated_at < now - COMMITTED_RETENTION)
            )
        )
    return int(settled)


def ledger_entries(engine: sa.Engine, route: str) -> list[dict[str, object]]:
    """Every ledger entry of ``route`` (for tests and inspection), oldest first."""
    query = (
        sa.select(delivery_ledger)
        .where(delivery_ledger.c.route == route)
        .order_by(delivery_ledger.c.created_at)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
