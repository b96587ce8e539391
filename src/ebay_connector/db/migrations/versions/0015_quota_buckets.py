"""quota_buckets: refresh grants reserved per minute, the ledger that keeps eBay's daily limit

Filled from the exchange records of the last 24 h, so the limit holds across the upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 01:00:00
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

WINDOW = timedelta(hours=24, minutes=1)


def upgrade() -> None:
    buckets = op.create_table(
        "quota_buckets",
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("action", "minute", name=op.f("pk_quota_buckets")),
    )
    exchanges = sa.table(
        "ebay_exchanges",
        sa.column("action", sa.String),
        sa.column("sent", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    since = datetime.now(UTC) - WINDOW
    rows = op.get_bind().execute(
        sa.select(exchanges.c.action, exchanges.c.created_at).where(
            exchanges.c.sent.is_(True), exchanges.c.created_at > since
        )
    )
    counted: Counter[tuple[str, datetime]] = Counter()
    for action, created_at in rows:
        moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        counted[(action, moment.astimezone(UTC).replace(second=0, microsecond=0))] += 1
    if counted:
        op.bulk_insert(
            buckets,
            [{"action": a, "minute": minute, "calls": n} for (a, minute), n in counted.items()],
        )


def downgrade() -> None:
    op.drop_table("quota_buckets")
