"""The journal: every HTTP exchange with eBay and every refresh attempt, as recorded.

The "token refresh terminal" reads from here, newest first, filtered by the organization that
owns the account (never by who looked). Quota usage is counted from the same records: what was
actually sent is what eBay counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector.core import quota
from ebay_connector.core.exchange import Action, ExchangeRecord, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db import models as m
from ebay_connector.db.database import Database


@dataclass(frozen=True)
class ExchangeRow:
    id: int
    created_at: datetime
    action: Action
    trigger: Trigger
    actor: str | None
    account_id: int | None
    account_label: str | None
    organization_id: int | None
    environment: str
    outcome: Outcome
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
    trigger: Trigger
    actor: str | None
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    error_code: str | None
    error_message: str | None
    old_expires_at: datetime | None
    new_expires_at: datetime | None
    exchange_id: int | None


def _exchange_row(row: Any) -> ExchangeRow:
    values = dict(row._mapping)
    values["action"] = Action(values["action"])
    values["trigger"] = Trigger(values["trigger"])
    values["outcome"] = Outcome(values["outcome"])
    return ExchangeRow(**values)


def _attempt_row(row: Any) -> AttemptRow:
    values = dict(row._mapping)
    values["trigger"] = Trigger(values["trigger"])
    values["outcome"] = Outcome(values["outcome"])
    return AttemptRow(**values)


_EXCHANGE_COLUMNS = (*m.EbayExchange.__table__.c, m.EbayAccount.label.label("account_label"))


def _exchange_values(
    record: ExchangeRecord,
    account_id: int | None,
    organization_id: int | None,
    environment: str,
    trigger: Trigger,
    now: datetime,
    actor: str | None = None,
) -> dict[str, Any]:
    return {
        "action": record.action.value,
        "trigger": trigger.value,
        "actor": actor,
        "account_id": account_id,
        "organization_id": organization_id,
        "environment": environment,
        "outcome": record.outcome.value,
        "sent": record.sent,
        "request": record.request_dict(),
        "response": record.response_dict(),
        "status": record.status,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "token_fingerprint": record.token_fingerprint,
        "created_at": now,
    }


def _like_anywhere(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _exchange_filters(
    *,
    organization_id: int | None = None,
    account_id: int | None = None,
    trigger: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    account_search: str | None = None,
    failures_only: bool = False,
) -> list[sa.ColumnElement[bool]]:
    filters: list[sa.ColumnElement[bool]] = []
    if organization_id is not None:
        filters.append(m.EbayExchange.organization_id == organization_id)
    if account_id is not None:
        filters.append(m.EbayExchange.account_id == account_id)
    if trigger is not None:
        filters.append(m.EbayExchange.trigger == trigger)
    if outcome is not None:
        filters.append(m.EbayExchange.outcome == outcome)
    if failures_only:
        filters.append(m.EbayExchange.outcome != Outcome.OK.value)
    if since is not None:
        filters.append(m.EbayExchange.created_at >= since)
    if after_id is not None:
        filters.append(m.EbayExchange.id > after_id)
    if before_id is not None:
        filters.append(m.EbayExchange.id < before_id)
    if account_search:
        pattern = _like_anywhere(account_search)
        filters.append(
            sa.or_(
                sa.func.lower(m.EbayAccount.label).like(pattern, escape="\\"),
                sa.func.lower(m.EbayAccount.ebay_username).like(pattern, escape="\\"),
            )
        )
    return filters


_EXCHANGES: sa.Table = m.EbayExchange.__table__  # type: ignore[assignment]
_ATTEMPTS: sa.Table = m.RefreshAttempt.__table__  # type: ignore[assignment]
# Core statements built once: a refresh pays for neither building them nor the ORM's
# bulk-persistence layer (see docs/decisions.md, "Statements built once, with bind parameters").
_INSERT_EXCHANGE = sa.insert(_EXCHANGES).returning(_EXCHANGES.c.id)  # one exchange, no refresh
_INSERT_EXCHANGE_ROWS = sa.insert(_EXCHANGES)  # a refresh batch on SQLite: explicit ids
_INSERT_ATTEMPT_ROWS = sa.insert(_ATTEMPTS)
_LAST_IDS = sa.select(
    sa.select(sa.func.max(_EXCHANGES.c.id)).scalar_subquery(),
    sa.select(sa.func.max(_ATTEMPTS.c.id)).scalar_subquery(),
)


async def insert_exchange(
    conn: AsyncConnection,
    record: ExchangeRecord,
    account_id: int | None,
    organization_id: int | None,
    environment: str,
    trigger: Trigger,
    now: datetime,
    actor: str | None = None,
) -> int:
    values = _exchange_values(record, account_id, organization_id, environment, trigger, now, actor)
    result = await conn.execute(_INSERT_EXCHANGE, values)
    return int(result.scalar_one())


@dataclass(frozen=True)
class Attempt:
    """What a refresh attempt holds beyond what it shares with its exchange (account,
    organization, trigger, actor)."""

    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    error_message: str | None
    old_expires_at: datetime | None
    new_expires_at: datetime | None

    @property
    def error_code(self) -> str | None:
        """The column ``error_code``: the outcome's code when it failed."""
        return None if self.outcome is Outcome.OK else self.outcome.value

    def columns(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome.value,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "old_expires_at": self.old_expires_at,
            "new_expires_at": self.new_expires_at,
        }


