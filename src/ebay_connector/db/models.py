"""The database schema: SQLAlchemy 2.0 typed models, identical on SQLite and PostgreSQL.

Only the store (:mod:`ebay_connector.db.store`) issues statements against these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ebay_connector.core.clock import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}  # noqa: RUF012


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime]
    # Every session cookie carries the version it was issued under; bumping it (sign-out, a new
    # password, a new role) ends all of the user's sessions at once.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")


class EbayAccount(Base):
    __tablename__ = "ebay_accounts"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "environment", "ebay_user_id"),
        sa.Index("ix_ebay_accounts_org_end_user", "organization_id", "end_user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    environment: Mapped[str] = mapped_column(sa.String(16))
    ebay_user_id: Mapped[str] = mapped_column(sa.String(100))
    ebay_username: Mapped[str] = mapped_column(sa.String(100))
    label: Mapped[str] = mapped_column(sa.String(200))
    scopes: Mapped[str] = mapped_column(sa.Text)  # space-separated, exactly as granted
    refresh_policy: Mapped[str | None] = mapped_column(sa.String(16))  # None: the global one
    # A program's own id (and name) for the seller, set by the connect session that connected it.
    end_user_id: Mapped[str | None] = mapped_column(sa.String(200))
    end_user_label: Mapped[str | None] = mapped_column(sa.String(200))
    last_used_at: Mapped[datetime | None]
    # The learned rate of use (core/usage.py): typical seconds between uses and their spread.
    use_interval_s: Mapped[float | None] = mapped_column(sa.Float)
    use_jitter_s: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EbayToken(Base):
    """One row per account: ciphertexts, expiries, lifecycle state and the refresh lease."""

    __tablename__ = "ebay_tokens"
    __table_args__ = (sa.Index("ix_ebay_tokens_due", "state", "next_attempt_at"),)

    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    access_token_ciphertext: Mapped[str | None] = mapped_column(sa.Text)
    access_expires_at: Mapped[datetime | None]
    refresh_token_ciphertext: Mapped[str | None] = mapped_column(sa.Text)
    refresh_expires_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(sa.String(32))
    state_reason: Mapped[str | None] = mapped_column(sa.String(64))
    last_error_code: Mapped[str | None] = mapped_column(sa.String(64))
    last_error_message: Mapped[str | None] = mapped_column(sa.Text)
    failures_in_row: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    # Bumped on every change of the token: a waiter compares it to learn "someone just refreshed".
    version: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class RefreshAttempt(Base):
    __tablename__ = "refresh_attempts"
    __table_args__ = (sa.Index("ix_refresh_attempts_account_started", "account_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="SET NULL")
    )
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    trigger: Mapped[str] = mapped_column(sa.String(16))
    actor: Mapped[str | None] = mapped_column(sa.String(200))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(sa.String(32))
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    old_expires_at: Mapped[datetime | None]
    new_expires_at: Mapped[datetime | None]
    # Indexed: deleting an exchange (retention) looks up the attempts that point at it.
    exchange_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_exchanges.id", ondelete="SET NULL"), index=True
    )


class EbayExchange(Base):
    """The "connect log": every HTTP exchange with eBay, masked."""

    __tablename__ = "ebay_exchanges"
    __table_args__ = (
        sa.Index("ix_ebay_exchanges_org_created", "organization_id", "created_at"),
        sa.Index("ix_ebay_exchanges_account_created", "account_id", "created_at"),
        sa.Index("ix_ebay_exchanges_action_created", "action", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    trigger: Mapped[str] = mapped_column(sa.String(16))
    actor: Mapped[str | None] = mapped_column(sa.String(200))  # user:<id> / key:<id> / cli
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="SET NULL")
    )
    organization_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    environment: Mapped[str] = mapped_column(sa.String(16))
    outcome: Mapped[str] = mapped_column(sa.String(32))
    sent: Mapped[bool]
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any] | None]
    status: Mapped[int | None]
    duration_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    token_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    instance_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    version: Mapped[str] = mapped_column(sa.String(100))
    started_at: Mapped[datetime]
    interval_seconds: Mapped[int]
    last_cycle_started_at: Mapped[datetime | None]
    last_cycle_finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16))
    counts: Mapped[dict[str, Any]]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    # eBay's word on the application credentials in the last cycle: accepted / rejected / NULL.
    app_credentials: Mapped[str | None] = mapped_column(sa.String(16))
    cycles: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime]


class ApiKey(Base):
    """A program's credential: shown once, stored as a hash, scoped to one organization."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    key_id: Mapped[str] = mapped_column(sa.String(32), unique=True)  # the public part
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    can_read_tokens: Mapped[bool]
    # Each permission is its own: a key that hands sellers connect links need not read tokens.
    can_connect: Mapped[bool] = mapped_column(server_default=sa.false())
    can_proxy: Mapped[bool] = mapped_column(server_default=sa.false())
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ConnectState(Base):
    """An OAuth ``state`` in flight: single use (deleted when used), bound to a session.

    An admin's connect has a user and the id of their sign-in session; a seller's connect (through
    a connect session) has no user, and ``session_id`` is the connect session's id."""

    __tablename__ = "connect_states"

    nonce: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(sa.String(64))
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


