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

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from ebay_connector import log
from ebay_connector.core import deletion
from ebay_connector.errors import DeletionNotConfigured, NotificationRejected
from ebay_connector.web.api.errors import responses
from ebay_connector.web.api.state import runtime_of

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ebay notifications"])


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
        key = await runtime.public_keys.get(signature.kid)
        deletion.verify(signature, key, body)
    except NotificationRejected as exc:
        log.event(logger, "notification.rejected", logging.WARNING, reason=exc.message)
        raise
    notice = deletion.parse_notice(body)
    if notice is None:
        log.event(logger, "notification.ignored", reason="not MARKETPLACE_ACCOUNT_DELETION")
        return Response(status_code=204)
    fingerprint = runtime.keys.ring.fingerprint(notice.user_id)
    result = await runtime.account_deletions.apply(
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
