"""Connecting, disconnecting and re-scheduling a seller's account: one function per operation.

Connect: authorization code → tokens → eBay user → stored account. The OAuth state handling of the
web flow lives with the web layer; this is what happens once a code is in hand. Either everything
is stored (account, encrypted tokens, the exchanges, the attempt) or nothing is.

:class:`Connector` binds the operations to their collaborators; the runtime builds one, and the
CLI, the API, the UI and the demo all call it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ebay_connector import log
from ebay_connector.core import labels, policy
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.notices import EventType
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.policy import PolicyConfig
from ebay_connector.core.usage import Use
from ebay_connector.db.journal import Journal
from ebay_connector.db.outbox import Outbox
from ebay_connector.db.store import AccountToken, EndUser, Store
from ebay_connector.ebay.client import EbayClient
from ebay_connector.errors import AccountNotFound, ConnectFailed, ConnectorError, WrongEbayUser
from ebay_connector.keys.crypto import KeyRing, TokenField

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    account_id: int
    created: bool
    ebay_user_id: str
    ebay_username: str


async def connect_with_code(
    *,
    store: Store,
    journal: Journal,
    client: EbayClient,
    keyring: KeyRing,
    organization_id: int,
    environment: str,
    code: str,
    scopes: Sequence[str],
    policy_config: PolicyConfig,
    label: str | None = None,
    actor: str | None = None,
    clock: Clock = utcnow,
    end_user: EndUser | None = None,
    expected_ebay_user_id: str | None = None,
) -> Connection:
    """Exchange ``code`` (decoded, as received) once and store the account it belongs to.

    ``expected_ebay_user_id`` (a reconnect through a connect session): consent given by any
    other eBay user changes nothing; the grant just made is revoked and ``WrongEbayUser``
    (``wrong_ebay_user``) raised."""
    started = clock()
    call = await client.send_token_request(client.code_exchange_request(code))
    grant = call.classified.grant
    if call.classified.outcome is not Outcome.OK or grant is None or not grant.refresh_token:
        await journal.record_exchange(
            call.exchange,
            trigger=Trigger.CONNECT,
            environment=environment,
            organization_id=organization_id,
            actor=actor,
        )
        outcome = call.classified.outcome
        code_name = outcome.value if outcome is not Outcome.OK else "malformed_response"
        raise ConnectFailed(f"code exchange failed: {call.classified.message}", code=code_name)
    user, user_exchange = await client.get_user(grant.access_token)
    if user is None:
        await journal.record_exchange(
            user_exchange,
            trigger=Trigger.CONNECT,
            environment=environment,
            organization_id=organization_id,
            actor=actor,
        )
        raise ConnectFailed("eBay did not say which user granted access", code="get_user_failed")
    user_id = str(user["userId"])
    username = str(user.get("username") or user_id)
    if expected_ebay_user_id is not None and user_id != expected_ebay_user_id:
        revoked = await client.revoke(grant.refresh_token)
        for exchange in (call.exchange, user_exchange, revoked.exchange):
            await journal.record_exchange(
                exchange,
                trigger=Trigger.CONNECT,
                environment=environment,
                organization_id=organization_id,
                actor=actor,
            )
        raise WrongEbayUser(
            f"the seller consented as eBay user {username}, not as the account's own",
            signed_in=username,
        )
    access_expires = started + timedelta(seconds=grant.expires_in)
    refresh_expires = (
        started + timedelta(seconds=grant.refresh_token_expires_in)
        if grant.refresh_token_expires_in
        else None
    )

    def encrypt(account_id: int, field: str, plaintext: str) -> str:
        return keyring.encrypt(plaintext, account_id=account_id, field=TokenField(field))

    account_id, created = await store.save_connection(
        organization_id=organization_id,
        environment=environment,
        ebay_user_id=user_id,
        ebay_username=username,
        label=label or username,
        scopes=scopes,
        encrypt=encrypt,
        access_token=grant.access_token,
        access_expires_at=access_expires,
        refresh_token=grant.refresh_token,
        refresh_expires_at=refresh_expires,
        next_attempt_at=policy.schedule(
            policy_config.default,
            access_expires_at=access_expires,
            use=Use(),
            last_success_at=started,
            now=started,
            config=policy_config,
        ).next_attempt_at,
        exchanges=[call.exchange, user_exchange],
        actor=actor,
        end_user=end_user,
    )
    log.event(
        logger,
        "account.connected",
        account=account_id,
        created=created,
        ebay_username=username,
        organization=organization_id,
    )
    return Connection(account_id, created, user_id, username)


@dataclass(frozen=True)
class Disconnection:
    account_id: int
    deleted: bool
    revoked_at_ebay: bool


async def disconnect(
    *,
    store: Store,
    journal: Journal,
    client: EbayClient,
    keyring: KeyRing,
    account: AccountToken,
    actor: str | None = None,
) -> Disconnection:
    """Revoke the grant at eBay where possible (recorded), then delete the account and tokens."""
    revoked = False
    refresh_token = None
    if account.refresh_token_ciphertext:
        with contextlib.suppress(ConnectorError):  # unreadable: nothing to revoke; delete anyway
            refresh_token = keyring.decrypt(
                account.refresh_token_ciphertext,
                account_id=account.account_id,
                field=TokenField.REFRESH_TOKEN,
            )
    if refresh_token is not None:
        call = await client.revoke(refresh_token)
        revoked = call.classified.outcome is Outcome.OK
        await journal.record_exchange(
            call.exchange,
            trigger=Trigger.ADMIN,
            environment=account.environment,
            account_id=account.account_id,
            organization_id=account.organization_id,
            actor=actor,
        )
    deleted = await store.delete_account(account.account_id)
    log.event(logger, "account.disconnected", account=account.account_id, revoked=revoked)
    return Disconnection(account.account_id, deleted, revoked)


async def set_policy(
    *,
    store: Store,
    account_id: int,
    chosen: policy.RefreshPolicy | None,
    config: PolicyConfig,
    now: datetime,
) -> datetime | None:
    """Give an account its own refresh policy (``None``: the global one) and re-schedule it.

    Answers when the worker will next refresh it (``None``: only on demand)."""
    row = await store.account_token(account_id)
    if row is None:
        raise AccountNotFound(f"no account {account_id}")
    due = policy.schedule(
        policy.effective(chosen.value if chosen else None, config),
        access_expires_at=row.access_expires_at,
        use=row.use,
        last_success_at=row.last_success_at,
        now=now,
        config=config,
    )
    await store.set_policy(account_id, chosen.value if chosen else None, due.next_attempt_at)
    return due.next_attempt_at


@dataclass(frozen=True)
class Connector:
    """The account operations, wired to one runtime's store, journal, eBay client and keys."""

    store: Store
    journal: Journal
    client: EbayClient
    keyring: KeyRing
    environment: str
    scopes: Sequence[str]
    policy_config: PolicyConfig
    clock: Clock = utcnow
    outbox: Outbox | None = None  # where account.connected / account.reconnected go

    async def connect(
        self,
        *,
        organization_id: int,
        code: str,
        label: str | None = None,
        actor: str | None = None,
        end_user: EndUser | None = None,
        expected_ebay_user_id: str | None = None,
    ) -> Connection:
        connection = await connect_with_code(
            store=self.store,
            journal=self.journal,
            client=self.client,
            keyring=self.keyring,
            organization_id=organization_id,
            environment=self.environment,
            code=code,
            scopes=self.scopes,
            policy_config=self.policy_config,
            label=label,
            actor=actor,
            clock=self.clock,
            end_user=end_user,
            expected_ebay_user_id=expected_ebay_user_id,
        )
        if self.outbox is not None:
            account = await self.store.account_token(connection.account_id)
            await self.outbox.emit(
                organization_id,
                EventType.CONNECTED if connection.created else EventType.RECONNECTED,
                {
                    "account": {
                        "id": connection.account_id,
                        "label": account.label if account else connection.ebay_username,
                        "ebay_username": connection.ebay_username,
                    },
                    "end_user_id": account.end_user_id if account else None,
                    "end_user_label": account.end_user_label if account else None,
                },
            )
        return connection

    async def disconnect(self, account: AccountToken, *, actor: str | None = None) -> Disconnection:
        return await disconnect(
            store=self.store,
            journal=self.journal,
            client=self.client,
            keyring=self.keyring,
            account=account,
            actor=actor,
        )

    async def rename(self, account: AccountToken, typed: str, *, actor: str | None = None) -> str:
        """Give the account a new label (``core.labels.clean_label`` decides what is accepted);
        answers the label stored."""
        label = labels.clean_label(typed)
        if not await self.store.set_label(account.account_id, label):
            raise AccountNotFound(f"no account {account.account_id}")
        log.event(logger, "account.renamed", account=account.account_id, actor=actor)
        return label

    async def set_policy(
        self, account_id: int, chosen: policy.RefreshPolicy | None
    ) -> datetime | None:
        return await set_policy(
            store=self.store,
            account_id=account_id,
            chosen=chosen,
            config=self.policy_config,
            now=self.clock(),
        )