@dataclass(frozen=True)
class JournalEntry:
    """An exchange to record and, when it is a refresh's, the attempt that points at it."""

    exchange: ExchangeRecord
    account_id: int | None
    organization_id: int | None
    environment: str
    trigger: Trigger
    actor: str | None
    attempt: Attempt | None  # None: the exchange alone


_SHARED_FIELDS = ("account_id", "organization_id", "trigger", "actor")

# PostgreSQL: any number of entries in ONE statement. Each column travels as one array
# parameter, so the text (and asyncpg's prepared statement) is the same for every batch size;
# exchange ids are drawn first so each attempt can point at its exchange.
_INSERT_ENTRIES = sa.text(
    """
WITH entry AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('ebay_exchanges', 'id')) AS exchange_id, u.*
    FROM unnest(
        CAST(:action AS text[]), CAST(:trigger AS text[]), CAST(:actor AS text[]),
        CAST(:account_id AS integer[]), CAST(:organization_id AS integer[]),
        CAST(:environment AS text[]), CAST(:outcome AS text[]), CAST(:sent AS boolean[]),
        CAST(:request AS text[]), CAST(:response AS text[]), CAST(:status AS integer[]),
        CAST(:duration_ms AS double precision[]), CAST(:error AS text[]),
        CAST(:token_fingerprint AS text[]), CAST(:has_attempt AS boolean[]),
        CAST(:started_at AS timestamptz[]), CAST(:finished_at AS timestamptz[]),
        CAST(:a_outcome AS text[]), CAST(:error_code AS text[]), CAST(:error_message AS text[]),
        CAST(:old_expires_at AS timestamptz[]), CAST(:new_expires_at AS timestamptz[])
    ) WITH ORDINALITY AS u(
        action, trigger, actor, account_id, organization_id, environment, outcome, sent,
        request, response, status, duration_ms, error, token_fingerprint, has_attempt,
        started_at, finished_at, a_outcome, error_code, error_message, old_expires_at,
        new_expires_at, ord
    )
),
new_exchange AS (
    INSERT INTO ebay_exchanges (
        id, action, trigger, actor, account_id, organization_id, environment, outcome, sent,
        request, response, status, duration_ms, error, token_fingerprint, created_at
    )
    SELECT exchange_id, action, trigger, actor, account_id, organization_id, environment,
           outcome, sent, CAST(request AS json), CAST(response AS json), status, duration_ms,
           error, token_fingerprint, CAST(:now AS timestamptz)
    FROM entry
),
new_attempt AS (
    INSERT INTO refresh_attempts (
        account_id, organization_id, trigger, actor, started_at, finished_at, outcome,
        error_code, error_message, old_expires_at, new_expires_at, exchange_id
    )
    SELECT account_id, organization_id, trigger, actor, started_at, finished_at, a_outcome,
           error_code, error_message, old_expires_at, new_expires_at, exchange_id
    FROM entry WHERE has_attempt
    RETURNING id, exchange_id
)
SELECT entry.exchange_id, new_attempt.id AS attempt_id
FROM entry LEFT JOIN new_attempt ON new_attempt.exchange_id = entry.exchange_id
ORDER BY entry.ord
"""
)


