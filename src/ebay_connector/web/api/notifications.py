"""eBay Marketplace Account Deletion notifications: ``/api/ebay/notifications/account-deletion``.

``GET ?challenge_code=…`` answers eBay's endpoint validation; ``POST`` takes a notification,
verifies its ``X-EBAY-SIGNATURE`` against eBay's public key (fetched with the application token
and cached by key id), and deletes that seller's accounts and tokens in every organization
before answering ``204``. The deletion is a handful of statements in one transaction, so it runs
within the request: the ``204`` then means "done", and a failure answers ``503`` so eBay
delivers again, where a background task could acknowledge a deletion that a crash then loses.
A bad signature answers ``412`` (what eBay's SDKs answer) and touches nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from ebay_connector import log
from ebay_connector.core import deletion
from ebay_connector.core.clock import Clock
from ebay_connector.core.exchange import ExchangeRecord, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db.account_deletions import AccountDeletions
from ebay_connector.ebay import app_token
from ebay_connector.ebay.app_token import AppTokens
from ebay_connector.ebay.client import EbayClient
from ebay_connector.errors import DeletionNotConfigured, NotificationRejected, PublicKeyUnavailable
from ebay_connector.web.api.errors import responses
from ebay_connector.web.api.state import runtime_of

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ebay notifications"])

# eBay rotates notification keys rarely; an hour bounds how long a withdrawn key stays trusted.
PUBLIC_KEY_TTL = timedelta(hours=1)
MAX_CACHED_KEYS = 64  # key ids are chosen by the sender: the cache must not grow without bound


@dataclass(frozen=True)
class _CachedKey:
    key: ec.EllipticCurvePublicKey
    fetched_at: datetime


class PublicKeys:
    """eBay's notification public keys by key id, cached in memory for :data:`PUBLIC_KEY_TTL`."""

    def __init__(
        self,
        client: EbayClient,
        tokens: AppTokens,
        clock: Clock,
        record: Callable[[ExchangeRecord], Awaitable[object]],
    ) -> None:
        self.client = client
        self.tokens = tokens
        self.clock = clock
        self.record = record  # every call to eBay goes into the journal
        self._keys: dict[str, _CachedKey] = {}
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The key; ``NotificationRejected`` if eBay knows no such key, else
        ``PublicKeyUnavailable`` / ``AppTokenUnavailable`` when eBay cannot tell just now."""
        async with self._lock:  # concurrent deliveries signed by one new key: one fetch
            cached = self._keys.get(kid)
            if cached is not None and self.clock() - cached.fetched_at < PUBLIC_KEY_TTL:
                return cached.key
            answer, exchange = await self.client.get_public_key(kid, await self.tokens.get())
            await self.record(exchange)
            if answer.outcome is Outcome.INVALID_REQUEST:
                raise NotificationRejected("eBay knows no public key with the signature's kid")
            if answer.outcome is not Outcome.OK or answer.key is None:
                log.event(
                    logger, "notification.key_unavailable", logging.WARNING, message=answer.message
                )
                raise PublicKeyUnavailable(f"cannot fetch eBay's public key: {answer.message}")
            key = deletion.load_public_key(answer.key["key"])
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[kid] = _CachedKey(key, self.clock())
            return key


def _public_keys(request: Request) -> PublicKeys:
    keys: PublicKeys | None = getattr(request.app.state, "ebay_public_keys", None)
    if keys is None:
        runtime = runtime_of(request)
        keys = PublicKeys(
            runtime.client,
            app_token.for_runtime(runtime),
            runtime.clock,
            lambda exchange: runtime.journal.record_exchange(
                exchange, trigger=Trigger.ON_DEMAND, environment=runtime.environment
            ),
        )
        request.app.state.ebay_public_keys = keys
    return keys


@router.get(deletion.PATH, responses=responses(503))
async def account_deletion_challenge(
    request: Request, challenge_code: Annotated[str, Query(min_length=1, max_length=512)]
) -> Any:
    """eBay's endpoint validation: ``{"challengeResponse": sha256(code + token + endpoint)}``."""
    settings = runtime_of(request).settings
    if settings.deletion_verification_token is None:
        raise DeletionNotConfigured(
            "set EBAY_CONNECTOR_DELETION_VERIFICATION_TOKEN to the token registered at eBay"
        )
    endpoint = deletion.endpoint_url(settings.deletion_endpoint_url, settings.public_url)
    token = settings.deletion_verification_token.get_secret_value()
    answer = deletion.challenge_response(challenge_code, token, endpoint)
    return JSONResponse({"challengeResponse": answer})


@router.post(
    deletion.PATH,
    status_code=204,
    response_class=Response,
    responses=responses(400, 412, 503),
)
async def account_deletion_notification(request: Request) -> Response:
    """A MARKETPLACE_ACCOUNT_DELETION notification: verify, delete everywhere, then 204."""
    runtime = runtime_of(request)
    body = await request.body()
    signature = deletion.parse_signature_header(request.headers.get(deletion.SIGNATURE_HEADER))
    try:
        key = await _public_keys(request).get(signature.kid)
        deletion.verify(signature, key, body)
    except NotificationRejected as exc:
        log.event(logger, "notification.rejected", logging.WARNING, reason=exc.message)
        raise
    notice = deletion.parse_notice(body)
    if notice is None:
        log.event(logger, "notification.ignored", reason="not MARKETPLACE_ACCOUNT_DELETION")
        return Response(status_code=204)
    fingerprint = runtime.keys.ring.fingerprint(notice.user_id)
    result = await AccountDeletions(runtime.db).apply(
        notice, environment=runtime.environment, user_fingerprint=fingerprint
    )
    log.event(
        logger,
        "account_deletion.replayed" if result.replayed else "account_deletion.applied",
        notification=notice.notification_id,
        user_fp=fingerprint,
        accounts=len(result.account_ids),
        organizations=len(result.organization_ids),
    )
    return Response(status_code=204)
