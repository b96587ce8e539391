"""An organization's allowed return URLs for connect sessions (``orgs return-urls``)."""

from __future__ import annotations

import sqlalchemy as sa

from ebay_connector.db import models as m
from ebay_connector.db.database import Database


class ReturnUrls:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, organization_id: int, url: str) -> bool:
        """Allow ``url`` (already normalized); False when it was allowed already."""
        async with self.db.transaction() as conn:
            known = await conn.execute(
                sa.select(m.ReturnUrl.id).where(
                    m.ReturnUrl.organization_id == organization_id, m.ReturnUrl.url == url
                )
            )
            if known.first() is not None:
                return False
            await conn.execute(
                sa.insert(m.ReturnUrl).values(
                    organization_id=organization_id, url=url, created_at=self.db.clock()
                )
            )
            return True

    async def list(self, organization_id: int) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.ReturnUrl.url)
                .where(m.ReturnUrl.organization_id == organization_id)
                .order_by(m.ReturnUrl.url)
            )
            return [str(r[0]) for r in rows]

    async def remove(self, organization_id: int, url: str) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(m.ReturnUrl).where(
                    m.ReturnUrl.organization_id == organization_id, m.ReturnUrl.url == url
                )
            )
            return bool(result.rowcount)
