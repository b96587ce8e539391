"""webhook_endpoints: one endpoint per URL in an organization

Existing duplicates (the same normalized URL added twice, e.g. by reloading the page that added
it) are removed first, keeping the oldest: each copy received the same events, so the oldest's
deliveries are the record; the copies' deliveries go with them (ON DELETE CASCADE).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ENDPOINTS = sa.table(
    "webhook_endpoints",
    sa.column("id", sa.Integer),
    sa.column("organization_id", sa.Integer),
    sa.column("url", sa.String),
)
DELIVERIES = sa.table("webhook_deliveries", sa.column("endpoint_id", sa.Integer))


def upgrade() -> None:
    kept = (
        sa.select(sa.func.min(ENDPOINTS.c.id))
        .group_by(ENDPOINTS.c.organization_id, ENDPOINTS.c.url)
        .scalar_subquery()
    )
    copies = sa.select(ENDPOINTS.c.id).where(ENDPOINTS.c.id.not_in(kept))
    # SQLite enforces foreign keys only when asked: the deliveries go explicitly on both.
    op.execute(sa.delete(DELIVERIES).where(DELIVERIES.c.endpoint_id.in_(copies)))
    op.execute(sa.delete(ENDPOINTS).where(ENDPOINTS.c.id.not_in(kept)))
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_webhook_endpoints_organization_id_url"), ["organization_id", "url"]
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_webhook_endpoints_organization_id_url"), type_="unique"
        )
