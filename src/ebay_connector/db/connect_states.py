"""OAuth ``state`` values of connects in flight: signed, bound to a session, single use, 10 min.

The value sent to eBay is a signed nonce (tampering is refused before any lookup); the nonce's
row says who started the connect, from which session, for which account (reconnect). Using a
state deletes its row in the same statement that reads it, so a replayed state finds nothing;
only its own session can use it.

Two kinds share the table and the one callback: an admin's connect (bound to the sign-in session)
and a seller's connect through a connect session (bound to that session, no user). Their states
are signed with different salts, so one can never be passed off as the other.
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
    user_id: int | None
    session_id: str
    account_id: int | None


class ConnectStates:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self._signer = URLSafeTimedSerializer(secret, salt="ebay-connector oauth state")
        self._seller_signer = URLSafeTimedSerializer(
            secret, salt="ebay-connector connect session state"
        )

    async def create(
        self, *, organization_id: int, user_id: int, session_id: str, account_id: int | None
    ) -> str:
        nonce = await self._insert(organization_id, user_id, session_id, account_id)
        return str(self._signer.dumps(nonce))

    async def create_for_seller(
        self, *, organization_id: int, connect_session_id: str, account_id: int | None
    ) -> str:
        """A state for a seller's connect: it names its connect session even once used up."""
        nonce = await self._insert(organization_id, None, connect_session_id, account_id)
        return str(self._seller_signer.dumps([nonce, connect_session_id]))

    def seller_session_of(self, state: str) -> str | None:
        """The connect session a seller's state was signed for; None for any other state."""
        try:
            value = self._seller_signer.loads(state)
        except BadSignature:
            return None
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
            return None
        return value[1]

    async def consume_for_seller(self, state: str) -> PendingConnect | None:
        """A seller's connect, once; None if forged, expired or used."""
        try:
            value = self._seller_signer.loads(state, max_age=int(STATE_TTL.total_seconds()))
        except BadSignature:
            return None
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            return None
        pending = await self._take(value[0], value[1])
        if pending is None or pending.user_id is not None or pending.session_id != value[1]:
            return None
        return pending

    async def _insert(
        self, organization_id: int, user_id: int | None, session_id: str, account_id: int | None
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
        return nonce

    async def consume(self, state: str, session_id: str) -> PendingConnect | None:
        """The connect this state belongs to, once; None if forged, expired, used or foreign."""
        try:
            nonce = self._signer.loads(state, max_age=int(STATE_TTL.total_seconds()))
        except BadSignature:
            return None
        if not isinstance(nonce, str):
            return None
        pending = await self._take(nonce, session_id)
        if (
            pending is None
            or pending.user_id is None
            or not secrets.compare_digest(pending.session_id, session_id)
        ):
            return None
        return pending

    async def _take(self, nonce: str, session_id: str) -> PendingConnect | None:
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
