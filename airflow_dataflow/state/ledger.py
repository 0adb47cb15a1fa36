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
settles the batch. To keep the overhead small, "sending" marks are written for a window of
batches at once (``begin_many``; one batch unless the destination can tell which of them
arrived, or can safely receive them again), in the same transaction as the "delivered"
marks of the window before (``flush`` writes the last ones).
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
    rejected: int = 0

    @property
    def token(self) -> str:
        """Names one attempt at sending the batch (destinations that record it can confirm it)."""
        return f"{self.run_id}#{self.attempts}"


class DeliveryLedger:
    """The ledger of one destination of one route, as used by one run's deliver task.

    Holds one state-store connection for the delivery (``close`` releases it); each write is
    one short transaction on it.
    """

    def __init__(self, engine: sa.Engine, route: str, destination: str, run_id: str) -> None:
        self.engine = engine
        self.route = route
        self.destination = destination
        self.run_id = run_id
        self._connection = engine.connect()
        self._open = self._load_open_entries()
        self._delivered: list[str] = []  # keys whose "delivered" mark is not written yet
        self._upsert = _upsert_statement(engine.dialect.name)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> DeliveryLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            delivery_ledger.c.rejected,
        ).where(self._scope() & (delivery_ledger.c.status != "committed"))
        with self._connection.begin():
            return {
                row.batch_key: LedgerEntry(
                    row.batch_key, row.run_id, row.status, row.records, row.attempts, row.rejected
                )
                for row in self._connection.execute(query)
            }

    def entry(self, key: str) -> LedgerEntry | None:
        """The open entry of ``key`` (sent or being sent by a run that has not committed)."""
        return self._open.get(key)

    def begin(self, key: str, records: int) -> LedgerEntry:
        """Record that the batch is about to be sent; returns the entry (with its token)."""
        return self.begin_many([(key, records)])[key]

    def begin_many(self, batches: list[tuple[str, int]]) -> dict[str, LedgerEntry]:
        """Record that these batches (key, records) are about to be sent, in one transaction.

        The pending "delivered" marks are written in the same transaction.
        """
        now = datetime.now(timezone.utc)
        entries: dict[str, LedgerEntry] = {}
        rows = []
        for key, records in batches:
            known = self._open.get(key)
            entry = LedgerEntry(
                key, self.run_id, "sending", records, (known.attempts if known else 0) + 1
            )
            entries[key] = entry
            rows.append(
                {
                    "route": self.route,
                    "destination": self.destination,
                    "batch_key": key,
                    "run_id": self.run_id,
                    "status": "sending",
                    "records": records,
                    "attempts": entry.attempts,
                    "rejected": 0,
                    "last_error": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with self._connection.begin():
            self._write_delivered(now)
            if rows and self._upsert is not None:
                self._connection.execute(self._upsert, rows)
            else:
                for row in rows:
                    self._update_or_insert(row)
        self._open.update(entries)
        return entries

    def _update_or_insert(self, row: dict[str, object]) -> None:
        """The portable upsert, for state stores without ON CONFLICT / ON DUPLICATE KEY."""
        values = {name: value for name, value in row.items() if name in _UPDATED}
        key = self._key(str(row["batch_key"]))
        if not self._connection.execute(
            sa.update(delivery_ledger).where(key).values(**values)
        ).rowcount:
            self._connection.execute(sa.insert(delivery_ledger).values(**row))

    def delivered(self, key: str, rejected: int = 0) -> None:
        """The batch was sent (written with the next ``begin_many`` or ``flush``).

        ``rejected``: how many of its records the destination refused (already stored as
        dead letters); a later skip of the batch counts them again as rejected.
        """
        entry = self._open[key]
        entry.status = "delivered"
        entry.rejected = rejected
        if rejected:
            with self._connection.begin():
                self._connection.execute(
                    sa.update(delivery_ledger).where(self._key(key)).values(rejected=rejected)
                )
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
        with self._connection.begin():
            self._write_delivered(now)
            self._connection.execute(
                sa.update(delivery_ledger)
                .where(self._key(key))
                .values(status="failed", last_error=error[:_ERROR_LENGTH], updated_at=now)
            )
        self._open[key].status = "failed"

    def flush(self) -> None:
        """Write the pending "delivered" marks."""
        if self._delivered:
            with self._connection.begin():
                self._write_delivered(datetime.now(timezone.utc))

    def _write_delivered(self, now: datetime) -> None:
        if not self._delivered:
            return
        self._connection.execute(
            sa.update(delivery_ledger)
            .where(self._scope() & delivery_ledger.c.batch_key.in_(self._delivered))
            .values(status="delivered", run_id=self.run_id, updated_at=now)
        )
        self._delivered = []

    def _key(self, key: str) -> sa.ColumnElement[bool]:
        return self._scope() & (delivery_ledger.c.batch_key == key)


_UPDATED = ("run_id", "status", "records", "attempts", "rejected", "last_error", "updated_at")


def _upsert_statement(dialect: str) -> sa.Executable | None:
    """A multi-row INSERT that updates an existing entry, where the dialect has one."""
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(delivery_ledger)
        return insert.on_conflict_do_update(
            index_elements=["route", "destination", "batch_key"],
            set_={name: insert.excluded[name] for name in _UPDATED},
        )
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        insert = mysql.insert(delivery_ledger)
        return insert.on_duplicate_key_update({name: insert.inserted[name] for name in _UPDATED})
    return None


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
