"""The journal: every HTTP exchange with eBay and every refresh attempt, as recorded.

The "token refresh terminal" reads from here, newest first, filtered by the organization that
owns the account (never by who looked). Quota usage is counted from the same records: what was
actually sent is what eBay counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector import models as m
from ebay_connector.database import Database
from ebay_connector.exchange import ExchangeRecord


@dataclass(frozen=True)
class ExchangeRow:
    id: int
    created_at: datetime
    action: str
    trigger: str
    actor: str | None
    account_id: int | None
    account_label: str | None
    organization_id: int | None
    environment: str
    outcome: str
    sent: bool
    status: int | None
    duration_ms: float | None
    error: str | None
    token_fingerprint: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    account_id: int | None
    organization_id: int
    trigger: str
    actor: str | None
    started_at: datetime
    finished_at: datetime
    outcome: str
    error_code: str | None
    error_message: str | None
    old_expires_at: datetime | None
    new_expires_at: datetime | None
    exchange_id: int | None


def _exchange_row(row: Any) -> ExchangeRow:
    values = dict(row._mapping)
    values.pop("account_label", None)
    return ExchangeRow(account_label=row.account_label, **values)


_EXCHANGE_COLUMNS = (*m.EbayExchange.__table__.c, m.EbayAccount.label.label("account_label"))


def _exchange_values(
    record: ExchangeRecord,
    account_id: int | None,
    organization_id: int | None,
    environment: str,
    trigger: str,
    now: datetime,
    actor: str | None = None,
) -> dict[str, Any]:
    return {
        "action": record.action.value,
        "trigger": trigger,
        "actor": actor,
        "account_id": account_id,
        "organization_id": organization_id,
        "environment": environment,
        "outcome": record.outcome,
        "sent": record.sent,
        "request": record.request_dict(),
        "response": record.response_dict(),
        "status": record.status,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "token_fingerprint": record.token_fingerprint,
        "created_at": now,
    }


async def insert_exchange(
    conn: AsyncConnection,
    record: ExchangeRecord,
    account_id: int | None,
    organization_id: int | None,
    environment: str,
    trigger: str,
    now: datetime,
    actor: str | None = None,
) -> int:
    values = _exchange_values(record, account_id, organization_id, environment, trigger, now, actor)
    result = await conn.execute(
        sa.insert(m.EbayExchange).values(**values).returning(m.EbayExchange.id)
    )
    return int(result.scalar_one())


async def insert_exchange_and_attempt(
    conn: AsyncConnection,
    record: ExchangeRecord,
    attempt: dict[str, Any],
    *,
    environment: str,
    trigger: str,
    now: datetime,
) -> tuple[int, int]:
    """Insert an exchange and the attempt pointing at it; returns (attempt id, exchange id).

    On PostgreSQL one statement (a data-modifying CTE), so a worker refresh costs four round
    trips: BEGIN, the token UPDATE, this, COMMIT. SQLite has no DML in CTEs: two statements,
    in-process and cheap.
    """
    account_id, organization_id = attempt["account_id"], attempt["organization_id"]
    actor = attempt.get("actor")
    values = _exchange_values(record, account_id, organization_id, environment, trigger, now, actor)
    if conn.dialect.name != "postgresql":
        exchange_id = await insert_exchange(
            conn, record, account_id, organization_id, environment, trigger, now, actor
        )
        result = await conn.execute(
            sa.insert(m.RefreshAttempt)
            .values(**attempt, exchange_id=exchange_id)
            .returning(m.RefreshAttempt.id)
        )
        return int(result.scalar_one()), exchange_id
    new_exchange = (
        sa.insert(m.EbayExchange).values(**values).returning(m.EbayExchange.id).cte("new_exchange")
    )
    columns = m.RefreshAttempt.__table__.c
    selected = sa.select(
        *(sa.literal(value, type_=columns[name].type) for name, value in attempt.items()),
        new_exchange.c.id,
    )
    result = await conn.execute(
        sa.insert(m.RefreshAttempt)
        .from_select([*attempt, "exchange_id"], selected)
        .returning(m.RefreshAttempt.id, m.RefreshAttempt.exchange_id)
    )
    row: Any = result.one()
    return int(row.id), int(row.exchange_id)


class Journal:
    """Reads and writes exchange and attempt records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_exchange(
        self,
        record: ExchangeRecord,
        *,
        trigger: str,
        environment: str,
        account_id: int | None = None,
        organization_id: int | None = None,
        actor: str | None = None,
    ) -> int:
        """Record an exchange that belongs to no refresh (e.g. a failed connect)."""
        async with self.db.transaction() as conn:
            return await insert_exchange(
                conn,
                record,
                account_id,
                organization_id,
                environment,
                trigger,
                self.db.clock(),
                actor,
            )

    async def exchanges(
        self,
        *,
        organization_id: int | None = None,
        account_id: int | None = None,
        trigger: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[ExchangeRow]:
        """The unified terminal: newest first, filtered by the account's owner organization."""
        query = sa.select(*_EXCHANGE_COLUMNS).outerjoin(
            m.EbayAccount, m.EbayAccount.id == m.EbayExchange.account_id
        )
        filters: list[sa.ColumnElement[bool]] = []
        if organization_id is not None:
            filters.append(m.EbayExchange.organization_id == organization_id)
        if account_id is not None:
            filters.append(m.EbayExchange.account_id == account_id)
        if trigger is not None:
            filters.append(m.EbayExchange.trigger == trigger)
        if outcome is not None:
            filters.append(m.EbayExchange.outcome == outcome)
        if since is not None:
            filters.append(m.EbayExchange.created_at >= since)
        if after_id is not None:
            filters.append(m.EbayExchange.id > after_id)
        if before_id is not None:
            filters.append(m.EbayExchange.id < before_id)
        query = query.where(*filters).order_by(m.EbayExchange.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_exchange_row(row) for row in (await conn.execute(query)).all()]

    async def exchange(self, exchange_id: int) -> ExchangeRow | None:
        query = (
            sa.select(*_EXCHANGE_COLUMNS)
            .outerjoin(m.EbayAccount, m.EbayAccount.id == m.EbayExchange.account_id)
            .where(m.EbayExchange.id == exchange_id)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
            return None if row is None else _exchange_row(row)

    async def attempts(self, account_id: int, limit: int = 5) -> list[AttemptRow]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.RefreshAttempt.__table__)
                .where(m.RefreshAttempt.account_id == account_id)
                .order_by(m.RefreshAttempt.id.desc())
                .limit(limit)
            )
            return [AttemptRow(**dict(row._mapping)) for row in result]

    async def quota_usage(self, since: datetime) -> dict[str, int]:
        """Calls actually sent per grant type (action) since ``since``."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayExchange.action, sa.func.count())
                .where(m.EbayExchange.sent.is_(True), m.EbayExchange.created_at >= since)
                .group_by(m.EbayExchange.action)
            )
            return {str(action): int(n) for action, n in result.all()}

    async def refresh_outcomes_since(
        self, organization_id: int, since: datetime
    ) -> list[tuple[datetime, str]]:
        """(time, outcome) of every refresh exchange of the organization since ``since``."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.EbayExchange.created_at, m.EbayExchange.outcome).where(
                    m.EbayExchange.organization_id == organization_id,
                    m.EbayExchange.action == "refresh_token",
                    m.EbayExchange.created_at >= since,
                )
            )
            return [(row[0], str(row[1])) for row in rows.all()]
