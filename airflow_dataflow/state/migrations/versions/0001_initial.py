"""The state store's first tables: cursors, delivery ledger, dead letters, run summaries.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(250)


def upgrade() -> None:
    op.create_table(
        "dataflow_sync_cursors",
        sa.Column("route", ID, primary_key=True),
        sa.Column("stream", ID, primary_key=True),
        sa.Column("cursor", sa.JSON, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataflow_delivery_ledger",
        sa.Column("route", ID, primary_key=True),
        sa.Column("destination", ID, primary_key=True),
        sa.Column("batch_key", sa.String(64), primary_key=True),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataflow_dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("route", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("rule", ID, nullable=True),
        sa.Column("destination", ID, nullable=True),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("record", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_dataflow_dead_letters_route", "dataflow_dead_letters", ["route"])
    op.create_table(
        "dataflow_run_summaries",
        sa.Column("route", ID, primary_key=True),
        sa.Column("run_id", ID, primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("warnings", sa.JSON, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataflow_run_summaries")
    op.drop_index("ix_dataflow_dead_letters_route", table_name="dataflow_dead_letters")
    op.drop_table("dataflow_dead_letters")
    op.drop_table("dataflow_delivery_ledger")
    op.drop_table("dataflow_sync_cursors")
