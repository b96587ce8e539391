"""How many times something may happen per window, per key: a sliding-window count.

Used for manual refreshes, which spend the application's shared daily eBay quota: one
organization (or one account) may not spend it for everybody.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Allowance:
    """At most ``limit`` takes per ``window`` for each key (0: no limit)."""

    limit: int
    window: timedelta
    _taken: dict[Hashable, deque[datetime]] = field(default_factory=dict, repr=False)

    def wait(self, key: Hashable, now: datetime) -> timedelta | None:
        """How long until ``key`` may take again (None: it may now). Takes nothing."""
        if self.limit <= 0:
            return None
        times = self._taken.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._taken[key]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + self.window - now

    def take(self, key: Hashable, now: datetime) -> None:
        if self.limit > 0:
            self._taken.setdefault(key, deque()).append(now)
