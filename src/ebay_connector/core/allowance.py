"""How many times something may happen per window, per key: a sliding-window count.

Used for manual refreshes, which spend the application's shared daily eBay quota: one
organization (or one account) may not spend it for everybody.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
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
        return wait_after(times, self.limit, self.window, now)

    def take(self, key: Hashable, now: datetime) -> None:
        if self.limit > 0:
            self._taken.setdefault(key, deque()).append(now)


def wait_after(
    taken: Sequence[datetime], limit: int, window: timedelta, now: datetime
) -> timedelta | None:
    """How long until one more may be taken, given the times already ``taken`` (any order,
    any age; 0: no limit). None: it may now."""
    if limit <= 0:
        return None
    recent = sorted(t for t in taken if t > now - window)
    if len(recent) < limit:
        return None
    return recent[-limit] + window - now
