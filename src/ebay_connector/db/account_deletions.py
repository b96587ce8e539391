"""Acting on eBay Marketplace Account Deletion: forget a seller everywhere, once, with a record.

Owns every statement on ``account_deletions``. One transaction per notification: the record is
inserted first (its unique ``notification_id`` makes a redelivered notification a no-op), then
every account of that eBay user in this environment — in every organization — is deleted with
its tokens (``ebay_tokens`` cascades), and the getUser answers journaled when it was connected
(they hold the user id and username) are erased. Attempts and other exchanges stay, detached
(``account_id`` becomes NULL), so the organization's history keeps its shape without the person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector.core.deletion import DeletionNotice
from ebay_connector.db import models as m
from ebay_connector.db.database import Database

ERASED_BODY: dict[str, Any] = {"erased": "marketplace account deletion"}


@dataclass(frozen=True)
class DeletionResult:
    """What one notification did; ``replayed``: it had been acted on before (nothing done)."""

    deletion_id: int | None
    replayed: bool
    account_ids: tuple[int, ...]
    organization_ids: tuple[int, ...]


@dataclass(frozen=True)
class DeletionRow:
    id: int
    notification_id: str
    environment: str
    ebay_user_fingerprint: str
    account_ids: list[int]
    organization_ids: list[int]
    event_date: datetime | None
    received_at: datetime


class AccountDeletions:
    """Applies deletion notices and lists what was deleted."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(
        self, notice: DeletionNotice, *, environment: str, user_fingerprint: str
    ) -> DeletionResult:
        """Delete every account of ``notice.user_id`` in ``environment``; at most once."""
        now = self.db.clock()
        async with self.db.transaction() as conn:
            deletion_id = await _claim(conn, notice, environment, user_fingerprint, now)
            if deletion_id is None:
                return DeletionResult(None, True, (), ())
            rows = (
                await conn.execute(
                    sa.select(m.EbayAccount.id, m.EbayAccount.organization_id)
                    .where(
                        m.EbayAccount.environment == environment,
                        m.EbayAccount.ebay_user_id == notice.user_id,
                    )
                    .order_by(m.EbayAccount.id)
                )
            ).all()
            account_ids = tuple(int(r[0]) for r in rows)
            organization_ids = tuple(sorted({int(r[1]) for r in rows}))
            if account_ids:
                await _erase_user_answers(conn, account_ids)
                await conn.execute(
                    sa.delete(m.EbayAccount).where(m.EbayAccount.id.in_(account_ids))
                )
                await conn.execute(
                    sa.update(m.AccountDeletion)
                    .where(m.AccountDeletion.id == deletion_id)
                    .values(account_ids=list(account_ids), organization_ids=list(organization_ids))
                )
            return DeletionResult(deletion_id, False, account_ids, organization_ids)

    async def recent(self, limit: int = 50) -> list[DeletionRow]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.AccountDeletion.__table__)
                .order_by(m.AccountDeletion.id.desc())
                .limit(limit)
            )
            return [DeletionRow(**dict(row._mapping)) for row in result]


async def _claim(
    conn: AsyncConnection,
    notice: DeletionNotice,
    environment: str,
    user_fingerprint: str,
    now: datetime,
) -> int | None:
    """Insert the record unless this notification was seen; its id, or None (a replay).

    ``ON CONFLICT DO NOTHING`` rather than check-then-insert: two deliveries of the same
    notification racing each other must not both delete, nor either fail with a 500.
    """
    values: dict[str, Any] = {
        "notification_id": notice.notification_id,
        "environment": environment,
        "ebay_user_fingerprint": user_fingerprint,
        "account_ids": [],
        "organization_ids": [],
        "event_date": notice.event_date,
        "received_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(m.AccountDeletion)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["notification_id"])
        .returning(m.AccountDeletion.id)
    )
    inserted = (await conn.execute(statement)).scalar_one_or_none()
    return None if inserted is None else int(inserted)


async def _erase_user_answers(conn: AsyncConnection, account_ids: Sequence[int]) -> None:
    """getUser answers hold the user id and username in clear: erase their bodies."""
    rows = (
        await conn.execute(
            sa.select(m.EbayExchange.id, m.EbayExchange.status).where(
                m.EbayExchange.account_id.in_(account_ids), m.EbayExchange.action == "get_user"
            )
        )
    ).all()
    for exchange_id, status in rows:
        await conn.execute(
            sa.update(m.EbayExchange)
            .where(m.EbayExchange.id == exchange_id)
            .values(response={"status": status, "headers": {}, "body": ERASED_BODY})
        )
