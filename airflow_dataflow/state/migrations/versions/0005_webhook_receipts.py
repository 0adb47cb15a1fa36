"""The webhook receiver remembers the events it accepted, to answer replays with 409.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "dataflow_webhook_receipts"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("webhook", sa.String(250), primary_key=True),
        sa.Column("event_key", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{TABLE}_received_at", TABLE, ["received_at"])


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_received_at", table_name=TABLE)
    op.drop_table(TABLE)
