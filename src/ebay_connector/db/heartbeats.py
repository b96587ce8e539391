"""Worker heartbeats: one row per worker instance; liveness is data.

A heartbeat older than twice its interval is ``stale`` (derived when read, never stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ebay_connector.core.outcome import AppCredentials
from ebay_connector.db import models as m
from ebay_connector.db.database import Database

STALE_FACTOR = 2


@dataclass(frozen=True)
class HeartbeatRow:
    instance_id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    interval_seconds: int
    last_cycle_started_at: datetime | None
    last_cycle_finished_at: datetime | None
    status: str
    counts: dict[str, Any]
    last_error: str | None  # for people; what /readyz decides on is app_credentials
    app_credentials: AppCredentials | None  # eBay's word in the last cycle (None: no word)
    cycles: int
    updated_at: datetime

    def stale(self, now: datetime) -> bool:
        return (now - self.updated_at).total_seconds() > STALE_FACTOR * self.interval_seconds

    def status_at(self, now: datetime) -> str:
        return "stale" if self.stale(now) else self.status


def _heartbeat_row(row: Any) -> HeartbeatRow:
    values = dict(row._mapping)
    if values["app_credentials"] is not None:
        values["app_credentials"] = AppCredentials(values["app_credentials"])
    return HeartbeatRow(**values)


class Heartbeats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, beat: HeartbeatRow) -> None:
        values = {
            "host": beat.host,
            "pid": beat.pid,
            "version": beat.version,
            "started_at": beat.started_at,
            "interval_seconds": beat.interval_seconds,
            "last_cycle_started_at": beat.last_cycle_started_at,
            "last_cycle_finished_at": beat.last_cycle_finished_at,
            "status": beat.status,
            "counts": beat.counts,
            "last_error": beat.last_error,
            "app_credentials": None if beat.app_credentials is None else beat.app_credentials.value,
            "cycles": beat.cycles,
            "updated_at": beat.updated_at,
        }
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.WorkerHeartbeat)
                .where(m.WorkerHeartbeat.instance_id == beat.instance_id)
                .values(**values)
            )
            if result.rowcount == 0:
                await conn.execute(
                    sa.insert(m.WorkerHeartbeat).values(instance_id=beat.instance_id, **values)
                )

    async def delete(self, instance_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.delete(m.WorkerHeartbeat).where(m.WorkerHeartbeat.instance_id == instance_id)
            )

    async def all(self) -> list[HeartbeatRow]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.WorkerHeartbeat.__table__).order_by(m.WorkerHeartbeat.updated_at.desc())
            )
            return [_heartbeat_row(row) for row in result]

    async def prune(self, older_than: datetime) -> list[str]:
        """Delete heartbeats not updated since ``older_than``; returns the pruned instance ids."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(m.WorkerHeartbeat)
                .where(m.WorkerHeartbeat.updated_at < older_than)
                .returning(m.WorkerHeartbeat.instance_id)
            )
            return [str(r[0]) for r in result.all()]
