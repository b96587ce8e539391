"""The shared application token against the real emulator and real SQLite / PostgreSQL: one
client-credentials grant serves every caller of every process until it nears its end."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ebay_connector.db import models as m
from ebay_connector.ebay.app_token import AppTokenChore, AppTokens
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import AppTokenUnavailable
from ebay_connector.runtime import Runtime
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration


def grants(emu: Emulator) -> int:
    return emu.calls.count(endpoint="token", grant_type="client_credentials")


def process(runtime: Runtime, owner: str) -> AppTokens:
    """An AppTokens as another process would have it: own memory, own lock, same database."""
    return AppTokens(
        db=runtime.db,
        client=runtime.client,
        keyring=runtime.keys.ring,
        environment=runtime.environment,
        owner=owner,
        clock=runtime.clock,
    )


async def journaled(runtime: Runtime) -> list[str]:
    rows = await runtime.journal.exchanges(limit=100)
    return [r.outcome for r in rows if r.action == "client_credentials"]


async def test_concurrent_callers_in_two_processes_cause_one_grant(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    emu.set_faults(Faults(latency_ms=300))  # the grant is slow: everyone else must wait for it
    a, b = process(runtime, "process-a"), process(runtime, "process-b")
    tokens = await asyncio.gather(*(p.get() for p in (a, b) * 8))
    assert len(set(tokens)) == 1
    assert tokens[0].startswith("v^1.1#")
    assert grants(emu) == 1
    assert await journaled(runtime) == ["ok"]
    async with runtime.db.read() as conn:
        row = (await conn.execute(sa.select(m.AppToken))).one()
    assert tokens[0] not in row.ciphertext  # sealed, not stored in the clear
    assert runtime.keys.ring.open(row.ciphertext, context="app_token/emulator") == tokens[0]
    assert row.lease_owner is None and row.lease_until is None
    # A third process starting later reads it from the store: still one grant.
    assert await process(runtime, "process-c").get() == tokens[0]
    assert grants(emu) == 1


async def test_a_token_near_its_end_is_replaced_once(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    tokens = runtime.app_tokens
    first = await tokens.get()
    clock.advance(seconds=7200 - 6 * 60)  # six minutes left: still handed out
    assert await tokens.get() == first
    clock.advance(seconds=90)  # four and a half minutes left: inside the margin
    second = await tokens.get()
    assert second != first
    assert grants(emu) == 2
    assert await process(runtime, "other").get() == second


async def test_the_chore_renews_ahead_only_while_the_token_is_used(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    chore = next(c for c in runtime.chores if isinstance(c, AppTokenChore))
    assert await chore.run(clock()) == {}  # nothing ever used it: no grant spent
    assert grants(emu) == 0
    first = await chore.tokens.get()
    clock.advance(seconds=7200 - 20 * 60)  # twenty minutes left, not yet due
    assert await chore.run(clock()) == {}
    clock.advance(seconds=6 * 60)  # fourteen minutes left and used within two hours
    assert await chore.run(clock()) == {"renewed": 1}
    assert grants(emu) == 2
    async with runtime.db.read() as conn:
        row = (await conn.execute(sa.select(m.AppToken))).one()
    assert runtime.keys.ring.open(row.ciphertext, context="app_token/emulator") != first
    # Nobody used it since (the renewal is no use): near its end again, the chore lets it lapse.
    clock.advance(seconds=7200 - 10 * 60)
    assert await chore.run(clock()) == {}
    assert grants(emu) == 2


async def test_a_refused_grant_raises_records_the_exchange_and_frees_the_lease(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    emu.set_faults(Faults(error_rate=1.0, error_status=503))
    tokens = process(runtime, "p")
    with pytest.raises(AppTokenUnavailable) as caught:
        await tokens.get()
    assert caught.value.code == "app_token_unavailable"
    assert await journaled(runtime) == ["transient"]
    emu.clear_faults()
    # No lease left behind: another process gets a token at once, with the clock unmoved.
    assert (await process(runtime, "q").get()).startswith("v^1.1#")
    assert await journaled(runtime) == ["ok", "transient"]


async def test_a_token_sealed_with_a_lost_key_is_replaced(
    runtime: Runtime, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    await process(runtime, "p").get()
    async with runtime.db.transaction() as conn:
        await conn.execute(sa.update(m.AppToken).values(ciphertext="ENC:v1:lost:AAAA"))
    assert (await process(runtime, "q").get()).startswith("v^1.1#")
    assert grants(emu) == 2


async def test_expiry_is_counted_from_before_the_request(
    runtime: Runtime, clock: FakeClock
) -> None:
    await process(runtime, "p").get()
    async with runtime.db.read() as conn:
        row = (await conn.execute(sa.select(m.AppToken))).one()
    assert row.expires_at == clock() + timedelta(seconds=7200)
