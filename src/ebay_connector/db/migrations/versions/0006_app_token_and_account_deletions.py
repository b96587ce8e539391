"""app token and account deletions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_tokens",
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("environment", name=op.f("pk_app_tokens")),
    )
    op.create_table(
        "account_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("ebay_user_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("organization_ids", sa.JSON(), nullable=False),
        sa.Column("event_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_deletions")),
        sa.UniqueConstraint("notification_id", name=op.f("uq_account_deletions_notification_id")),
    )
    with op.batch_alter_table("account_deletions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_deletions_ebay_user_fingerprint"),
            ["ebay_user_fingerprint"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("account_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_deletions_ebay_user_fingerprint"))

    op.drop_table("account_deletions")
    op.drop_table("app_tokens")
