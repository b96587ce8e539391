"""Connect sessions: the links programs hand to their sellers. Single use, expiring.

A session moves ``pending`` → ``started`` (the seller pressed the button; a compare-and-set, so
a second press or a replayed form finds nothing) → ``connected`` or ``failed``. The id is the
seller's only credential: 192 random bits, never listed anywhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ebay_connector.db import models as m
from ebay_connector.db.database import Database

PREFIX = "cs_"
PENDING, STARTED, CONNECTED, FAILED = "pending", "started", "connected", "failed"


@dataclass(frozen=True)
class ConnectSessionRow:
    id: str
    organization_id: int
    created_by: str
    end_user_id: str
    end_user_label: str | None
    return_url: str
    account_id: int | None
    status: str
    error: str | None
    connected_account_id: int | None
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None


def looks_like_id(value: str) -> bool:
    return value.startswith(PREFIX) and 10 < len(value) <= 64 and value.isascii()


class ConnectSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        organization_id: int,
        created_by: str,
        end_user_id: str,
        end_user_label: str | None,
        return_url: str,
        account_id: int | None,
        ttl: timedelta,
    ) -> ConnectSessionRow:
        now = self.db.clock()
        row = ConnectSessionRow(
            id=PREFIX + secrets.token_urlsafe(24),
            organization_id=organization_id,
            created_by=created_by,
            end_user_id=end_user_id,
            end_user_label=end_user_label,
            return_url=return_url,
            account_id=account_id,
            status=PENDING,
            error=None,
            connected_account_id=None,
            created_at=now,
            expires_at=now + ttl,
            finished_at=None,
        )
        async with self.db.transaction() as conn:
            # Finished and long-expired sessions are of no use to anyone: pruned as new ones come.
            await conn.execute(
                sa.delete(m.ConnectSession).where(
                    m.ConnectSession.expires_at < now - timedelta(days=1)
                )
            )
            await conn.execute(sa.insert(m.ConnectSession).values(**row.__dict__))
        return row

    async def get(self, session_id: str) -> ConnectSessionRow | None:
        if not looks_like_id(session_id):
            return None
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(*m.ConnectSession.__table__.c).where(
                        m.ConnectSession.id == session_id
                    )
                )
            ).first()
        return None if row is None else ConnectSessionRow(**dict(row._mapping))

    async def start(self, session_id: str) -> bool:
        """Mark a pending, unexpired session started; False when it was not (any more)."""
        now = self.db.clock()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.ConnectSession)
                .where(
                    m.ConnectSession.id == session_id,
                    m.ConnectSession.status == PENDING,
                    m.ConnectSession.expires_at > now,
                )
                .values(status=STARTED)
            )
        return bool(result.rowcount)

    async def finish(
        self, session_id: str, *, account_id: int | None = None, error: str | None = None
    ) -> bool:
        """A started session's end: connected (``account_id``) or failed (``error``), once."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.ConnectSession)
                .where(
                    m.ConnectSession.id == session_id,
                    m.ConnectSession.status.in_((PENDING, STARTED)),
                )
                .values(
                    status=FAILED if error else CONNECTED,
                    error=error,
                    connected_account_id=account_id,
                    finished_at=self.db.clock(),
                )
            )
        return bool(result.rowcount)
