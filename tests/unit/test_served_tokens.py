"""The outage memory: bounded, expiring with each token, never another organization's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.service.served_tokens import Served, ServedTokens

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)
SECRET = "v^1.1#i^1#secret-access-token"


def served(account_id: int, *, minutes_left: int = 60, organization_id: int = 1) -> Served:
    return Served(account_id, organization_id, SECRET, NOW + timedelta(minutes=minutes_left))


def test_a_token_valid_beyond_the_margin_is_held() -> None:
    memory = ServedTokens()
    memory.remember(served(1))
    held = memory.valid(1, 1, now=NOW, margin=MARGIN)
    assert held is not None and held.access_token == SECRET


def test_a_token_within_the_margin_is_dropped_not_served() -> None:
    memory = ServedTokens()
    memory.remember(served(1, minutes_left=5))
    assert memory.valid(1, 1, now=NOW, margin=MARGIN) is None
    assert len(memory) == 0


def test_another_organizations_account_is_not_served() -> None:
    memory = ServedTokens()
    memory.remember(served(1, organization_id=2))
    assert memory.valid(1, 1, now=NOW, margin=MARGIN) is None
    assert memory.valid(1, 2, now=NOW, margin=MARGIN) is not None


def test_the_least_recently_served_goes_first_past_capacity() -> None:
    memory = ServedTokens(capacity=2)
    memory.remember(served(1))
    memory.remember(served(2))
    memory.remember(served(1))  # served again: now the most recent
    memory.remember(served(3))
    assert len(memory) == 2
    assert memory.valid(2, 1, now=NOW, margin=MARGIN) is None
    assert memory.valid(1, 1, now=NOW, margin=MARGIN) is not None
    assert memory.valid(3, 1, now=NOW, margin=MARGIN) is not None


def test_forget_and_capacity_zero_hold_nothing() -> None:
    memory = ServedTokens()
    memory.remember(served(1))
    memory.forget(1)
    assert memory.valid(1, 1, now=NOW, margin=MARGIN) is None
    off = ServedTokens(capacity=0)
    off.remember(served(1))
    assert len(off) == 0


def test_the_token_never_shows_in_a_repr() -> None:
    assert SECRET not in repr(served(1))


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ServedTokens(capacity=-1)
