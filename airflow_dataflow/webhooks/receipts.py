"""Which webhook events were accepted already (``dataflow_webhook_receipts`` in the state store)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from airflow_dataflow.state.schema import webhook_receipts

# Receipts older than this are forgotten: signed requests are refused after 5 minutes anyway.
KEEP = timedelta(days=1)


class ReceiptLog:
    """``first_time(webhook, key)`` is true once per key: concurrent receivers agree (the key
    is the table's primary key, so the second insert fails)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls) -> ReceiptLog:
        from airflow_dataflow.state.store import StateStore

        return cls(StateStore.open().engine)

    def first_time(self, webhook: str, key: str, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    webhook_receipts.delete().where(webhook_receipts.c.received_at < now - KEEP)
                )
                conn.execute(
                    webhook_receipts.insert().values(
                        webhook=webhook, event_key=key, received_at=now
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True