def _json_text(value: Mapping[str, object] | None) -> str | None:
    return None if value is None else json.dumps(value)


def _utc(value: datetime | None) -> datetime | None:
    # The bulk statement bypasses UTCDateTime; it must get what that type would have accepted.
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


def _entry_columns(entries: Sequence[JournalEntry]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "action", "trigger", "actor", "account_id", "organization_id", "environment",
            "outcome", "sent", "request", "response", "status", "duration_ms", "error",
            "token_fingerprint", "has_attempt", "started_at", "finished_at", "a_outcome",
            "error_code", "error_message", "old_expires_at", "new_expires_at",
        )
    }  # fmt: skip
    for entry in entries:
        record = entry.exchange
        attempt = entry.attempt.columns() if entry.attempt is not None else {}
        columns["action"].append(record.action.value)
        columns["trigger"].append(entry.trigger.value)
        columns["actor"].append(entry.actor)
        columns["account_id"].append(entry.account_id)
        columns["organization_id"].append(entry.organization_id)
        columns["environment"].append(entry.environment)
        columns["outcome"].append(record.outcome.value)
        columns["sent"].append(record.sent)
        columns["request"].append(_json_text(record.request_dict()))
        columns["response"].append(_json_text(record.response_dict()))
        columns["status"].append(record.status)
        columns["duration_ms"].append(record.duration_ms)
        columns["error"].append(record.error)
        columns["token_fingerprint"].append(record.token_fingerprint)
        columns["has_attempt"].append(entry.attempt is not None)
        columns["started_at"].append(_utc(attempt.get("started_at")))
        columns["finished_at"].append(_utc(attempt.get("finished_at")))
        columns["a_outcome"].append(attempt.get("outcome"))
        columns["error_code"].append(attempt.get("error_code"))
        columns["error_message"].append(attempt.get("error_message"))
        columns["old_expires_at"].append(_utc(attempt.get("old_expires_at")))
        columns["new_expires_at"].append(_utc(attempt.get("new_expires_at")))
    return columns


