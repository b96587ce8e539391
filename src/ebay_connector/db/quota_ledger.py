"""The quota ledger: eBay calls reserved per grant type and minute, before they are sent.

A reservation counts the window and takes its slots in one transaction that every process
serialises on: PostgreSQL by a transaction-scoped advisory lock per grant type, SQLite by its
single writer (``BEGIN IMMEDIATE``). So concurrent callers, in this process or in replicas, can
never together pass the ceiling they reserve under (see core/quota.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector.core import quota
from ebay_connector.db import models as m
from ebay_connector.db.database import Database

_LOCK_SPACE = 0x45424351  # "EBCQ": the advisory-lock keys of this ledger, apart from others'


@dataclass(frozen=True)
class Reservation:
    """Slots taken in one bucket; ``granted`` may be fewer than asked (0: none fit)."""

    grant: str
    minute: datetime
    granted: int
    used: int  # the window's count before this reservation
    frees_at: datetime | None  # when none were granted: when one slot fits again


def _lock_key(grant: str) -> int:
    # A stable 64-bit key per grant type (hash() differs between processes).
    return (_LOCK_SPACE << 32) | zlib.crc32(grant.encode())


class QuotaLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def reserve(self, grant: str, wanted: int, ceiling: int, now: datetime) -> Reservation:
        """Take up to ``wanted`` slots while the window stays within ``ceiling``."""
        minute = quota.bucket_of(now)
        async with self.db.transaction() as conn:
            if conn.dialect.name == "postgresql":
                key = sa.literal(_lock_key(grant), sa.BigInteger)
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            buckets = await _window(conn, grant, now)
            used = sum(calls for _, calls in buckets)
            granted = quota.grantable(used, wanted, ceiling)
            if granted > 0:
                await self._add(conn, grant, minute, granted)
            await conn.execute(  # buckets no window counts any more
                sa.delete(m.QuotaBucket).where(
                    m.QuotaBucket.action == grant, m.QuotaBucket.minute <= quota.counted_after(now)
                )
            )
        frees = None if granted > 0 else quota.slot_frees_at(buckets, ceiling)
        return Reservation(grant, minute, granted, used, frees)

    async def release(self, grant: str, minute: datetime, count: int) -> None:
        """Give back ``count`` slots of a reservation whose calls were not sent."""
        if count <= 0:
            return
        async with self.db.transaction() as conn:
            # SQLite's two-argument max() is PostgreSQL's greatest().
            floor = sa.func.max if conn.dialect.name == "sqlite" else sa.func.greatest
            await conn.execute(
                sa.update(m.QuotaBucket)
                .where(m.QuotaBucket.action == grant, m.QuotaBucket.minute == minute)
                .values(calls=floor(m.QuotaBucket.calls - count, 0))
            )

    async def used(self, grant: str, now: datetime) -> int:
        """Slots the window ending ``now`` holds (reserved, sent or in flight)."""
        return sum(calls for _, calls in await self.window(grant, now))

    async def window(self, grant: str, now: datetime) -> list[tuple[datetime, int]]:
        """The buckets the window ending ``now`` counts, oldest first, with their slots."""
        async with self.db.read() as conn:
            return await _window(conn, grant, now)

    @staticmethod
    async def _add(conn: AsyncConnection, grant: str, minute: datetime, count: int) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(m.QuotaBucket).values(action=grant, minute=minute, calls=count)
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["action", "minute"],
                set_={"calls": m.QuotaBucket.calls + insert.excluded.calls},
            )
        )


async def _window(conn: AsyncConnection, grant: str, now: datetime) -> list[tuple[datetime, int]]:
    result = await conn.execute(
        sa.select(m.QuotaBucket.minute, m.QuotaBucket.calls)
        .where(m.QuotaBucket.action == grant, m.QuotaBucket.minute > quota.counted_after(now))
        .order_by(m.QuotaBucket.minute)
    )
    return [(minute, int(calls)) for minute, calls in result.all()]