# --- programs: connect sessions -----------------------------------------------------------------


class ReturnUrl(Base):
    """Where an organization lets connect sessions send sellers back (origin + path prefix)."""

    __tablename__ = "return_urls"
    __table_args__ = (sa.UniqueConstraint("organization_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    created_at: Mapped[datetime]


class ConnectSession(Base):
    """A link a program hands to its seller: single use, expiring, no login needed."""

    __tablename__ = "connect_sessions"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # cs_…, unguessable
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_by: Mapped[str] = mapped_column(sa.String(200))  # key:<key id>
    end_user_id: Mapped[str] = mapped_column(sa.String(200))
    end_user_label: Mapped[str | None] = mapped_column(sa.String(200))
    return_url: Mapped[str] = mapped_column(sa.String(2048))
    # Set: a reconnect of this account (the seller must be its eBay user).
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(sa.String(16))  # pending / started / connected / failed
    error: Mapped[str | None] = mapped_column(sa.String(64))
    connected_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]


# --- webhooks and notices ---------------------------------------------------------------------


class WebhookEndpoint(Base):
    """Where an organization wants its notices: a URL and a signing secret (sealed)."""

    __tablename__ = "webhook_endpoints"
    # A second endpoint at the same URL would get every event twice.
    __table_args__ = (sa.UniqueConstraint("organization_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str] = mapped_column(sa.String(200))
    # ring.seal(secret, context=f"webhook/{id}"): bound to this row.
    secret_ciphertext: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]


class NoticeMark(Base):
    """Per account: what was last notified, so events fire on transitions, not on attempts."""

    __tablename__ = "notice_marks"

    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    condition: Mapped[str] = mapped_column(sa.String(32))  # ok / failing / needs_reconnect
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    failing_since: Mapped[datetime | None]
    expiry_for: Mapped[datetime | None]  # the refresh_expires_at the expiry notices were about
    expiry_notified_days: Mapped[int | None]
    # Compare-and-set guard: two replicas deciding on the same mark emit once.
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime]


class NoticeEvent(Base):
    """One notice (the outbox): its JSON payload is what every endpoint receives."""

    __tablename__ = "notice_events"
    __table_args__ = (sa.Index("ix_notice_events_org_created", "organization_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(36), unique=True)  # the idempotency id
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(sa.String(64))
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ebay_accounts.id", ondelete="SET NULL")
    )
    dedup_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event to one endpoint: its attempts, outcome and next try (the delivery log)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(
        sa.ForeignKey("notice_events.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(sa.String(16))  # pending / delivered / failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_duration_ms: Mapped[float | None]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


# --- application token and account deletions --------------------------------------------------


class AppToken(Base):
    """The application (client-credentials) token of one eBay environment, shared by every
    process: eBay grants only 1,000 of these a day, so one is minted and reused until it ends."""

    __tablename__ = "app_tokens"

    environment: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    # sealed with context "app_token/<environment>"; None until the first grant
    ciphertext: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[datetime | None]
    scopes: Mapped[str] = mapped_column(sa.Text)
    # Who is minting a new one right now (the other processes wait for it instead of calling).
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class AccountDeletion(Base):
    """One eBay Marketplace Account Deletion notification, as acted on (once per notification)."""

    __tablename__ = "account_deletions"

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[str] = mapped_column(sa.String(200), unique=True)
    environment: Mapped[str] = mapped_column(sa.String(16))
    # A keyed fingerprint of the eBay user id, never the id itself (it is personal data).
    ebay_user_fingerprint: Mapped[str] = mapped_column(sa.String(64), index=True)
    account_ids: Mapped[list[int]] = mapped_column(sa.JSON)
    organization_ids: Mapped[list[int]] = mapped_column(sa.JSON)
    event_date: Mapped[datetime | None]
    received_at: Mapped[datetime]


# --- login throttling ---------------------------------------------------------------------------


class LoginThrottle(Base):
    """One sign-in counter (an e-mail or a client address, stored as a keyed HMAC)."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # email / client
    failures: Mapped[int]
    window_started_at: Mapped[datetime]
    lockouts: Mapped[int]
    locked_until: Mapped[datetime | None]
    # Compare-and-set guard: API processes charging the same key at once each count.
    version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(index=True)


class QuotaBucket(Base):
    """eBay calls reserved in one minute, per grant type: the ledger that keeps the daily limit
    (see core/quota.py). A slot is taken before the call is sent, and given back only when the
    call was not sent after all."""

    __tablename__ = "quota_buckets"

    action: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # the grant type
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    calls: Mapped[int]


# --- ids never reused (SQLite) -------------------------------------------------------------------


class RetiredId(Base):
    """The highest id ever deleted from a table, where the database itself would reuse it.

    SQLite (without AUTOINCREMENT) gives a new row max(id)+1, so deleting the newest account and
    connecting another would hand the new seller the old id — and a program still holding that
    id another seller's token. A trigger records deleted ids here; the store allocates above.
    """

    __tablename__ = "retired_ids"

    table_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    last_id: Mapped[int]