async def insert_entries(
    conn: AsyncConnection, entries: Sequence[JournalEntry], now: datetime
) -> list[tuple[int | None, int]]:
    """Insert exchanges and their attempts; returns (attempt id or None, exchange id) in order.

    On PostgreSQL one statement for the whole batch (see :data:`_INSERT_ENTRIES`), so a group of
    refreshes costs the same round trips as one; on SQLite three (the last ids, then one
    executemany per table).
    """
    if not entries:
        return []
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {**_entry_columns(entries), "now": _utc(now)}
        rows = (await conn.execute(_INSERT_ENTRIES, params)).all()
        return [
            (None if row.attempt_id is None else int(row.attempt_id), int(row.exchange_id))
            for row in rows
        ]
    # SQLite: two executemany calls (one hop each to the database thread, not one per row).
    # Ids are handed out here, as SQLite itself would (max + 1): the caller's transaction holds
    # SQLite's write lock (BEGIN IMMEDIATE), so nobody else can insert meanwhile.
    last = (await conn.execute(_LAST_IDS)).one()
    next_exchange, next_attempt = int(last[0] or 0) + 1, int(last[1] or 0) + 1
    exchanges: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    ids: list[tuple[int | None, int]] = []
    for entry in entries:
        values = _exchange_values(
            entry.exchange,
            entry.account_id,
            entry.organization_id,
            entry.environment,
            entry.trigger,
            now,
            entry.actor,
        )
        exchange_id = next_exchange
        next_exchange += 1
        exchanges.append({"id": exchange_id, **values})
        attempt_id = None
        if entry.attempt is not None:
            attempt_id = next_attempt
            next_attempt += 1
            shared = {name: values[name] for name in _SHARED_FIELDS}
            attempts.append(
                {"id": attempt_id, **shared, **entry.attempt.columns(), "exchange_id": exchange_id}
            )
        ids.append((attempt_id, exchange_id))
    await conn.execute(_INSERT_EXCHANGE_ROWS, exchanges)
    if attempts:
        await conn.execute(_INSERT_ATTEMPT_ROWS, attempts)
    return ids


