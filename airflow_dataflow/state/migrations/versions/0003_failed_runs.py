"""Run summaries of failed runs: which task failed and why.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "dataflow_run_summaries"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("failed_task", sa.String(250), nullable=True))
    op.add_column(TABLE, sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite drops columns by copying the table
        batch.drop_column("error")
        batch.drop_column("failed_task")
