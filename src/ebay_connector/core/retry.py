"""When to try again after a failed refresh: exponential backoff with full jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """Backoff parameters. ``floor`` keeps full jitter from retrying immediately."""

    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    floor: timedelta = timedelta(seconds=5)


DEFAULT_BACKOFF = Backoff()


def next_delay(
    failures_in_row: int,
    rng: random.Random,
    *,
    policy: Backoff = DEFAULT_BACKOFF,
    retry_after: timedelta | None = None,
) -> timedelta:
    """Delay before the next attempt after ``failures_in_row`` consecutive failures (>= 1).

    Full jitter (a uniform draw below the exponential ceiling) spreads the retries of many accounts
    that failed together, e.g. in an eBay outage, instead of sending them back in one wave.
    eBay's ``Retry-After`` is a lower bound.
    """
    exponent = max(failures_in_row, 1) - 1
    # Cap the exponent before multiplying: 2**n of a large n overflows timedelta.
    ceiling = min(policy.cap, policy.base * (2 ** min(exponent, 32)))
    delay = timedelta(seconds=rng.uniform(0.0, ceiling.total_seconds()))
    delay = max(delay, policy.floor)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