class Journal:
    """Reads and writes exchange and attempt records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_exchange(
        self,
        record: ExchangeRecord,
        *,
        trigger: Trigger,
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
        account_search: str | None = None,
        failures_only: bool = False,
        oldest_first: bool = False,
    ) -> list[ExchangeRow]:
        """The unified terminal: newest first, filtered by the account's owner organization.

        Keyset pages: ``before_id`` for older entries, ``after_id`` for newer ones; with
        ``oldest_first`` the entries just after ``after_id`` come first, so a reader catching up
        on a burst takes it in order and skips none. ``account_search`` matches the label or
        the eBay username (case-insensitive, anywhere); ``failures_only`` is every outcome but
        ``ok``.
        """
        filters = _exchange_filters(
            organization_id=organization_id,
            account_id=account_id,
            trigger=trigger,
            outcome=outcome,
            since=since,
            after_id=after_id,
            before_id=before_id,
            account_search=account_search,
            failures_only=failures_only,
        )
        order = m.EbayExchange.id.asc() if oldest_first else m.EbayExchange.id.desc()
        query = (
            sa.select(*_EXCHANGE_COLUMNS)
            .outerjoin(m.EbayAccount, m.EbayAccount.id == m.EbayExchange.account_id)
            .where(*filters)
            .order_by(order)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [_exchange_row(row) for row in (await conn.execute(query)).all()]

    async def manual_calls_since(
        self, organization_id: int, account_id: int, since: datetime, limit: int
    ) -> tuple[list[datetime], list[datetime]]:
        """When eBay was last called for refreshes a person asked for (admin and debug), by any
        process: at most ``limit`` times each for the organization and for the account."""
        manual = (
            m.EbayExchange.trigger.in_((Trigger.ADMIN.value, Trigger.DEBUG.value)),
            m.EbayExchange.sent.is_(True),
            m.EbayExchange.created_at > since,
        )
        newest = m.EbayExchange.created_at.desc()
        async with self.db.read() as conn:
            by_org = await conn.execute(
                sa.select(m.EbayExchange.created_at)
                .where(m.EbayExchange.organization_id == organization_id, *manual)
                .order_by(newest)
                .limit(limit)
            )
            by_account = await conn.execute(
                sa.select(m.EbayExchange.created_at)
                .where(m.EbayExchange.account_id == account_id, *manual)
                .order_by(newest)
                .limit(limit)
            )
            return list(by_org.scalars()), list(by_account.scalars())

    async def count_exchanges(
        self,
        *,
        organization_id: int | None = None,
        account_id: int | None = None,
        trigger: str | None = None,
        outcome: str | None = None,
        after_id: int | None = None,
        account_search: str | None = None,
        failures_only: bool = False,
    ) -> int:
        """How many entries the same filters match (e.g. newer ones still to show)."""
        filters = _exchange_filters(
            organization_id=organization_id,
            account_id=account_id,
            trigger=trigger,
            outcome=outcome,
            after_id=after_id,
            account_search=account_search,
            failures_only=failures_only,
        )
        query = (
            sa.select(sa.func.count())
            .select_from(m.EbayExchange)
            .outerjoin(m.EbayAccount, m.EbayAccount.id == m.EbayExchange.account_id)
            .where(*filters)
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

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
            return [_attempt_row(row) for row in result]

    async def quota_usage(self, since: datetime) -> dict[str, int]:
        """Calls actually sent per grant type (action) since ``since``."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayExchange.action, sa.func.count())
                .where(m.EbayExchange.sent.is_(True), m.EbayExchange.created_at >= since)
                .group_by(m.EbayExchange.action)
            )
            return {str(action): int(n) for action, n in result.all()}

    async def last_success(self, action: str, environment: str) -> datetime | None:
        """When eBay last answered ``action`` with success in ``environment`` (None: never)."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(sa.func.max(m.EbayExchange.created_at)).where(
                    m.EbayExchange.action == action,
                    m.EbayExchange.environment == environment,
                    m.EbayExchange.outcome == Outcome.OK.value,
                )
            )
            return result.scalar_one_or_none()

    async def quota_projection(self, now: datetime, limit: int) -> quota.Projection:
        """The refresh grants the next 24 h will take at the recent pace (``quota.project``)."""
        grant = Action.REFRESH_TOKEN.value
        since = now - quota.WINDOW
        used = (await self.quota_usage(since)).get(grant, 0)
        oldest = await self.nth_call_since(grant, since, 1) if used else None
        history = now - oldest if oldest is not None else timedelta(0)
        since_pace = now - quota.pace_span(history)
        recent = (await self.quota_usage(since_pace)).get(grant, 0) if used else 0
        return quota.project(used, recent, history, limit)

    async def nth_call_since(self, action: str, since: datetime, n: int) -> datetime | None:
        """When the ``n``-th oldest call of this grant type since ``since`` was sent (1-based)."""
        async with self.db.read() as conn:
            found = await conn.execute(
                sa.select(m.EbayExchange.created_at)
                .where(
                    m.EbayExchange.action == action,
                    m.EbayExchange.sent.is_(True),
                    m.EbayExchange.created_at >= since,
                )
                .order_by(m.EbayExchange.created_at)
                .offset(max(0, n - 1))
                .limit(1)
            )
            return found.scalar_one_or_none()

    async def refresh_outcomes_since(
        self, organization_id: int, since: datetime
    ) -> list[tuple[datetime, str]]:
        """(time, outcome) of every refresh exchange of the organization since ``since``."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.EbayExchange.created_at, m.EbayExchange.outcome).where(
                    m.EbayExchange.organization_id == organization_id,
                    m.EbayExchange.action == Action.REFRESH_TOKEN.value,
                    m.EbayExchange.created_at >= since,
                )
            )
            return [(row[0], str(row[1])) for row in rows.all()]

    # Retention ---------------------------------------------------------------------------------
    # The statements of :mod:`ebay_connector.service.retention`; what to keep is decided there.
    # Every batch is one short transaction that deletes exchanges together with the attempts that
    # point at them, so an attempt never outlives its exchange by a prune (nor the reverse).
    # On PostgreSQL candidates are taken FOR UPDATE SKIP LOCKED: replicas pruning at the same
    # time split the work instead of queueing on each other's row locks.

    async def newest_ok_and_failed(self) -> frozenset[int]:
        """Ids of the newest ``ok`` and the newest not-``ok`` exchange of every account."""
        ok = sa.case((m.EbayExchange.outcome == Outcome.OK.value, 1), else_=0)
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(sa.func.max(m.EbayExchange.id))
                .where(m.EbayExchange.account_id.is_not(None))
                .group_by(m.EbayExchange.account_id, ok)
            )
            return frozenset(int(i) for i in result.scalars())

    async def prune_older(
        self, cutoff: datetime, *, keep: frozenset[int], after_id: int, limit: int
    ) -> PruneBatch:
        """Delete up to ``limit`` exchanges recorded before ``cutoff`` (ids above ``after_id``,
        oldest first) except those in ``keep``, with their attempts."""
        query = (
            sa.select(m.EbayExchange.id)
            .where(m.EbayExchange.created_at < cutoff, m.EbayExchange.id > after_id)
            .order_by(m.EbayExchange.id)
            .limit(limit)
        )
        return await self._prune(query, keep)

    async def accounts_over(self, cap: int) -> list[int]:
        """Accounts with more than ``cap`` exchanges (counted on the account index)."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayExchange.account_id)
                .where(m.EbayExchange.account_id.is_not(None))
                .group_by(m.EbayExchange.account_id)
                .having(sa.func.count() > cap)
                .order_by(m.EbayExchange.account_id)
            )
            ids: list[Any] = list(result.scalars())
            return [int(i) for i in ids]

    async def nth_newest_time(self, account_id: int, n: int) -> datetime | None:
        """When the account's ``n``-th newest exchange was recorded (None: it has fewer)."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayExchange.created_at)
                .where(m.EbayExchange.account_id == account_id)
                .order_by(m.EbayExchange.created_at.desc())
                .offset(n - 1)
                .limit(1)
            )
            value: datetime | None = result.scalar_one_or_none()
            return value

    async def prune_account_before(
        self, account_id: int, before: datetime, *, keep: frozenset[int], limit: int
    ) -> PruneBatch:
        """Delete up to ``limit`` of the account's exchanges recorded before ``before``, oldest
        first, except those in ``keep``, with their attempts."""
        query = (
            sa.select(m.EbayExchange.id)
            .where(m.EbayExchange.account_id == account_id, m.EbayExchange.created_at < before)
            .order_by(m.EbayExchange.created_at)
            .limit(limit)
        )
        return await self._prune(query, keep)

    async def prune_orphan_attempts(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` attempts without an exchange that started before ``cutoff``."""
        query = (
            sa.select(m.RefreshAttempt.id)
            .where(m.RefreshAttempt.exchange_id.is_(None), m.RefreshAttempt.started_at < cutoff)
            .limit(limit)
        )
        async with self.db.transaction() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = [int(i) for i in (await conn.execute(query)).scalars()]
            if not ids:
                return 0
            result = await conn.execute(
                sa.delete(m.RefreshAttempt).where(m.RefreshAttempt.id.in_(ids))
            )
            return int(result.rowcount)

    async def _prune(self, candidates: sa.Select[Any], keep: frozenset[int]) -> PruneBatch:
        async with self.db.transaction() as conn:
            if conn.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            found: list[Any] = list((await conn.execute(candidates)).scalars())
            seen = [int(i) for i in found]
            doomed = [i for i in seen if i not in keep]
            if not doomed:
                return PruneBatch(len(seen), seen[-1] if seen else None, 0, 0)
            # Attempts first: the foreign key would otherwise set their exchange_id to NULL.
            attempts = await conn.execute(
                sa.delete(m.RefreshAttempt).where(m.RefreshAttempt.exchange_id.in_(doomed))
            )
            exchanges = await conn.execute(
                sa.delete(m.EbayExchange).where(m.EbayExchange.id.in_(doomed))
            )
            return PruneBatch(len(seen), seen[-1], int(exchanges.rowcount), int(attempts.rowcount))


@dataclass(frozen=True)
class PruneBatch:
    """What one prune transaction looked at and deleted."""

    scanned: int  # candidates seen (kept ones included)
    last_id: int | None  # the last candidate seen, where the next batch continues
    exchanges: int
    attempts: int
