"""How often a program uses an account: a running estimate learned from its uses.

Each recorded use (the token API notes at most one a minute) updates two numbers stored with the
account: the typical gap between uses and how much the gaps vary, both as exponentially
weighted moving averages of the gaps seen so far. The refresh policy reads them to decide
whether keeping the account's token warm pays for itself and, for a regular user (an order sync
every 15 minutes), just when the next use is expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

WEIGHT = 0.25  # of the newest gap: about the last eight gaps count


@dataclass(frozen=True)
class Use:
    """What is known about an account's use; ``interval_s`` is ``None`` until two uses."""

    last_used_at: datetime | None = None
    interval_s: float | None = None  # typical seconds between uses
    jitter_s: float | None = None  # mean absolute deviation of the gaps from that

    def observed(self, now: datetime, weight: float = WEIGHT) -> Use:
        """The estimate after a use at ``now``."""
        if self.last_used_at is None or now <= self.last_used_at:
            return Use(max(now, self.last_used_at or now), self.interval_s, self.jitter_s)
        gap = (now - self.last_used_at).total_seconds()
        if self.interval_s is None:
            # One gap says little about its spread: assume the worst until more come.
            return Use(now, gap, gap)
        jitter = self.jitter_s if self.jitter_s is not None else self.interval_s
        return Use(
            now,
            self.interval_s + weight * (gap - self.interval_s),
            jitter + weight * (abs(gap - self.interval_s) - jitter),
        )

    def expected_interval(self, now: datetime) -> float | None:
        """Seconds between uses as of ``now``: a silence longer than the estimate stretches it."""
        if self.last_used_at is None or self.interval_s is None:
            return None
        return max(self.interval_s, (now - self.last_used_at).total_seconds())

    def chance_of_use(self, within: timedelta, now: datetime) -> float:
        """The probability of at least one use in the next ``within``, uses taken as random."""
        interval = self.expected_interval(now)
        if interval is None or interval <= 0:
            return 0.0 if interval is None else 1.0
        return 1.0 - math.exp(-within.total_seconds() / interval)

    def next_use_after(self, moment: datetime, now: datetime, slack: timedelta) -> datetime | None:
        """The first use expected at or after ``moment``, if the uses are regular enough.

        Regular means the gaps vary by less than ``slack`` (three mean deviations) and the
        account has not missed its last expected use by ``now``; otherwise ``None``.
        """
        if self.last_used_at is None or self.interval_s is None or self.jitter_s is None:
            return None
        if self.interval_s <= 0 or 3 * self.jitter_s >= slack.total_seconds():
            return None
        overdue = now - self.last_used_at - timedelta(seconds=self.interval_s)
        if overdue > slack:
            return None
        if moment <= self.last_used_at:
            return self.last_used_at
        steps = math.ceil((moment - self.last_used_at).total_seconds() / self.interval_s)
        return self.last_used_at + timedelta(seconds=steps * self.interval_s)
