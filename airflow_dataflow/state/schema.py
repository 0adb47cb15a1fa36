"""Tables of the state store (SQLAlchemy Core). Migrations in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ID = sa.String(250)  # route ids, run ids, names: indexable on MySQL too

sync_cursors = sa.Table(
    "dataflow_sync_cursors",
    metadata,
    sa.Column("route", ID, primary_key=True),
    sa.Column(
        "stream", ID, primary_key=True, comment="source stream within the route, e.g. 'source'"
    ),
    sa.Column("cursor", sa.JSON, nullable=False, comment="the last committed cursor value"),
    sa.Column("run_id", ID, nullable=True, comment="the run that committed it"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

delivery_ledger = sa.Table(
    "dataflow_delivery_ledger",
    metadata,
    sa.Column("route", ID, primary_key=True),
    sa.Column("destination", ID, primary_key=True),
    sa.Column(
        "batch_key", sa.String(64), primary_key=True, comment="hash of route, destination, content"
    ),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, comment="sending | delivered | failed"),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "rejected",
        sa.Integer,
        nullable=False,
        server_default="0",
        comment="records of the batch the destination refused (now dead letters)",
    ),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

dead_letters = sa.Table(
    "dataflow_dead_letters",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("route", ID, nullable=False, index=True),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("rule", ID, nullable=True),
    sa.Column("destination", ID, nullable=True),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("position", sa.Text, nullable=True),
    sa.Column("record", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("replay_run_id", ID, nullable=True, comment="the replay that last handled it"),
    sa.Column("replay_error", sa.Text, nullable=True, comment="why that replay left it pending"),
    sa.Column("replayed_to", sa.JSON, nullable=True, comment="where replays delivered it"),
)

run_summaries = sa.Table(
    "dataflow_run_summaries",
    metadata,
    sa.Column("route", ID, primary_key=True),
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("warnings", sa.JSON, nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("failed_task", ID, nullable=True, comment="the task whose failure failed the run"),
    sa.Column("error", sa.Text, nullable=True, comment="that task's error"),
)

webhook_receipts = sa.Table(
    "dataflow_webhook_receipts",
    metadata,
    sa.Column("webhook", ID, primary_key=True),
    sa.Column(
        "event_key",
        sa.String(128),
        primary_key=True,
        comment="the event id the sender gave, or a hash of the signature or body",
    ),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
