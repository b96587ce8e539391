"""Housekeeping the worker does after each cycle's refreshes: small, bounded, never in the way.

A chore decides for itself whether it is due (most run every few minutes, not every cycle), does
a bounded amount of work, and answers counts that the heartbeat shows under ``chores.<name>``.
A chore that fails is logged and reported in the heartbeat; it never fails the refresh cycle.
The runtime builds the chores (retention, notices, the application token) with their
collaborators and hands them to its workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol


class Chore(Protocol):
    name: str

    async def run(self, now: datetime) -> Mapping[str, int]:
        """Do what is due at ``now``; answer what was done (empty when nothing was due)."""
        ...
