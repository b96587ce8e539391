"""The lifecycle of a stored token: what state it moves to after an attempt, and when it is due.

    active ──(permanent failure: invalid_grant, decrypt_failed, ...)──> needs_reconnect
    active ──(transient / configuration failure)──> active, failures_in_row+1, next try later
    any    ──(success)──> active, errors cleared, next try as the refresh policy says

``next_attempt_at`` is the one column the worker selects on: when the account should be looked at
next. ``needs_reconnect`` tokens have none: only a new consent (or an operator) moves them.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ebay_connector.core import retry
from ebay_connector.core.outcome import Classified, Disposition, disposition


class TokenState(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"


@dataclass(frozen=True)
class Transition:
    """The token fields an attempt changes."""

    state: TokenState
    reason: str | None
    failures_in_row: int
    next_attempt_at: datetime | None
    last_error_code: str | None
    last_error_message: str | None
    access_expires_at: datetime | None  # set only when a new access token was issued


def after_attempt(
    *,
    classified: Classified,
    failures_in_row: int,
    now: datetime,
    schedule: Callable[[datetime], datetime | None],
    rng: random.Random,
    backoff: retry.Backoff = retry.DEFAULT_BACKOFF,
) -> Transition:
    """Decide the token's next state from the classified outcome of one attempt.

    ``schedule(new_access_expiry)`` is the refresh policy's next attempt after a success.
    """
    kind = disposition(classified.outcome)
    if kind is Disposition.SUCCESS:
        assert classified.grant is not None
        new_expiry = now + timedelta(seconds=classified.grant.expires_in)
        return Transition(
            state=TokenState.ACTIVE,
            reason=None,
            failures_in_row=0,
            next_attempt_at=schedule(new_expiry),
            last_error_code=None,
            last_error_message=None,
            access_expires_at=new_expiry,
        )
    failures = failures_in_row + 1
    if kind is Disposition.PERMANENT:
        return Transition(
            state=TokenState.NEEDS_RECONNECT,
            reason=classified.outcome.value,
            failures_in_row=failures,
            next_attempt_at=None,
            last_error_code=classified.outcome.value,
            last_error_message=classified.message,
            access_expires_at=None,
        )
    delay = retry.next_delay(failures, rng, policy=backoff, retry_after=classified.retry_after)
    return Transition(
        state=TokenState.ACTIVE,
        reason=None,
        failures_in_row=failures,
        next_attempt_at=now + delay,
        last_error_code=classified.outcome.value,
        last_error_message=classified.message,
        access_expires_at=None,
    )
