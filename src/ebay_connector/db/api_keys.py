"""Programs' credentials: API keys, shown once, stored hashed, scoped to one organization.

A key reads ``ebc_<key_id>_<secret>``: the key id finds the row, the secret is compared by its
SHA-256 (a random 256-bit secret needs no slow hash). Least privilege: every key may list its
organization's accounts; reading tokens (``--tokens``), creating connect sessions (``--connect``)
and calling eBay through the proxy (``--proxy``) are each granted explicitly.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ebay_connector.core.labels import clean_name
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.errors import StoreUnavailable

PREFIX = "ebc_"
LAST_USED_THROTTLE = timedelta(seconds=60)
# A program asks for tokens in bursts; remembering a verified key briefly spares a database read
# per request. The price: a key revoked in another process keeps working for up to this long
# (see docs/decisions.md, "Verified API keys remembered for 5 s").
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_MAX = 1024
# While the database does not answer, a key this process verified within this long is still
# believed, so programs keep their tokens through an outage (docs/security.md, "Held in memory").
OUTAGE_GRACE_SECONDS = 900.0


@dataclass(frozen=True)
class ApiKeyRow:
    id: int
    organization_id: int
    name: str
    key_id: str
    can_read_tokens: bool
    can_connect: bool
    can_proxy: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(presented: str) -> tuple[str, str] | None:
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not key_id.isalnum() or len(key_id) > 32 or not secret:
        return None
    return key_id, secret


class ApiKeys:
    def __init__(self, db: Database, *, cache_seconds: float = AUTH_CACHE_SECONDS) -> None:
        # sha256(presented key) -> (row, monotonic expiry); only keys that verified get in.
        self._verified: dict[str, tuple[ApiKeyRow, float]] = {}
        self._cache_seconds = cache_seconds
        self.db = db

    async def create(
        self,
        organization_id: int,
        name: str,
        *,
        can_read_tokens: bool,
        can_connect: bool = False,
        can_proxy: bool = False,
    ) -> tuple[ApiKeyRow, str]:
        """A new key; the full key is returned once and never stored."""
        name = clean_name(name, what="a key's name")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self.db.clock()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.insert(m.ApiKey)
                .values(
                    organization_id=organization_id,
                    name=name,
                    key_id=key_id,
                    secret_hash=_hash(secret),
                    can_read_tokens=can_read_tokens,
                    can_connect=can_connect,
                    can_proxy=can_proxy,
                    created_at=now,
                )
                .returning(m.ApiKey.id)
            )
            row_id = int(result.scalar_one())
        row = ApiKeyRow(
            row_id,
            organization_id,
            name,
            key_id,
            can_read_tokens,
            can_connect,
            can_proxy,
            now,
            None,
            None,
        )
        return row, f"{PREFIX}{key_id}_{secret}"

    async def list(self, organization_id: int) -> list[ApiKeyRow]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(*_COLUMNS)
                .where(m.ApiKey.organization_id == organization_id)
                .order_by(m.ApiKey.id)
            )
            return [ApiKeyRow(**dict(r._mapping)) for r in rows]

    async def revoke(self, organization_id: int, key_id: str) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.ApiKey)
                .where(
                    m.ApiKey.organization_id == organization_id,
                    m.ApiKey.key_id == key_id,
                    m.ApiKey.revoked_at.is_(None),
                )
                .values(revoked_at=self.db.clock())
            )
        self._verified = {d: e for d, e in self._verified.items() if e[0].key_id != key_id}
        return bool(result.rowcount)

    async def authenticate(self, presented: str) -> ApiKeyRow | None:
        parts = parse(presented)
        if parts is None:
            return None
        digest = _hash(presented)
        cached = self._verified.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            key = await self._verify(*parts)
        except StoreUnavailable:
            if cached is not None and cached[1] - self._cache_seconds + OUTAGE_GRACE_SECONDS > now:
                return cached[0]
            raise
        if key is None:
            self._verified.pop(digest, None)
        elif self._cache_seconds > 0:
            if len(self._verified) >= AUTH_CACHE_MAX:
                self._verified.clear()
            self._verified[digest] = (key, now + self._cache_seconds)
        return key

    async def _verify(self, key_id: str, secret: str) -> ApiKeyRow | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_BY_KEY_ID, {"key_id": key_id})).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        values = dict(row._mapping)
        values.pop("secret_hash")
        key = ApiKeyRow(**values)
        now = self.db.clock()
        if key.last_used_at is None or key.last_used_at < now - LAST_USED_THROTTLE:
            async with self.db.transaction() as conn:
                await conn.execute(
                    sa.update(m.ApiKey).where(m.ApiKey.id == key.id).values(last_used_at=now)
                )
        return key


_COLUMNS = tuple(c for c in m.ApiKey.__table__.c if c.name != "secret_hash")
# Built once: the request path should not pay for constructing the same statement every time.
_BY_KEY_ID = sa.select(*_COLUMNS, m.ApiKey.secret_hash).where(
    m.ApiKey.key_id == sa.bindparam("key_id")
)
