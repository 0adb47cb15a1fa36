"""The delivery ledger counts the records a destination refused in each batch.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "dataflow_delivery_ledger"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("rejected", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite drops columns by copying the table
        batch.drop_column("rejected")
