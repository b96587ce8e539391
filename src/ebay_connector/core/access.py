"""Serve, refresh or refuse: what a program's request for an account's access token gets.

The stored access token is served while it stays valid for the margin. Otherwise the request
refreshes, unless that cannot help: the seller must reconnect, the account's last refresh failed
within the cooldown (its failure is answered again rather than calling eBay once per request), or
eBay rejected the application's credentials within the cooldown (every account would get the same
answer, so one call per cooldown, not one per account).
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from ebay_connector.core.token_state import TokenState


class Access(enum.StrEnum):
    SERVE = "serve"  # the stored access token
    REFRESH = "refresh"
    NEEDS_RECONNECT = "needs_reconnect"  # refused: only a new consent helps
    COOLING_DOWN = "cooling_down"  # refused: the last refresh failed within the cooldown
    APP_REJECTED = "app_rejected"  # refused: eBay rejected the app's credentials lately


def fresh(expires_at: datetime | None, *, now: datetime, margin: timedelta) -> bool:
    """Whether an access token expiring at ``expires_at`` is still valid for ``margin``."""
    return expires_at is not None and expires_at > now + margin


def decide(
    *,
    state: TokenState,
    has_access_token: bool,
    access_expires_at: datetime | None,
    failures_in_row: int,
    last_attempt_at: datetime | None,
    app_rejected_at: datetime | None,
    now: datetime,
    margin: timedelta,
    cooldown: timedelta,
) -> Access:
    """What a request for the account's access token gets, from the stored state alone.

    ``app_rejected_at``: when eBay last rejected the application's credentials, if its latest
    word on them was a rejection.
    """
    if state is TokenState.NEEDS_RECONNECT:
        return Access.NEEDS_RECONNECT
    if has_access_token and fresh(access_expires_at, now=now, margin=margin):
        return Access.SERVE
    if failures_in_row > 0 and last_attempt_at is not None and last_attempt_at > now - cooldown:
        return Access.COOLING_DOWN
    if app_rejected_at is not None and app_rejected_at > now - cooldown:
        return Access.APP_REJECTED
    return Access.REFRESH
