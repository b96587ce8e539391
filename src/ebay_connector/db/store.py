"""The token store: accounts, their tokens, the refresh lease and the worker's claims.

Owns every statement on ``organizations``, ``ebay_accounts`` and ``ebay_tokens``; exchange and
attempt records belong to :mod:`ebay_connector.db.journal`, written here only inside the
transaction of the refresh they record. Values cross the boundary as frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ebay_connector.core.exchange import ExchangeRecord, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.token_state import TokenState, Transition
from ebay_connector.core.usage import Use
from ebay_connector.db import journal
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.db.group_commit import GroupCommit
from ebay_connector.errors import AccountNotFound, ConnectFailed, StoreUnavailable, UsageError


@dataclass(frozen=True)
class EndUser:
    """A program's own id and name for a seller (``end_user_id`` / ``end_user_label``)."""

    id: str
    label: str | None = None


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
    refresh_policy: str | None
    last_used_at: datetime | None
    use_interval_s: float | None
    use_jitter_s: float | None
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
    end_user_id: str | None = None
    end_user_label: str | None = None

    @property
    def use(self) -> Use:
        """What is known of the account's use, for the refresh policy."""
        return Use(self.last_used_at, self.use_interval_s, self.use_jitter_s)


_ACCOUNT_COLUMNS = ("organization_id", "environment", "ebay_user_id", "ebay_username", "label")
_ACCOUNT_TOKEN_COLUMNS = (
    m.EbayAccount.id.label("account_id"),
    *(getattr(m.EbayAccount, name) for name in _ACCOUNT_COLUMNS),
    m.EbayAccount.scopes,
    m.EbayAccount.refresh_policy,
    m.EbayAccount.last_used_at,
    m.EbayAccount.use_interval_s,
    m.EbayAccount.use_jitter_s,
    m.EbayAccount.created_at,
    *(c for c in m.EbayToken.__table__.c if c.name not in ("account_id", "updated_at")),
    m.EbayAccount.end_user_id,
    m.EbayAccount.end_user_label,
)
# The hottest read (every token request): built once, not per call.
_ACCOUNT_TOKEN_BY_ID = (
    sa.select(*_ACCOUNT_TOKEN_COLUMNS)
    .join(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
    .where(m.EbayAccount.id == sa.bindparam("account_id"))
)


def _never_reused_id(dialect: str) -> dict[str, Any]:
    """On SQLite, an explicit id above every id that ever existed (see ``models.RetiredId``)."""
    if dialect != "sqlite":
        return {}  # a sequence: never reuses
    highest = sa.select(sa.func.coalesce(sa.func.max(m.EbayAccount.id), 0)).scalar_subquery()
    retired = (
        sa.select(sa.func.coalesce(sa.func.max(m.RetiredId.last_id), 0))
        .where(m.RetiredId.table_name == m.EbayAccount.__tablename__)
        .scalar_subquery()
    )
    # SQLite's max() with two arguments is the scalar maximum.
    return {"id": sa.func.max(highest, retired) + 1}


# PostgreSQL: a whole batch's token rows in ONE statement, the same text for every batch size
# (one array parameter per column). The rules are _FINISH_ANY's: state, error, schedule and
# lease always; a new access token's expiry (and last_success_at) only on success; a
# ciphertext or refresh expiry that is NULL here leaves the stored one alone.
_FINISH_TOKENS = sa.text(
    """
UPDATE ebay_tokens AS t SET
    state = v.state,
    state_reason = v.state_reason,
    last_error_code = v.last_error_code,
    last_error_message = v.last_error_message,
    failures_in_row = v.failures_in_row,
    next_attempt_at = v.next_attempt_at,
    last_attempt_at = CAST(:now AS timestamptz),
    lease_owner = NULL,
    lease_until = NULL,
    updated_at = CAST(:now AS timestamptz),
    version = t.version + 1,
    access_expires_at = COALESCE(v.access_expires_at, t.access_expires_at),
    last_success_at = CASE WHEN v.access_expires_at IS NULL
                           THEN t.last_success_at ELSE CAST(:now AS timestamptz) END,
    access_token_ciphertext = COALESCE(v.access_ct, t.access_token_ciphertext),
    refresh_token_ciphertext = COALESCE(v.refresh_ct, t.refresh_token_ciphertext),
    refresh_expires_at = CASE WHEN v.refresh_ct IS NULL
                              THEN t.refresh_expires_at ELSE v.refresh_expires_at END
FROM unnest(
    CAST(:account_id AS integer[]), CAST(:lease_owner AS text[]), CAST(:state AS text[]),
    CAST(:state_reason AS text[]), CAST(:last_error_code AS text[]),
    CAST(:last_error_message AS text[]), CAST(:failures_in_row AS integer[]),
    CAST(:next_attempt_at AS timestamptz[]), CAST(:access_expires_at AS timestamptz[]),
    CAST(:access_ct AS text[]), CAST(:refresh_ct AS text[]),
    CAST(:refresh_expires_at AS timestamptz[])
) AS v(
    account_id, lease_owner, state, state_reason, last_error_code, last_error_message,
    failures_in_row, next_attempt_at, access_expires_at, access_ct, refresh_ct,
    refresh_expires_at
)
WHERE t.account_id = v.account_id AND t.lease_owner = v.lease_owner
RETURNING t.account_id
"""
)


def _finish_any_statement() -> sa.Update:
    """One UPDATE for every shape of finished refresh (success, failure, a rotated refresh
    token), so SQLite's executemany can take a whole batch. Guarded by the lease; a NULL
    ciphertext or expiry leaves the stored one alone. PostgreSQL: the same in _FINISH_TOKENS.
    """
    tokens: sa.Table = m.EbayToken.__table__  # type: ignore[assignment]

    def value(name: str) -> sa.BindParameter[Any]:
        return sa.bindparam(f"v_{name}", type_=tokens.c[name].type)

    now = sa.bindparam("v_now", type_=m.UTCDateTime())
    granted, new_refresh = value("access_expires_at"), value("refresh_token_ciphertext")
    return (
        sa.update(tokens)
        .where(
            tokens.c.account_id == sa.bindparam("b_account_id"),
            tokens.c.lease_owner == sa.bindparam("b_lease_owner"),
        )
        .values(
            {
                **{
                    name: value(name)
                    for name in (
                        "state",
                        "state_reason",
                        "last_error_code",
                        "last_error_message",
                        "failures_in_row",
                        "next_attempt_at",
                    )
                },
                "last_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": now,
                "version": tokens.c.version + 1,
                "access_expires_at": sa.func.coalesce(granted, tokens.c.access_expires_at),
                "last_success_at": sa.case(
                    (granted.is_(None), tokens.c.last_success_at), else_=now
                ),
                "access_token_ciphertext": sa.func.coalesce(
                    value("access_token_ciphertext"), tokens.c.access_token_ciphertext
                ),
                "refresh_token_ciphertext": sa.func.coalesce(
                    new_refresh, tokens.c.refresh_token_ciphertext
                ),
                "refresh_expires_at": sa.case(
                    (new_refresh.is_(None), tokens.c.refresh_expires_at),
                    else_=value("refresh_expires_at"),
                ),
            }
        )
    )


_FINISH_ANY = _finish_any_statement()
_LEASE_OWNERS = sa.select(m.EbayToken.account_id, m.EbayToken.lease_owner).where(
    m.EbayToken.account_id.in_(sa.bindparam("ids", expanding=True))
)


def _finish_any_params(write: RefreshWrite, now: datetime) -> dict[str, Any]:
    transition = write.transition
    return {
        "b_account_id": write.account.account_id,
        "b_lease_owner": write.lease_owner,
        "v_now": now,
        "v_state": transition.state.value,
        "v_state_reason": transition.reason,
        "v_last_error_code": transition.last_error_code,
        "v_last_error_message": transition.last_error_message,
        "v_failures_in_row": transition.failures_in_row,
        "v_next_attempt_at": transition.next_attempt_at,
        "v_access_expires_at": transition.access_expires_at,
        "v_access_token_ciphertext": write.access_token_ciphertext,
        "v_refresh_token_ciphertext": write.refresh_token_ciphertext,
        "v_refresh_expires_at": write.refresh_expires_at,
    }


async def _update_tokens(
    conn: AsyncConnection, writes: Sequence[RefreshWrite], now: datetime
) -> set[int]:
    """Apply each write whose lease still holds; returns the ids of the accounts updated."""
    if conn.dialect.name != "postgresql":
        # SQLite: the transaction holds the write lock (BEGIN IMMEDIATE), so the leases read
        # here cannot change before the UPDATE; then one executemany for all applied rows.
        owners = await conn.execute(
            _LEASE_OWNERS, {"ids": [write.account.account_id for write in writes]}
        )
        holder = {int(row.account_id): row.lease_owner for row in owners}
        mine = [w for w in writes if holder.get(w.account.account_id) == w.lease_owner]
        if mine:
            await conn.execute(_FINISH_ANY, [_finish_any_params(w, now) for w in mine])
        return {write.account.account_id for write in mine}
    # Sorted, so rows are locked in one order by every replica.
    ordered = sorted(writes, key=lambda write: write.account.account_id)
    params: dict[str, Any] = {
        "now": now,
        "account_id": [w.account.account_id for w in ordered],
        "lease_owner": [w.lease_owner for w in ordered],
        "state": [w.transition.state.value for w in ordered],
        "state_reason": [w.transition.reason for w in ordered],
        "last_error_code": [w.transition.last_error_code for w in ordered],
        "last_error_message": [w.transition.last_error_message for w in ordered],
        "failures_in_row": [w.transition.failures_in_row for w in ordered],
        "next_attempt_at": [w.transition.next_attempt_at for w in ordered],
        "access_expires_at": [w.transition.access_expires_at for w in ordered],
        "access_ct": [w.access_token_ciphertext for w in ordered],
        "refresh_ct": [w.refresh_token_ciphertext for w in ordered],
        "refresh_expires_at": [w.refresh_expires_at for w in ordered],
    }
    # The statement bypasses UTCDateTime; it must get only what that type would have accepted.
    stamps = [now, *params["next_attempt_at"], *params["access_expires_at"]]
    stamps += params["refresh_expires_at"]
    if any(stamp is not None and stamp.tzinfo is None for stamp in stamps):
        raise ValueError("naive datetime given to a UTC column")
    result = await conn.execute(_FINISH_TOKENS, params)
    return {int(row.account_id) for row in result}


async def _journal_entry(
    conn: AsyncConnection, write: RefreshWrite, applied: set[int], now: datetime
) -> journal.JournalEntry:
    """What to record for a write: its exchange and attempt, or the exchange alone if the
    account was deleted meanwhile (an HTTP call that happened is never unlogged)."""
    account = write.account
    error_message = write.error_message
    if account.account_id not in applied:
        exists = await conn.execute(
            sa.select(m.EbayAccount.id).where(m.EbayAccount.id == account.account_id)
        )
        if exists.first() is None:
            organization = await conn.execute(
                sa.select(m.Organization.id).where(m.Organization.id == account.organization_id)
            )
            return journal.JournalEntry(
                exchange=write.exchange,
                account_id=None,
                organization_id=account.organization_id if organization.first() else None,
                environment=account.environment,
                trigger=write.trigger,
                actor=write.actor,
                attempt=None,
            )
        error_message = (error_message or "") + " (lease lost: token not updated)"
    applied_here = account.account_id in applied
    return journal.JournalEntry(
        exchange=write.exchange,
        account_id=account.account_id,
        organization_id=account.organization_id,
        environment=account.environment,
        trigger=write.trigger,
        actor=write.actor,
        attempt=journal.Attempt(
            started_at=write.started_at,
            finished_at=now,
            outcome=write.outcome,
            error_message=error_message.strip() if error_message else None,
            old_expires_at=account.access_expires_at,
            new_expires_at=write.transition.access_expires_at if applied_here else None,
        ),
    )


def _account_token(row: Any) -> AccountToken:
    values = dict(row._mapping)
    values["scopes"] = tuple(str(values["scopes"]).split())
    values["state"] = TokenState(values["state"])
    return AccountToken(**values)


MAX_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL; larger numbers cannot be ids


def _lease_free(now: datetime | sa.BindParameter[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(m.EbayToken.lease_until.is_(None), m.EbayToken.lease_until < now)


def _due(now: datetime | sa.BindParameter[datetime]) -> sa.ColumnElement[bool]:
    return sa.and_(
        m.EbayToken.state == TokenState.ACTIVE.value,
        m.EbayToken.next_attempt_at <= now,
        _lease_free(now),
    )


def _claim_statements() -> tuple[sa.Update, sa.Select[Any]]:
    """The claim (lease up to ``limit`` due accounts) and the read of what was claimed.

    Built once with bind parameters: the worker claims hundreds of times per catch-up (see
    docs/decisions.md, "Statements built once, with bind parameters").
    """
    now = sa.bindparam("now", type_=m.UTCDateTime())
    candidates = (
        sa.select(m.EbayToken.account_id)
        .where(_due(now))
        .order_by(m.EbayToken.next_attempt_at, m.EbayToken.account_id)  # ties: oldest first
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    claim = (
        sa.update(m.EbayToken)
        .where(m.EbayToken.account_id == candidates.c.account_id, _due(now))
        .values(
            lease_owner=sa.bindparam("claim_owner", type_=sa.String()),
            lease_until=sa.bindparam("claim_until", type_=m.UTCDateTime()),
        )
        .returning(m.EbayToken.account_id)
    )
    claimed = (
        sa.select(*_ACCOUNT_TOKEN_COLUMNS)
        .join(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
        .where(m.EbayAccount.id.in_(sa.bindparam("ids", expanding=True)))
        .order_by(m.EbayToken.next_attempt_at, m.EbayToken.account_id)  # ties: oldest first
    )
    return claim, claimed


_CLAIM, _CLAIMED = _claim_statements()


@dataclass(frozen=True)
class RefreshWrite:
    """Everything one finished refresh writes (see :meth:`Store.finish_refresh`)."""

    account: AccountToken
    lease_owner: str
    trigger: Trigger
    actor: str | None
    started_at: datetime
    outcome: Outcome
    error_message: str | None
    exchange: ExchangeRecord
    transition: Transition
    access_token_ciphertext: str | None
    refresh_token_ciphertext: str | None
    refresh_expires_at: datetime | None


@dataclass(frozen=True)
class FinishedRefresh:
    """What :meth:`Store.finish_refresh` wrote."""

    attempt_id: int | None
    exchange_id: int
    applied: bool  # the token row was updated
    deleted: bool  # the account no longer exists


class Store:
    """Accounts and tokens. Built on a :class:`~ebay_connector.db.database.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._finishes: GroupCommit[RefreshWrite, FinishedRefresh] = GroupCommit(
            self._write_finished,
            key=lambda write: write.account.account_id,
            # Unavailable is everyone's problem: retrying each write alone would only wait longer.
            isolate=lambda exc: not isinstance(exc, StoreUnavailable),
        )

    # Organizations ---------------------------------------------------------------------------

    async def create_organization(self, name: str) -> int:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.insert(m.Organization)
                .values(name=name, created_at=self.db.clock())
                .returning(m.Organization.id)
            )
            return int(result.scalar_one())

    async def organization_name(self, organization_id: int) -> str | None:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.Organization.name).where(m.Organization.id == organization_id)
            )
            value = result.scalar_one_or_none()
            return None if value is None else str(value)

    async def organization_id(self, name: str) -> int | None:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.Organization.id).where(m.Organization.name == name)
            )
            value = result.scalar_one_or_none()
            return None if value is None else int(value)

    async def delete_organization(self, organization_id: int) -> None:
        async with self.db.transaction() as conn:
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
        encrypt: Callable[[int, str, str], str],
        access_token: str,
        access_expires_at: datetime,
        refresh_token: str,
        refresh_expires_at: datetime | None,
        next_attempt_at: datetime | None,
        exchanges: Sequence[ExchangeRecord],
        actor: str | None = None,
        end_user: EndUser | None = None,
    ) -> tuple[int, bool]:
        """Create the account, or replace the tokens of the same eBay user in this organization.

        With ``end_user`` (a connect session's), the account is that end user's; the eBay user
        already connected for another end user (or by an admin, for none) is refused with
        ``ConnectFailed`` / ``end_user_conflict`` and nothing is written.

        ``encrypt(account_id, field, plaintext)`` is called inside the transaction because the
        ciphertext is bound to the account id, which a new account only gets here. Returns
        ``(account_id, created)``. One transaction: the account, its tokens, the exchanges of
        the connect and the attempt are all written, or none.
        """
        now = self.db.clock()
        async with self.db.transaction() as conn:
            existing = (
                await conn.execute(
                    sa.select(m.EbayAccount.id, m.EbayAccount.end_user_id).where(
                        m.EbayAccount.organization_id == organization_id,
                        m.EbayAccount.environment == environment,
                        m.EbayAccount.ebay_user_id == ebay_user_id,
                    )
                )
            ).first()
            account_id = None if existing is None else int(existing[0])
            created = account_id is None
            if end_user is not None and existing is not None and existing[1] != end_user.id:
                raise ConnectFailed(
                    f"this eBay account is already connected as account {account_id} "
                    "for another end user; it is not moved",
                    code="end_user_conflict",
                )
            end_user_values = (
                {}
                if end_user is None
                else {"end_user_id": end_user.id, "end_user_label": end_user.label}
            )
            if account_id is None:
                result = await conn.execute(
                    sa.insert(m.EbayAccount)
                    .values(
                        **_never_reused_id(conn.dialect.name),
                        organization_id=organization_id,
                        environment=environment,
                        ebay_user_id=ebay_user_id,
                        ebay_username=ebay_username,
                        label=label,
                        scopes=" ".join(scopes),
                        created_at=now,
                        updated_at=now,
                        **end_user_values,
                    )
                    .returning(m.EbayAccount.id)
                )
                account_id = int(result.scalar_one())
            else:
                await conn.execute(
                    sa.update(m.EbayAccount)
                    .where(m.EbayAccount.id == account_id)
                    .values(
                        ebay_username=ebay_username,
                        scopes=" ".join(scopes),
                        updated_at=now,
                        **end_user_values,
                    )
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
                await journal.insert_exchange(
                    conn,
                    record,
                    account_id,
                    organization_id,
                    environment,
                    Trigger.CONNECT,
                    now,
                    actor,
                )
                for record in exchanges
            ]
            await conn.execute(
                sa.insert(m.RefreshAttempt).values(
                    account_id=account_id,
                    organization_id=organization_id,
                    trigger=Trigger.CONNECT.value,
                    actor=actor,
                    started_at=now,
                    finished_at=now,
                    outcome=Outcome.OK.value,
                    new_expires_at=access_expires_at,
                    exchange_id=exchange_ids[0] if exchange_ids else None,
                )
            )
            return int(account_id), created

    async def set_refresh_ciphertext(self, account_id: int, ciphertext: str) -> None:
        """Overwrite the stored refresh ciphertext (demo and repair tooling only)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(refresh_token_ciphertext=ciphertext, version=m.EbayToken.version + 1)
            )

    async def set_access_expiry(self, account_id: int, when: datetime, due: datetime) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(access_expires_at=when, next_attempt_at=due)
            )

    async def set_refresh_expiry(self, account_id: int, when: datetime) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.account_id == account_id)
                .values(refresh_expires_at=when)
            )

    async def account_token(self, account_id: int) -> AccountToken | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_ACCOUNT_TOKEN_BY_ID, {"account_id": account_id})).first()
            return None if row is None else _account_token(row)

    async def accounts(
        self, organization_id: int | None = None, *, end_user_id: str | None = None
    ) -> list[AccountToken]:
        query = (
            sa.select(*_ACCOUNT_TOKEN_COLUMNS)
            .join(m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
            .order_by(m.EbayAccount.id)
        )
        if organization_id is not None:
            query = query.where(m.EbayAccount.organization_id == organization_id)
        if end_user_id is not None:
            query = query.where(m.EbayAccount.end_user_id == end_user_id)
        async with self.db.read() as conn:
            return [_account_token(row) for row in (await conn.execute(query)).all()]

    async def resolve_account(self, ref: str) -> int:
        """An account by id, label or eBay username (exactly one must match)."""
        conditions = [m.EbayAccount.label == ref, m.EbayAccount.ebay_username == ref]
        if ref.isascii() and ref.isdigit() and int(ref) <= MAX_ID:
            conditions.append(m.EbayAccount.id == int(ref))
        async with self.db.read() as conn:
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
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(m.EbayAccount).where(m.EbayAccount.id == account_id)
            )
            return bool(result.rowcount)

    async def touch_last_used(self, account_id: int, use: Use, older_than: datetime) -> None:
        """Record a use and the estimate it gives, at most once per throttle period (a hot token
        API must not write per call); of two callers at once, only the first writes."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayAccount)
                .where(
                    m.EbayAccount.id == account_id,
                    sa.or_(
                        m.EbayAccount.last_used_at.is_(None),
                        m.EbayAccount.last_used_at < older_than,
                    ),
                )
                .values(
                    last_used_at=use.last_used_at,
                    use_interval_s=use.interval_s,
                    use_jitter_s=use.jitter_s,
                )
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
        """Take the account's refresh lease if it is free, expired or already ours (one statement).

        With ``expected_version`` the lease is only taken if nobody changed the token since the
        caller read it: a compare-and-set that is correct without row locks, on any backend.
        """
        conditions = [
            m.EbayToken.account_id == account_id,
            sa.or_(_lease_free(now), m.EbayToken.lease_owner == owner),
        ]
        if expected_version is not None:
            conditions.append(m.EbayToken.version == expected_version)
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.EbayToken)
                .where(*conditions)
                .values(lease_owner=owner, lease_until=until)
            )
            return result.rowcount == 1

    async def release_lease(self, account_id: int, owner: str) -> None:
        await self.release_claims([account_id], owner)

    async def release_claims(self, account_ids: Sequence[int], owner: str) -> None:
        """Give back leases ``owner`` holds on these accounts (a refresh that ended without its
        write, or claimed-ahead accounts a stopping worker will not start)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(
                    m.EbayToken.account_id.in_(list(account_ids)),
                    m.EbayToken.lease_owner == owner,
                )
                .values(lease_owner=None, lease_until=None)
            )

    async def due_accounts(self, now: datetime, limit: int) -> list[int]:
        """Active accounts whose next attempt is due and whose lease is free, most urgent first."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayToken.account_id)
                .where(_due(now))
                .order_by(m.EbayToken.next_attempt_at, m.EbayToken.account_id)  # ties: oldest first
                .limit(limit)
            )
            return [int(r[0]) for r in result.all()]

    async def due_count(self, now: datetime) -> int:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(sa.func.count()).select_from(m.EbayToken).where(_due(now))
            )
            return int(result.scalar_one())

    async def claim_due(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[AccountToken]:
        """Lease up to ``limit`` due accounts to ``owner``, most urgent first, atomically.

        PostgreSQL: ``WITH c AS (SELECT … LIMIT n FOR UPDATE SKIP LOCKED) UPDATE … FROM c`` —
        replicas claim disjoint batches without waiting on each other. (Not ``WHERE id IN
        (SELECT … SKIP LOCKED)``: PostgreSQL may run that subquery once per row, and with
        SKIP LOCKED each run locks different rows, claiming far more than ``n``; the CTE runs
        once.) SQLite drops ``FOR UPDATE``; there the write transaction (``BEGIN IMMEDIATE``)
        serialises claims and the lease condition in the UPDATE is the compare-and-set. Either
        way an account is claimed by at most one worker until its lease expires.
        """
        if limit <= 0:
            return []
        async with self.db.transaction() as conn:
            claimed = await conn.execute(
                _CLAIM, {"now": now, "limit": limit, "claim_owner": owner, "claim_until": until}
            )
            ids = [int(r[0]) for r in claimed.all()]
            if not ids:
                return []
            rows = await conn.execute(_CLAIMED, {"ids": ids})
            return [_account_token(row) for row in rows.all()]

    async def next_due_at(self) -> datetime | None:
        """When the earliest active account falls due (the worker sleeps until then)."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(sa.func.min(m.EbayToken.next_attempt_at)).where(
                    m.EbayToken.state == TokenState.ACTIVE.value
                )
            )
            value: datetime | None = result.scalar_one_or_none()
            return value

    async def release_leases(self, owner: str) -> int:
        """Release every lease ``owner`` holds (shutdown, or a pruned stalled worker)."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.EbayToken)
                .where(m.EbayToken.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount)

    async def reschedule(self, account_id: int, next_attempt_at: datetime | None) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayToken)
                .where(
                    m.EbayToken.account_id == account_id,
                    m.EbayToken.state == TokenState.ACTIVE.value,
                )
                .values(next_attempt_at=next_attempt_at)
            )

    async def set_label(self, account_id: int, label: str) -> bool:
        """Rename an account; False when it no longer exists."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.EbayAccount).where(m.EbayAccount.id == account_id).values(label=label)
            )
        return bool(result.rowcount)

    async def set_policy(
        self, account_id: int, policy: str | None, next_attempt_at: datetime | None
    ) -> None:
        """Set an account's refresh policy (None: the global default) and its new schedule."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(m.EbayAccount)
                .where(m.EbayAccount.id == account_id)
                .values(refresh_policy=policy)
            )
            await conn.execute(
                sa.update(m.EbayToken)
                .where(
                    m.EbayToken.account_id == account_id,
                    m.EbayToken.state == TokenState.ACTIVE.value,
                )
                .values(next_attempt_at=next_attempt_at)
            )

    async def count_by_state(self) -> dict[str, int]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(m.EbayToken.state, sa.func.count()).group_by(m.EbayToken.state)
            )
            return {str(state): int(n) for state, n in result.all()}

    async def finish_refresh(self, write: RefreshWrite) -> FinishedRefresh:
        """Record the attempt and its exchange and move the token, in ONE transaction.

        The token update is guarded by the lease. If the account was deleted meanwhile, only the
        exchange is kept (an HTTP call that happened is never unlogged) and nothing is written to
        the account. If the lease was lost (the call outlived it), the records are kept but the
        token is left to the new holder.

        Refreshes finishing at the same time share one transaction (:mod:`group_commit`); each
        one's rows are still all there or all absent, and this returns after their commit.
        """
        return await self._finishes.submit(write)

    async def flush(self) -> None:
        """Wait for every queued refresh write (before the database is closed)."""
        await self._finishes.flush()

    async def _write_finished(self, writes: Sequence[RefreshWrite]) -> list[FinishedRefresh]:
        """One transaction for a batch; each account at most once (the group commit's key)."""
        now = self.db.clock()
        async with self.db.transaction() as conn:
            applied = await _update_tokens(conn, writes, now)
            entries = [await _journal_entry(conn, write, applied, now) for write in writes]
            ids = await journal.insert_entries(conn, entries, now)
        return [
            FinishedRefresh(
                attempt_id,
                exchange_id,
                applied=write.account.account_id in applied,
                deleted=entry.attempt is None,
            )
            for write, entry, (attempt_id, exchange_id) in zip(writes, entries, ids, strict=True)
        ]

    # Exchanges and attempts ------------------------------------------------------------------
