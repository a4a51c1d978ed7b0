"""Deletions: a counter of delete transactions, which writers compare with their caches.

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


def upgrade() -> None:
    state = op.create_table(
        "index_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("deletions", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "deletions": 0}])


def downgrade() -> None:
    op.drop_table("index_state")
