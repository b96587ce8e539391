"""Housekeeping the worker does after each cycle's refreshes: small, bounded, never in the way.

A chore decides for itself whether it is due (most run every few minutes, not every cycle), does
a bounded amount of work, and answers counts that the heartbeat shows under ``chores.<name>``.
A chore that fails is logged and reported in the heartbeat; it never fails the refresh cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ebay_connector.runtime import Runtime


class Chore(Protocol):
    name: str

    async def run(self, now: datetime) -> Mapping[str, int]:
        """Do what is due at ``now``; answer what was done (empty when nothing was due)."""
        ...


def build(runtime: Runtime) -> list[Chore]:
    """The chores every worker of this runtime runs, in order."""
    chores: list[Chore] = []
    # Each concern registers its chore here, one line each.
    from ebay_connector.service import retention

    chores.append(retention.chore(runtime))
    from ebay_connector.service import webhooks

    chores.append(webhooks.chore(runtime))
    from ebay_connector.ebay import app_token

    chores.append(app_token.chore(runtime))  # application token, renewed only while in use
    return chores
