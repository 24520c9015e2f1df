"""partial index for leasing a round's unlabeled queries in rank order

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


def upgrade() -> None:
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.create_index(
            "ix_query_open_rank",
            ["project_id", "round_index", "rank"],
            unique=False,
            postgresql_where=sa.text("labeled_at IS NULL"),
            sqlite_where=sa.text("labeled_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.drop_index("ix_query_open_rank")
