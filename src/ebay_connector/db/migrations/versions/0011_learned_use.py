"""learned use: each account's typical interval between uses and its spread

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ebay_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("use_interval_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("use_jitter_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ebay_accounts", schema=None) as batch_op:
        batch_op.drop_column("use_jitter_s")
        batch_op.drop_column("use_interval_s")
