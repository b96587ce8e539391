"""The notice outbox: webhook endpoints, notice marks, events and their deliveries.

Owns every statement on ``webhook_endpoints``, ``notice_marks``, ``notice_events`` and
``webhook_deliveries``. An event and its deliveries (one per endpoint of the organization) are
written in one transaction with the compare-and-set of the account's mark, so an event exists
exactly when its transition was recorded, and two worker replicas never emit it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector.core import notices
from ebay_connector.core.clock import as_utc
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.errors import WebhookExists


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class EndpointRow:
    id: int
    organization_id: int
    url: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    endpoint_id: int
    event_id: str  # the idempotency id the receiver sees
    event_type: str
    account_id: int | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: float | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Candidate:
    """An account whose notices may be due, with its current mark (version None: no mark)."""

    account_id: int
    organization_id: int
    label: str
    ebay_username: str
    facts: notices.TokenFacts
    last_error_code: str | None
    mark: notices.Mark
    mark_version: int | None


@dataclass(frozen=True)
class Claimed:
    """A delivery leased for one attempt."""

    delivery_id: int
    attempt: int  # 1 for the first
    endpoint_id: int
    url: str
    secret_ciphertext: str
    event_id: str
    event_type: str
    payload: dict[str, Any]


_DELIVERY_COLUMNS = (
    m.WebhookDelivery.id,
    m.WebhookDelivery.endpoint_id,
    m.NoticeEvent.event_id,
    m.NoticeEvent.type.label("event_type"),
    m.NoticeEvent.account_id,
    m.WebhookDelivery.status,
    m.WebhookDelivery.attempts,
    m.WebhookDelivery.next_attempt_at,
    m.WebhookDelivery.last_status_code,
    m.WebhookDelivery.last_error,
    m.WebhookDelivery.last_duration_ms,
    m.WebhookDelivery.last_attempt_at,
    m.WebhookDelivery.delivered_at,
    m.WebhookDelivery.created_at,
)
_ENDPOINT_COLUMNS = tuple(c for c in m.WebhookEndpoint.__table__.c if c.name != "secret_ciphertext")


def _insert_ignoring_conflicts(conn: AsyncConnection, table: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on both backends (the loser of a race inserts nothing)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _mark_values(mark: notices.Mark) -> dict[str, Any]:
    return {
        "condition": mark.condition.value,
        "reason": mark.reason,
        "failing_since": mark.failing_since,
        "expiry_for": mark.expiry_for,
        "expiry_notified_days": mark.expiry_notified_days,
    }


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Endpoints -------------------------------------------------------------------------------

    async def create_endpoint(
        self, organization_id: int, url: str, description: str, seal: Callable[[int], str]
    ) -> EndpointRow:
        """A new endpoint; ``seal(endpoint_id)`` gives the secret's ciphertext bound to the row."""
        now = self.db.clock()
        async with self.db.transaction() as conn:
            # The unique (organization, URL) decides, also between two adds racing each other.
            result = await conn.execute(
                _insert_ignoring_conflicts(conn, m.WebhookEndpoint)
                .values(
                    organization_id=organization_id,
                    url=url,
                    description=description,
                    secret_ciphertext="",  # sealed below, in the same transaction
                    created_at=now,
                )
                .returning(m.WebhookEndpoint.id)
            )
            inserted = result.scalar_one_or_none()
            if inserted is None:
                raise WebhookExists(
                    f"this organization already has an endpoint at {url}: use it, or remove it "
                    "first to add it again with a new secret"
                )
            endpoint_id = int(inserted)
            await conn.execute(
                sa.update(m.WebhookEndpoint)
                .where(m.WebhookEndpoint.id == endpoint_id)
                .values(secret_ciphertext=seal(endpoint_id))
            )
        return EndpointRow(endpoint_id, organization_id, url, description, now)

    async def endpoints(self, organization_id: int) -> list[EndpointRow]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(*_ENDPOINT_COLUMNS)
                .where(m.WebhookEndpoint.organization_id == organization_id)
                .order_by(m.WebhookEndpoint.id)
            )
            return [EndpointRow(**dict(r._mapping)) for r in rows]

    async def endpoint(self, organization_id: int, endpoint_id: int) -> EndpointRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(*_ENDPOINT_COLUMNS).where(
                        m.WebhookEndpoint.id == endpoint_id,
                        m.WebhookEndpoint.organization_id == organization_id,
                    )
                )
            ).first()
        return None if row is None else EndpointRow(**dict(row._mapping))

    async def delete_endpoint(self, organization_id: int, endpoint_id: int) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(m.WebhookEndpoint).where(
                    m.WebhookEndpoint.id == endpoint_id,
                    m.WebhookEndpoint.organization_id == organization_id,
                )
            )
            return bool(result.rowcount)

    async def organizations_with_endpoints(self) -> list[int]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(m.WebhookEndpoint.organization_id).distinct())
            return sorted(int(r[0]) for r in rows)

    # Marks and events --------------------------------------------------------------------------

    async def candidates(
        self, now: datetime, horizon: timedelta, after_account: int, limit: int
    ) -> list[Candidate]:
        """Accounts whose notices may be due (anything not plainly healthy), by account id."""
        t, a, mk = m.EbayToken, m.EbayAccount, m.NoticeMark
        query = (
            sa.select(
                a.id,
                a.organization_id,
                a.label,
                a.ebay_username,
                t.state,
                t.state_reason,
                t.failures_in_row,
                t.access_expires_at,
                t.refresh_expires_at,
                t.last_error_code,
                mk.condition,
                mk.reason,
                mk.failing_since,
                mk.expiry_for,
                mk.expiry_notified_days,
                mk.version,
            )
            .join(t, t.account_id == a.id)
            .outerjoin(mk, mk.account_id == a.id)
            .where(
                a.id > after_account,
                sa.or_(
                    t.state != "active",
                    t.failures_in_row > 0,
                    t.refresh_expires_at <= now + horizon,
                    sa.and_(mk.condition.is_not(None), mk.condition != notices.Condition.OK),
                    mk.failing_since.is_not(None),
                ),
            )
            .order_by(a.id)
            .limit(limit)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for r in rows:
            mark = (
                notices.INITIAL
                if r.version is None
                else notices.Mark(
                    notices.Condition(r.condition),
                    r.reason,
                    r.failing_since,
                    r.expiry_for,
                    r.expiry_notified_days,
                )
            )
            facts = notices.TokenFacts(
                r.state,
                r.state_reason,
                r.failures_in_row,
                r.access_expires_at,
                r.refresh_expires_at,
            )
            out.append(
                Candidate(
                    r.id,
                    r.organization_id,
                    r.label,
                    r.ebay_username,
                    facts,
                    r.last_error_code,
                    mark,
                    r.version,
                )
            )
        return out

    async def commit_mark(
        self,
        candidate: Candidate,
        new: notices.Mark,
        events: Sequence[tuple[str, dict[str, Any]]],
        now: datetime,
    ) -> bool:
        """Move the account's mark from the version read to ``new`` and write its events.

        False (nothing written) when another replica moved the mark first.
        """
        async with self.db.transaction() as conn:
            if candidate.mark_version is None:
                result = await conn.execute(
                    _insert_ignoring_conflicts(conn, m.NoticeMark)
                    .values(
                        account_id=candidate.account_id,
                        version=1,
                        updated_at=now,
                        **_mark_values(new),
                    )
                    .returning(m.NoticeMark.account_id)
                )
                won = result.first() is not None
            else:
                result = await conn.execute(
                    sa.update(m.NoticeMark)
                    .where(
                        m.NoticeMark.account_id == candidate.account_id,
                        m.NoticeMark.version == candidate.mark_version,
                    )
                    .values(version=m.NoticeMark.version + 1, updated_at=now, **_mark_values(new))
                )
                won = result.rowcount == 1
            if not won:
                return False
            for event_type, payload in events:
                await _write_event(
                    conn, candidate.organization_id, event_type, payload, None,
                    candidate.account_id, None, now,
                )  # fmt: skip
        return True

    async def emit(
        self,
        organization_id: int,
        event_type: str,
        payload: dict[str, Any],
        *,
        dedup_key: str | None = None,
        endpoint_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Write one event and its deliveries; the delivery ids (none when the key was used)."""
        now = self.db.clock()
        async with self.db.transaction() as conn:
            return await _write_event(
                conn, organization_id, event_type, payload, dedup_key, None, endpoint_ids, now
            )

    async def events(self, organization_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """The organization's events, newest first (payloads as sent)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.NoticeEvent.type, m.NoticeEvent.account_id, m.NoticeEvent.payload)
                .where(m.NoticeEvent.organization_id == organization_id)
                .order_by(m.NoticeEvent.id.desc())
                .limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    async def last_emitted(self, event_type: str) -> datetime | None:
        """When an event of this type was last written, for any organization."""
        async with self.db.read() as conn:
            found = await conn.execute(
                sa.select(sa.func.max(m.NoticeEvent.created_at)).where(
                    m.NoticeEvent.type == event_type
                )
            )
            value = found.scalar_one_or_none()
            return None if value is None else as_utc(value)

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` events older than ``before`` (their deliveries go with them),
        never one with a delivery still pending. Keeps the outbox bounded like the journal."""
        pending = sa.select(m.WebhookDelivery.id).where(
            m.WebhookDelivery.event_id == m.NoticeEvent.id,
            m.WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        old = (
            sa.select(m.NoticeEvent.id)
            .where(m.NoticeEvent.created_at < before, ~sa.exists(pending))
            .order_by(m.NoticeEvent.id)
            .limit(limit)
        )
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(m.NoticeEvent).where(m.NoticeEvent.id.in_(old.scalar_subquery()))
            )
            return int(result.rowcount or 0)

    # Deliveries --------------------------------------------------------------------------------

    async def deliveries(
        self, organization_id: int, endpoint_id: int | None = None, limit: int = 50
    ) -> list[DeliveryRow]:
        """The delivery log, newest first."""
        query = (
            sa.select(*_DELIVERY_COLUMNS)
            .join(m.NoticeEvent, m.NoticeEvent.id == m.WebhookDelivery.event_id)
            .join(m.WebhookEndpoint, m.WebhookEndpoint.id == m.WebhookDelivery.endpoint_id)
            .where(m.WebhookEndpoint.organization_id == organization_id)
            .order_by(m.WebhookDelivery.id.desc())
            .limit(limit)
        )
        if endpoint_id is not None:
            query = query.where(m.WebhookDelivery.endpoint_id == endpoint_id)
        async with self.db.read() as conn:
            return [DeliveryRow(**dict(r._mapping)) for r in await conn.execute(query)]

    async def delivery(self, delivery_id: int) -> DeliveryRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(*_DELIVERY_COLUMNS)
                    .join(m.NoticeEvent, m.NoticeEvent.id == m.WebhookDelivery.event_id)
                    .where(m.WebhookDelivery.id == delivery_id)
                )
            ).first()
        return None if row is None else DeliveryRow(**dict(row._mapping))

    async def due(self, now: datetime, limit: int) -> list[int]:
        """Due deliveries in a fair order: each endpoint's oldest first, then each one's second…

        So neither an endpoint with a backlog nor an organization with many failing ones can
        keep another's delivery waiting behind theirs.
        """
        d = m.WebhookDelivery
        turn = (
            sa.func.row_number()
            .over(partition_by=d.endpoint_id, order_by=(d.next_attempt_at, d.id))
            .label("turn")
        )
        ready = (
            sa.select(d.id, d.next_attempt_at, turn)
            .where(
                d.status == DeliveryStatus.PENDING,
                d.next_attempt_at <= now,
                sa.or_(d.lease_until.is_(None), d.lease_until < now),
            )
            .subquery()
        )
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(ready.c.id)
                .order_by(ready.c.turn, ready.c.next_attempt_at, ready.c.id)
                .limit(limit)
            )
            return [int(r[0]) for r in rows]

    async def claim(self, delivery_id: int, now: datetime, lease: timedelta) -> Claimed | None:
        """Lease one due delivery for an attempt (a guarded compare-and-set: one claimer wins)."""
        d = m.WebhookDelivery
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(d)
                .where(
                    d.id == delivery_id,
                    d.status == DeliveryStatus.PENDING,
                    sa.or_(d.lease_until.is_(None), d.lease_until < now),
                )
                .values(lease_until=now + lease, attempts=d.attempts + 1, last_attempt_at=now)
            )
            if result.rowcount != 1:
                return None
            row = (
                await conn.execute(
                    sa.select(
                        d.attempts,
                        d.endpoint_id,
                        m.WebhookEndpoint.url,
                        m.WebhookEndpoint.secret_ciphertext,
                        m.NoticeEvent.event_id,
                        m.NoticeEvent.type,
                        m.NoticeEvent.payload,
                    )
                    .join(m.WebhookEndpoint, m.WebhookEndpoint.id == d.endpoint_id)
                    .join(m.NoticeEvent, m.NoticeEvent.id == d.event_id)
                    .where(d.id == delivery_id)
                )
            ).one()
        return Claimed(
            delivery_id,
            int(row.attempts),
            int(row.endpoint_id),
            str(row.url),
            str(row.secret_ciphertext),
            str(row.event_id),
            str(row.type),
            dict(row.payload),
        )

    async def finish(
        self,
        delivery_id: int,
        *,
        status: str,
        status_code: int | None,
        error: str | None,
        duration_ms: float | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        d = m.WebhookDelivery
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(d)
                .where(d.id == delivery_id)
                .values(
                    status=status,
                    last_status_code=status_code,
                    last_error=error,
                    last_duration_ms=duration_ms,
                    next_attempt_at=next_attempt_at,
                    lease_until=None,
                    delivered_at=now if status == DeliveryStatus.DELIVERED else None,
                )
            )


async def _write_event(
    conn: AsyncConnection,
    organization_id: int,
    event_type: str,
    payload: dict[str, Any],
    dedup_key: str | None,
    account_id: int | None,
    endpoint_ids: Sequence[int] | None,
    now: datetime,
) -> list[int]:
    event_id = str(uuid.uuid4())
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": now.isoformat(),
        "organization_id": organization_id,
        "data": payload,
    }
    result = await conn.execute(
        _insert_ignoring_conflicts(conn, m.NoticeEvent)
        .values(
            event_id=event_id,
            organization_id=organization_id,
            type=event_type,
            account_id=account_id,
            dedup_key=dedup_key,
            payload=body,
            created_at=now,
        )
        .returning(m.NoticeEvent.id)
    )
    row = result.first()
    if row is None:
        return []  # this deduplication key was already sent
    query = sa.select(m.WebhookEndpoint.id).where(
        m.WebhookEndpoint.organization_id == organization_id
    )
    if endpoint_ids is not None:
        query = query.where(m.WebhookEndpoint.id.in_(endpoint_ids))
    targets = [int(r[0]) for r in await conn.execute(query.order_by(m.WebhookEndpoint.id))]
    ids = []
    for endpoint_id in targets:
        inserted = await conn.execute(
            sa.insert(m.WebhookDelivery)
            .values(
                event_id=int(row[0]),
                endpoint_id=endpoint_id,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .returning(m.WebhookDelivery.id)
        )
        ids.append(int(inserted.scalar_one()))
    return ids
