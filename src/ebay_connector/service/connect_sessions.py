"""Connect sessions: a program asks for a link, its seller connects an eBay account without a login.

    program  POST /api/v1/connect-sessions           → {"id", "url", "expires_at"}
    seller   GET  <url>                              a page of the product, one button
    seller   POST <url> (the button, CSRF token)     → eBay's consent page
    eBay     GET  /api/ebay/callback?state&code      → <return_url>?status=connected&account_id=N
                                                       or ?status=error&error=<code>

The code exchange is the canonical one (:class:`~ebay_connector.service.connect.Connector`), with
the session's end user and, for a reconnect, the account's own eBay user as the only one allowed.
The seller always lands on the program's return URL (on its allow-list) or on a page of ours;
never on a JSON answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ebay_connector import log
from ebay_connector.core import return_urls
from ebay_connector.db import connect_sessions as sessions_db
from ebay_connector.db.connect_sessions import ConnectSessionRow, ConnectSessionStore
from ebay_connector.db.connect_states import ConnectStates
from ebay_connector.db.return_urls import ReturnUrls
from ebay_connector.db.store import EndUser, Store
from ebay_connector.ebay.client import EbayClient
from ebay_connector.errors import (
    AccountNotFound,
    ConnectFailed,
    ConnectorError,
    EndUserMismatch,
    ReturnUrlNotAllowed,
)
from ebay_connector.service.connect import Connector

logger = logging.getLogger(__name__)

# What the seller's return URL says went wrong (status=error&error=<code>).
DECLINED = "consent_declined"
EXPIRED = "session_expired"
EBAY_FAILED = "ebay_failed"
WRONG_USER = "wrong_ebay_user"
END_USER_CONFLICT = "end_user_conflict"
_PASSED_THROUGH = frozenset({WRONG_USER, END_USER_CONFLICT})


@dataclass(frozen=True)
class SellerPage:
    """What the seller's page shows, and the token its button posts."""

    session: ConnectSessionRow
    organization: str
    csrf_token: str
    reconnect: bool


@dataclass(frozen=True)
class ConnectSessions:
    sessions: ConnectSessionStore
    allowed_urls: ReturnUrls
    states: ConnectStates
    store: Store
    connector: Connector
    client: EbayClient
    scopes: tuple[str, ...]
    public_url: str
    ttl: timedelta
    csrf_secret: bytes

    # The program's side ---------------------------------------------------------------------

    async def create(
        self,
        *,
        organization_id: int,
        actor: str,
        end_user_id: str,
        end_user_label: str | None,
        return_url: str,
        account_id: int | None,
    ) -> ConnectSessionRow:
        if not return_urls.allowed(return_url, await self.allowed_urls.list(organization_id)):
            raise ReturnUrlNotAllowed(
                "return_url is not on this organization's allow-list "
                "(ebay-connector orgs return-urls add)"
            )
        if account_id is not None:
            account = await self.store.account_token(account_id)
            if account is None or account.organization_id != organization_id:
                raise AccountNotFound(f"no account {account_id}")
            if account.end_user_id is not None and account.end_user_id != end_user_id:
                raise EndUserMismatch(f"account {account_id} belongs to another end user")
        return await self.sessions.create(
            organization_id=organization_id,
            created_by=actor,
            end_user_id=end_user_id,
            end_user_label=end_user_label,
            return_url=return_url,
            account_id=account_id,
            ttl=self.ttl,
        )

    def url_of(self, session: ConnectSessionRow) -> str:
        return f"{self.public_url.rstrip('/')}/connect/{session.id}"

    # The seller's side ------------------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        """The button's token: bound to this connect session, useless for any other."""
        return hmac.new(self.csrf_secret, session_id.encode(), hashlib.sha256).hexdigest()

    async def page(self, session_id: str) -> SellerPage | str | None:
        """The page to show; the return URL to send the seller to when the session is over;
        None for a session that does not exist."""
        session = await self.sessions.get(session_id)
        if session is None:
            return None
        if session.status != sessions_db.PENDING or session.expires_at <= self._now():
            return self.outcome_url(session, error=EXPIRED)
        organization = await self.store.organization_name(session.organization_id) or ""
        return SellerPage(
            session, organization, self.csrf_token(session.id), session.account_id is not None
        )

    async def start(self, session_id: str, csrf_token: str) -> str | None:
        """The button was pressed: eBay's consent URL (or, if it is over, the return URL with
        the error); None for no such session or a wrong token."""
        session = await self.sessions.get(session_id)
        if session is None or not hmac.compare_digest(csrf_token, self.csrf_token(session.id)):
            return None
        if not await self.sessions.start(session.id):
            return self.outcome_url(session, error=EXPIRED)
        state = await self.states.create_for_seller(
            organization_id=session.organization_id,
            connect_session_id=session.id,
            account_id=session.account_id,
        )
        return self.client.consent_url(self.scopes, state)

    def is_seller_state(self, state: str) -> bool:
        return self.states.seller_session_of(state) is not None

    async def complete(self, state: str, *, code: str | None, error: str | None) -> str | None:
        """eBay sent the seller back: the URL to redirect to; None for a state that is not a
        seller's (the admin flow's callback handles it)."""
        session_id = self.states.seller_session_of(state)
        if session_id is None:
            return None
        session = await self.sessions.get(session_id)
        if session is None:
            return None
        pending = await self.states.consume_for_seller(state)
        if pending is None or session.status != sessions_db.STARTED:
            return self.outcome_url(session, error=EXPIRED)
        if error or not code:
            return await self._failed(session, DECLINED)
        expected = None
        if session.account_id is not None:
            account = await self.store.account_token(session.account_id)
            if account is None:
                return await self._failed(session, EXPIRED)
            expected = account.ebay_user_id
        try:
            connection = await self.connector.connect(
                organization_id=session.organization_id,
                code=code,
                actor=session.created_by,
                end_user=EndUser(session.end_user_id, session.end_user_label),
                expected_ebay_user_id=expected,
            )
        except ConnectFailed as exc:
            reason = exc.code if exc.code in _PASSED_THROUGH else EBAY_FAILED
            return await self._failed(session, reason)
        except ConnectorError:
            return await self._failed(session, EBAY_FAILED)
        await self.sessions.finish(session.id, account_id=connection.account_id)
        log.event(
            logger,
            "connect_session.connected",
            session=session.id[:10],
            account=connection.account_id,
            created=connection.created,
        )
        return self.outcome_url(session, account_id=connection.account_id)

    async def _failed(self, session: ConnectSessionRow, error: str) -> str:
        await self.sessions.finish(session.id, error=error)
        log.event(logger, "connect_session.failed", session=session.id[:10], error=error)
        return self.outcome_url(session, error=error)

    def outcome_url(
        self, session: ConnectSessionRow, *, account_id: int | None = None, error: str | None = None
    ) -> str:
        params = {"session_id": session.id}
        if error is None:
            params.update(status="connected", account_id=str(account_id))
        else:
            params.update(status="error", error=error)
        return return_urls.with_outcome(session.return_url, params)

    def _now(self) -> datetime:
        return self.sessions.db.clock()
