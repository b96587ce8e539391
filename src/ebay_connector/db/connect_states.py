"""OAuth ``state`` values of connects in flight: signed, bound to a session, single use, 10 min.

The value sent to eBay is a signed nonce (tampering is refused before any lookup); the nonce's
row says who started the connect, from which session, for which account (reconnect). Using a
state deletes its row in the same statement that reads it, so a replayed state finds nothing;
only its own session can use it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ebay_connector.db import models as m
from ebay_connector.db.database import Database

STATE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class PendingConnect:
    organization_id: int
    user_id: int
    session_id: str
    account_id: int | None


class ConnectStates:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self._signer = URLSafeTimedSerializer(secret, salt="ebay-connector oauth state")

    async def create(
        self, *, organization_id: int, user_id: int, session_id: str, account_id: int | None
    ) -> str:
        nonce = secrets.token_urlsafe(24)
        now = self.db.clock()
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(m.ConnectState).where(m.ConnectState.expires_at < now))
            await conn.execute(
                sa.insert(m.ConnectState).values(
                    nonce=nonce,
                    organization_id=organization_id,
                    user_id=user_id,
                    session_id=session_id,
                    account_id=account_id,
                    created_at=now,
                    expires_at=now + STATE_TTL,
                )
            )
        return str(self._signer.dumps(nonce))

    async def consume(self, state: str, session_id: str) -> PendingConnect | None:
        """The connect this state belongs to, once; None if forged, expired, used or foreign."""
        try:
            nonce = self._signer.loads(state, max_age=int(STATE_TTL.total_seconds()))
        except BadSignature:
            return None
        if not isinstance(nonce, str):
            return None
        now: datetime = self.db.clock()
        async with self.db.transaction() as conn:
            # Only the session that started the connect uses its state up: a callback replayed
            # from another session (an attacker's) finds nothing and leaves it for the victim.
            row = (
                await conn.execute(
                    sa.delete(m.ConnectState)
                    .where(
                        m.ConnectState.nonce == nonce,
                        m.ConnectState.session_id == session_id,
                        m.ConnectState.expires_at > now,
                    )
                    .returning(*m.ConnectState.__table__.c)
                )
            ).first()
        if row is None:
            return None
        return PendingConnect(row.organization_id, row.user_id, row.session_id, row.account_id)
