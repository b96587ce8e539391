"""index refresh attempts by exchange (retention deletes exchanges)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 20:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_attempts_exchange_id"), ["exchange_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_attempts_exchange_id"))
