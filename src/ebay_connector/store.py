"""The token store: every SQL statement of the product, on SQLite and PostgreSQL alike.

Nothing above this module sees ``sqlalchemy.exc``: database failures become ``StoreError`` /
``StoreUnavailable`` here, chained to their cause. Values cross the boundary as frozen
dataclasses, never as ORM objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ebay_connector import models as m
from ebay_connector.clock import Clock, utcnow
from ebay_connector.errors import (
    AccountNotFound,
    SchemaMissing,
    StoreError,
    StoreUnavailable,
    UsageError,
)
from ebay_connector.exchange import ExchangeRecord
from ebay_connector.token_state import TokenState, Transition

SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str) -> str:
    """Map the operator-facing URL to the async driver SQLAlchemy should use."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and write-ahead ``BEGIN IMMEDIATE``."""
    full = async_url(url)
    if make_url(full).get_backend_name() == "sqlite":
        path = sqlite_path(full)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(full, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction starts (see "begin" below).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that reads and then writes fails with SQLITE_BUSY instead of
            # waiting when another process (CLI beside the demo) wrote meanwhile; IMMEDIATE waits.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {}
    if schema is not None:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(full, pool_size=10, max_overflow=20, connect_args=connect_args)


@dataclass(frozen=True)
class AccountToken:
    """An account with its token row: everything a refresh decision needs."""

    account_id: int
    organization_id: int
    environment: str
    ebay_user_id: str
    ebay_username: str
    label: str
    scopes: tuple[str, ...]
    last_used_at: datetime | None
    created_at: datetime
    access_token_ciphertext: str | None
    access_expires_at: datetime | None
    refresh_token_ciphertext: str | None
    refresh_expires_at: datetime | None
    state: TokenState
    state_reason: str | None
    last_error_code: str | None
    last_error_message: str | None
    failures_in_row: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    version: int
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True)
class ExchangeRow:
    id: int
    created_at: datetime
    action: str
    trigger: str
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
    last_error: str | None
    cycles: int
    updated_at: datetime


@dataclass(frozen=True)
class NewTokens:
    """Ciphertexts and expiries of freshly granted tokens (connect or reconnect)."""

    access_token_ciphertext: str
    access_expires_at: datetime
    refresh_token_ciphertext: str
    refresh_expires_at: datetime | None
    next_attempt_at: datetime


_ACCOUNT_TOKEN_COLUMNS = (
    m.EbayAccount.id,
    m.EbayAccount.organization_id,
    m.EbayAccount.environment,
    m.EbayAccount.ebay_user_id,
    m.EbayAccount.ebay_username,
    m.EbayAccount.label,
    m.EbayAccount.scopes,
    m.EbayAccount.last_used_at,
    m.EbayAccount.created_at,
    m.EbayToken.access_token_ciphertext,
    m.EbayToken.access_expires_at,
    m.EbayToken.refresh_token_ciphertext,
    m.EbayToken.refresh_expires_at,
    m.EbayToken.state,
    m.EbayToken.state_reason,
    m.EbayToken.last_error_code,
    m.EbayToken.last_error_message,
    m.EbayToken.failures_in_row,
    m.EbayToken.next_attempt_at,
    m.EbayToken.last_attempt_at,
    m.EbayToken.last_success_at,
    m.EbayToken.version,
    m.EbayToken.lease_owner,
    m.EbayToken.lease_until,
)


def _account_token(row: Any) -> AccountToken:
    values = list(row)
    values[6] = tuple(str(values[6]).split())
    values[13] = TokenState(values[13])
    return AccountToken(*values)


def _exchange_row(row: Any) -> ExchangeRow:
    values = dict(row._mapping)
    values.pop("account_label", None)
    return ExchangeRow(account_label=row.account_label, **values)


_EXCHANGE_COLUMNS = (*m.EbayExchange.__table__.c, m.EbayAccount.label.label("account_label"))


MAX_DRIVER_MESSAGE = 200


