"""ids never reused: retired_ids, and on SQLite a trigger filling it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# PostgreSQL's sequences never hand out an id twice; SQLite's rowids do (max(id)+1).
TRIGGER = """
CREATE TRIGGER ebay_accounts_retire_id AFTER DELETE ON ebay_accounts
BEGIN
    INSERT OR REPLACE INTO retired_ids (table_name, last_id)
    VALUES (
        'ebay_accounts',
        max(OLD.id, coalesce(
            (SELECT last_id FROM retired_ids WHERE table_name = 'ebay_accounts'), 0))
    );
END
"""


def upgrade() -> None:
    op.create_table(
        "retired_ids",
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name=op.f("pk_retired_ids")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ebay_accounts_retire_id")
    op.drop_table("retired_ids")
