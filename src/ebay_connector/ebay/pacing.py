"""Process-wide pacing of eBay calls: a ceiling on calls per second, and eBay's 429 pause.

A 429 is about the application, not one account: when eBay says ``Retry-After``, the whole
process stops calling until then instead of every account finding out on its own.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

DEFAULT_PAUSE = timedelta(seconds=60)  # when a 429 carries no Retry-After
MAX_PAUSE = timedelta(hours=1)


def reserve(now: float, next_slot: float, interval: float) -> tuple[float, float]:
    """Take the next call slot at monotonic time ``now``: (seconds to wait for it, when the slot
    after it opens)."""
    start = max(now, next_slot)
    return start - now, start + interval


class Pacer:
    """Spaces calls to at most ``max_per_second`` and holds a pause until a wall-clock time."""

    def __init__(self, max_per_second: float | None = None) -> None:
        self.interval = 1.0 / max_per_second if max_per_second else 0.0
        self._next_slot = 0.0
        self.paused_until: datetime | None = None

    def pause(self, now: datetime, retry_after: timedelta | None) -> datetime:
        """Stop calling eBay until ``now + retry_after`` (bounded); returns the end of the pause."""
        delay = min(retry_after if retry_after is not None else DEFAULT_PAUSE, MAX_PAUSE)
        until = now + delay
        if self.paused_until is None or until > self.paused_until:
            self.paused_until = until
        return self.paused_until

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    async def acquire(self) -> None:
        """Wait for the next call slot under the per-second ceiling."""
        if not self.interval:
            return
        # No await between reading and taking the slot: concurrent callers get distinct slots.
        wait, self._next_slot = reserve(time.monotonic(), self._next_slot, self.interval)
        if wait > 0:
            await asyncio.sleep(wait)