def _driver_message(exc: BaseException) -> str:
    """The driver's own first line (e.g. 'role "x" does not exist'), without SQL or parameters."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    first = lines[0] if lines else ""
    # asyncpg errors arrive wrapped as "<class 'asyncpg...'>: message".
    first = first.split(">: ", 1)[-1]
    text = f"{cause.__class__.__name__}: {first}" if first else cause.__class__.__name__
    return text[:MAX_DRIVER_MESSAGE]


def _is_missing_table(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc))
    return (
        "no such table" in text
        or "UndefinedTable" in text
        or ("does not exist" in text and ("relation" in text))
    )


class Store:
    """Owns the engine and every statement. Built by :meth:`open`, ended by :meth:`close`."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    @classmethod
    def open(cls, url: str, *, clock: Clock = utcnow, schema: str | None = None) -> Store:
        return cls(create_engine(url, schema=schema), clock=clock)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; database exceptions leave as StoreError, chained."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except sqlalchemy.exc.IntegrityError as exc:
            raise StoreError(f"constraint violated: {_driver_message(exc)}") from exc
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, OSError) as exc:
            if _is_missing_table(exc):
                raise SchemaMissing(
                    "the database has no schema yet: run `ebay-connector db upgrade`"
                ) from exc
            raise StoreUnavailable(f"database unavailable: {_driver_message(exc)}") from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if _is_missing_table(exc):
                raise SchemaMissing(
                    "the database has no schema yet: run `ebay-connector db upgrade`"
                ) from exc
            raise StoreError(f"database error: {_driver_message(exc)}") from exc

    async def ping(self) -> None:
        async with self._tx() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def create_schema(self) -> None:
        """Create all tables directly (tests); operators use ``db upgrade`` (Alembic)."""
        async with self._tx() as conn:
            await conn.run_sync(m.Base.metadata.create_all)

    # Organizations ---------------------------------------------------------------------------

    async def create_organization(self, name: str) -> int:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.insert(m.Organization)
                .values(name=name, created_at=self.clock())
                .returning(m.Organization.id)
            )
            return int(result.scalar_one())

    async def organization_id(self, name: str) -> int | None:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(m.Organization.id).where(m.Organization.name == name)
            )
            value = result.scalar_one_or_none()
            return None if value is None else int(value)

    async def delete_organization(self, organization_id: int) -> None:
        async with self._tx() as conn:
            await conn.execute(
                sa.delete(m.Organization).where(m.Organization.id == organization_id)
            )

    # Accounts --------------------------------------------------------------------------------

    async def save_connection(
        self,
        *,
        organization_id: int,
        environment: str,
        ebay_user_id: str,
        ebay_username: str,
        label: str,
        scopes: Sequence[str],
        encrypt: Any,
        access_token: str,
        access_expires_at: datetime,
        refresh_token: str,
        refresh_expires_at: datetime | None,
        next_attempt_at: datetime,
        exchanges: Sequence[ExchangeRecord],
        actor: str | None = None,
    ) -> tuple[int, bool]:
        """Create the account, or replace the tokens of the same eBay user in this organization.

        ``encrypt(account_id, field, plaintext)`` is called inside the transaction because the
        ciphertext is bound to the account id, which a new account only gets here. Returns
        ``(account_id, created)``. One transaction: the account, its tokens, the exchanges of
        the connect and the attempt are all written, or none.
        """
        now = self.clock()
        async with self._tx() as conn:
            existing = await conn.execute(
                sa.select(m.EbayAccount.id).where(
                    m.EbayAccount.organization_id == organization_id,
                    m.EbayAccount.environment == environment,
                    m.EbayAccount.ebay_user_id == ebay_user_id,
                )
            )
            account_id = existing.scalar_one_or_none()
            created = account_id is None
            if account_id is None:
                result = await conn.execute(
                    sa.insert(m.EbayAccount)
                    .values(
                        organization_id=organization_id,
                        environment=environment,
                        ebay_user_id=ebay_user_id,
                        ebay_username=ebay_username,
                        label=label,
                        scopes=" ".join(scopes),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(m.EbayAccount.id)
                )
                account_id = int(result.scalar_one())
            else:
                await conn.execute(
                    sa.update(m.EbayAccount)
                    .where(m.EbayAccount.id == account_id)
                    .values(ebay_username=ebay_username, scopes=" ".join(scopes), updated_at=now)
                )
            token_values: dict[str, Any] = {
                "access_token_ciphertext": encrypt(account_id, "access_token", access_token),
                "access_expires_at": access_expires_at,
                "refresh_token_ciphertext": encrypt(account_id, "refresh_token", refresh_token),
                "refresh_expires_at": refresh_expires_at,
                "state": TokenState.ACTIVE.value,
                "state_reason": None,
                "last_error_code": None,
                "last_error_message": None,
                "failures_in_row": 0,
                "next_attempt_at": next_attempt_at,
                "last_success_at": now,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": now,
            }
            if created:
                await conn.execute(
                    sa.insert(m.EbayToken).values(account_id=account_id, version=0, **token_values)
                )
            else:
                await conn.execute(
                    sa.update(m.EbayToken)
                    .where(m.EbayToken.account_id == account_id)
                    .values(version=m.EbayToken.version + 1, **token_values)
                )
            exchange_ids = [
                await self._insert_exchange(
                    conn, record, account_id, organization_id, environment, "connect", now
                )
                for record in exchanges
            ]
            await conn.execute(
                sa.insert(m.RefreshAttempt).values(
                    account_id=account_id,
                    organization_id=organization_id,
                    trigger="connect",
                    actor=actor,
                    started_at=now,
                    finished_at=now,
                    outcome="ok",
                    new_expires_at=access_expires_at,
                    exchange_id=exchange_ids[0] if exchange_ids else None,
                )
            )
            return int(account_id), created

    async def set_refresh_ciphertext(self, account_id: int, ciphertext: str) -> None:
        """Overwrite the stored refresh ciphertext (demo and repair tooling only)."""
        async with self._tx() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(refresh_token_ciphertext=ciphertext, version=m.EbayToken.version + 1)
            )

    async def set_access_expiry(self, account_id: int, when: datetime, due: datetime) -> None:
        async with self._tx() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(access_expires_at=when, next_attempt_at=due)
            )

    async def set_refresh_expiry(self, account_id: int, when: datetime) -> None:
        async with self._tx() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(refresh_expires_at=when)
            )

    async def account_token(self, account_id: int) -> AccountToken | None:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(*_ACCOUNT_TOKEN_COLUMNS)
                .join(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
                .where(m.EbayAccount.id == account_id)
            )
            row = result.first()
            return None if row is None else _account_token(row)

    async def accounts(self, organization_id: int | None = None) -> list[AccountToken]:
        query = (
            sa.select(*_ACCOUNT_TOKEN_COLUMNS)
            .join(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
            .order_by(m.EbayAccount.id)
        )
        if organization_id is not None:
            query = query.where(m.EbayAccount.organization_id == organization_id)
        async with self._tx() as conn:
            return [_account_token(row) for row in (await conn.execute(query)).all()]

    async def resolve_account(self, ref: str) -> int:
        """An account by id, label or eBay username (exactly one must match)."""
        conditions = [m.EbayAccount.label == ref, m.EbayAccount.ebay_username == ref]
        if ref.isdigit():
            conditions.append(m.EbayAccount.id == int(ref))
        async with self._tx() as conn:
            rows = (
                await conn.execute(sa.select(m.EbayAccount.id).where(sa.or_(*conditions)))
            ).all()
        ids = sorted({int(r[0]) for r in rows})
        if not ids:
            raise AccountNotFound(f"no account with id, label or eBay username {ref!r}")
        if len(ids) > 1:
            raise UsageError(f"{ref!r} matches several accounts ({ids}); use the id")
        return ids[0]

    async def delete_account(self, account_id: int) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.delete(m.EbayAccount).where(m.EbayAccount.id == account_id)
            )
            return bool(result.rowcount)

    async def touch_last_used(self, account_id: int, now: datetime, older_than: datetime) -> None:
        """Record use, at most once per throttle period: a hot token API must not write per call."""
        async with self._tx() as conn:
            await conn.execute(
                sa.update(m.EbayAccount)
                .where(
                    m.EbayAccount.id == account_id,
                    sa.or_(
                        m.EbayAccount.last_used_at.is_(None),
                        m.EbayAccount.last_used_at < older_than,
                    ),
                )
                .values(last_used_at=now)
            )

    # The refresh lease -----------------------------------------------------------------------

    async def try_lease(
        self,
        account_id: int,
        owner: str,
        now: datetime,
        until: datetime,
        *,
        expected_version: int | None = None,
    ) -> bool:
        """Take the account's refresh lease if it is free or expired (one atomic statement).

        With ``expected_version`` the lease is only taken if nobody changed the token since the
        caller read it: a compare-and-set that is correct without row locks, on any backend.
        """
        conditions = [
            m.EbayToken.account_id == account_id,
            sa.or_(m.EbayToken.lease_until.is_(None), m.EbayToken.lease_until < now),
        ]
        if expected_version is not None:
            conditions.append(m.EbayToken.version == expected_version)
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(m.EbayToken)
                .where(*conditions)
                .values(lease_owner=owner, lease_until=until)
            )
            return result.rowcount == 1

    async def release_lease(self, account_id: int, owner: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id, m.EbayToken.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def due_accounts(self, now: datetime, limit: int) -> list[int]:
        """Active accounts whose next attempt is due and whose lease is free, most urgent first."""
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(m.EbayToken.account_id)
                .where(
                    m.EbayToken.state == TokenState.ACTIVE.value,
                    m.EbayToken.next_attempt_at <= now,
                    sa.or_(m.EbayToken.lease_until.is_(None), m.EbayToken.lease_until < now),
                )
                .order_by(m.EbayToken.next_attempt_at)
                .limit(limit)
            )
            return [int(r[0]) for r in result.all()]

    async def count_by_state(self) -> dict[str, int]:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(m.EbayToken.state, sa.func.count()).group_by(m.EbayToken.state)
            )
            return {str(state): int(n) for state, n in result.all()}

    async def finish_refresh(
        self,
        *,
        account: AccountToken,
        lease_owner: str,
        trigger: str,
        actor: str | None,
        started_at: datetime,
        outcome: str,
        error_message: str | None,
        exchange: ExchangeRecord,
        transition: Transition,
        access_token_ciphertext: str | None,
        refresh_token_ciphertext: str | None,
        refresh_expires_at: datetime | None,
    ) -> tuple[int, int] | None:
        """Record the attempt and its exchange and move the token, in ONE transaction.

        The token update is guarded by the lease: if the account was deleted meanwhile nothing is
        written (returns ``None``); if the lease was lost (the call outlived it) the records are
        kept but the token is left to the new holder. Returns ``(attempt_id, exchange_id)``.
        """
        now = self.clock()
        async with self._tx() as conn:
            values: dict[str, Any] = {
                "state": transition.state.value,
                "state_reason": transition.reason,
                "last_error_code": transition.last_error_code,
                "last_error_message": transition.last_error_message,
                "failures_in_row": transition.failures_in_row,
                "next_attempt_at": transition.next_attempt_at,
                "last_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
                "version": m.EbayToken.version + 1,
                "updated_at": now,
            }
            if transition.access_expires_at is not None:
                values["access_expires_at"] = transition.access_expires_at
                values["last_success_at"] = now
            if access_token_ciphertext is not None:
                values["access_token_ciphertext"] = access_token_ciphertext
            if refresh_token_ciphertext is not None:
                values["refresh_token_ciphertext"] = refresh_token_ciphertext
                values["refresh_expires_at"] = refresh_expires_at
            updated = await conn.execute(
                sa.update(m.EbayToken)
                .where(
                    m.EbayToken.account_id == account.account_id,
                    m.EbayToken.lease_owner == lease_owner,
                )
                .values(**values)
            )
            if updated.rowcount == 0:
                still_there = await conn.execute(
                    sa.select(m.EbayAccount.id).where(m.EbayAccount.id == account.account_id)
                )
                if still_there.first() is None:
                    return None
            exchange_id = await self._insert_exchange(
                conn,
                exchange,
                account.account_id,
                account.organization_id,
                account.environment,
                trigger,
                now,
            )
            result = await conn.execute(
                sa.insert(m.RefreshAttempt)
                .values(
                    account_id=account.account_id,
                    organization_id=account.organization_id,
                    trigger=trigger,
                    actor=actor,
                    started_at=started_at,
                    finished_at=now,
                    outcome=outcome,
                    error_code=None if outcome == "ok" else outcome,
                    error_message=error_message,
                    old_expires_at=account.access_expires_at,
                    new_expires_at=transition.access_expires_at,
                    exchange_id=exchange_id,
                )
                .returning(m.RefreshAttempt.id)
            )
            return int(result.scalar_one()), exchange_id

    # Exchanges and attempts ------------------------------------------------------------------

    @staticmethod
    async def _insert_exchange(
        conn: AsyncConnection,
        record: ExchangeRecord,
        account_id: int | None,
        organization_id: int | None,
        environment: str,
        trigger: str,
        now: datetime,
    ) -> int:
        result = await conn.execute(
            sa.insert(m.EbayExchange)
            .values(
                action=record.action.value,
                trigger=trigger,
                account_id=account_id,
                organization_id=organization_id,
                environment=environment,
                outcome=record.outcome,
                sent=record.sent,
                request=record.request_dict(),
                response=record.response_dict(),
                status=record.status,
                duration_ms=record.duration_ms,
                error=record.error,
                token_fingerprint=record.token_fingerprint,
                created_at=now,
            )
            .returning(m.EbayExchange.id)
        )
        return int(result.scalar_one())

    async def record_exchange(
        self,
        record: ExchangeRecord,
        *,
        trigger: str,
        environment: str,
        account_id: int | None = None,
        organization_id: int | None = None,
    ) -> int:
        """Record an exchange that belongs to no refresh (e.g. a failed connect)."""
        async with self._tx() as conn:
            return await self._insert_exchange(
                conn, record, account_id, organization_id, environment, trigger, self.clock()
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
        async with self._tx() as conn:
            return [_exchange_row(row) for row in (await conn.execute(query)).all()]

    async def exchange(self, exchange_id: int) -> ExchangeRow | None:
        query = (
            sa.select(*_EXCHANGE_COLUMNS)
            .outerjoin(m.EbayAccount, m.EbayAccount.id == m.EbayExchange.account_id)
            .where(m.EbayExchange.id == exchange_id)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
            return None if row is None else _exchange_row(row)

    async def attempts(self, account_id: int, limit: int = 5) -> list[AttemptRow]:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(m.RefreshAttempt.__table__)
                .where(m.RefreshAttempt.account_id == account_id)
                .order_by(m.RefreshAttempt.id.desc())
                .limit(limit)
            )
            return [AttemptRow(**dict(row._mapping)) for row in result]

    # Heartbeats ------------------------------------------------------------------------------

    async def save_heartbeat(self, beat: HeartbeatRow) -> None:
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
            "cycles": beat.cycles,
            "updated_at": beat.updated_at,
        }
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(m.WorkerHeartbeat)
                .where(m.WorkerHeartbeat.instance_id == beat.instance_id)
                .values(**values)
            )
            if result.rowcount == 0:
                await conn.execute(
                    sa.insert(m.WorkerHeartbeat).values(instance_id=beat.instance_id, **values)
                )

    async def delete_heartbeat(self, instance_id: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                sa.delete(m.WorkerHeartbeat).where(m.WorkerHeartbeat.instance_id == instance_id)
            )

    async def heartbeats(self) -> list[HeartbeatRow]:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.select(m.WorkerHeartbeat.__table__).order_by(m.WorkerHeartbeat.updated_at.desc())
            )
            return [HeartbeatRow(**dict(row._mapping)) for row in result]
