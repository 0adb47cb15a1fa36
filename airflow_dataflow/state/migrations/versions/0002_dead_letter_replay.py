"""Dead letters remember their replays: the replay run, why one left them pending, where
they were re-delivered (so a replay that failed on one destination re-sends only the others).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "dataflow_dead_letters"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("replay_run_id", sa.String(250), nullable=True))
    op.add_column(TABLE, sa.Column("replay_error", sa.Text, nullable=True))
    op.add_column(TABLE, sa.Column("replayed_to", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:  # SQLite drops columns by copying the table
        batch.drop_column("replayed_to")
        batch.drop_column("replay_error")
        batch.drop_column("replay_run_id")
