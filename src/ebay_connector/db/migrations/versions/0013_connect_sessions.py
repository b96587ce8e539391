"""connect sessions: links a program hands to its seller, return-URL allow-lists, end users

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "return_urls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_return_urls_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_return_urls")),
        sa.UniqueConstraint(
            "organization_id", "url", name=op.f("uq_return_urls_organization_id_url")
        ),
    )
    op.create_table(
        "connect_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("end_user_id", sa.String(length=200), nullable=False),
        sa.Column("end_user_label", sa.String(length=200), nullable=True),
        sa.Column("return_url", sa.String(length=2048), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("connected_account_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_connect_sessions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ebay_accounts.id"],
            name=op.f("fk_connect_sessions_account_id_ebay_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connected_account_id"],
            ["ebay_accounts.id"],
            name=op.f("fk_connect_sessions_connected_account_id_ebay_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connect_sessions")),
    )
    op.create_index(
        op.f("ix_connect_sessions_expires_at"), "connect_sessions", ["expires_at"], unique=False
    )
    with op.batch_alter_table("ebay_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_user_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("end_user_label", sa.String(length=200), nullable=True))
        batch_op.create_index(
            "ix_ebay_accounts_org_end_user", ["organization_id", "end_user_id"], unique=False
        )
    with op.batch_alter_table("connect_states", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("connect_states", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("ebay_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_ebay_accounts_org_end_user")
        batch_op.drop_column("end_user_label")
        batch_op.drop_column("end_user_id")
    op.drop_index(op.f("ix_connect_sessions_expires_at"), table_name="connect_sessions")
    op.drop_table("connect_sessions")
    op.drop_table("return_urls")
