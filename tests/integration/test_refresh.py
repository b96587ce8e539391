"""The canonical refresh, against the real emulator over HTTP and real SQLite / PostgreSQL.

Each test is named for a failure that a real system of this kind suffered (the README's "What it
guarantees") and that the canonical refresh makes impossible.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ebay_connector.core.exchange import Action, Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.token_state import TokenState
from ebay_connector.db import models as m
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import NeedsReconnect, RefreshFailed
from ebay_connector.keys.crypto import TokenField, associated_data
from ebay_connector.runtime import Runtime, refresh_config
from ebay_connector.service.refresh import Refresher
from tests.conftest import FakeClock
from tests.helpers import connect_seller

pytestmark = pytest.mark.integration

Connect = Callable[[str], Awaitable[int]]


@pytest.fixture
def connect(runtime: Runtime) -> Connect:
    async def run(username: str) -> int:
        organization = await runtime.store.organization_id("Test org")
        if organization is None:
            organization = await runtime.store.create_organization("Test org")
        return await connect_seller(runtime, organization, username)

    return run


def refresh_calls(emu: Emulator, username: str | None = None) -> int:
    return emu.calls.count(endpoint="token", grant_type="refresh_token", username=username)


async def expire(runtime: Runtime, account_id: int) -> None:
    now = runtime.clock()
    await runtime.store.set_access_expiry(account_id, now - timedelta(minutes=1), due=now)


async def test_connect_stores_account_with_encrypted_tokens_and_granted_scopes(
    runtime: Runtime, connect: Connect
) -> None:
    account_id = await connect("seller_one")
    account = await runtime.store.account_token(account_id)
    assert account is not None
    assert account.ebay_username == "seller_one"
    assert account.state is TokenState.ACTIVE
    assert account.scopes == runtime.settings.scope_list
    assert account.refresh_token_ciphertext is not None
    assert account.refresh_token_ciphertext.startswith("ENC:v1:")
    assert account.access_expires_at == runtime.clock() + timedelta(seconds=7200)
    assert account.refresh_expires_at == runtime.clock() + timedelta(seconds=47304000)
    entries = await runtime.journal.exchanges(account_id=account_id)
    # Read back as the enums they were written from: the column text stays in the journal.
    assert [e.action for e in entries] == [Action.GET_USER, Action.AUTHORIZATION_CODE]
    assert all(e.trigger is Trigger.CONNECT and e.outcome is Outcome.OK for e in entries)


async def test_successful_refresh_persists_token_attempt_and_exchange_together(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_ok")
    before = await runtime.store.account_token(account_id)
    assert before is not None
    clock.advance(hours=1)
    result = await runtime.refresher.refresh(account_id, Trigger.ADMIN, actor="test")
    assert result.outcome is Outcome.OK
    assert result.called_ebay
    assert refresh_calls(emu, "seller_ok") == 1
    after = await runtime.store.account_token(account_id)
    assert after is not None
    assert after.access_expires_at == clock() + timedelta(seconds=7200)
    assert after.access_token_ciphertext != before.access_token_ciphertext
    # eBay does not rotate refresh tokens: the stored one is kept as it was.
    assert after.refresh_token_ciphertext == before.refresh_token_ciphertext
    assert after.version == before.version + 1
    assert after.lease_owner is None
    attempts = await runtime.journal.attempts(account_id)
    assert attempts[0].outcome is Outcome.OK
    assert attempts[0].trigger is Trigger.ADMIN
    assert attempts[0].actor == "test"
    assert attempts[0].old_expires_at == before.access_expires_at
    assert attempts[0].exchange_id == result.exchange_id
    exchange = await runtime.journal.exchange(attempts[0].exchange_id or 0)
    assert exchange is not None
    assert exchange.status == 200
    assert exchange.request["body"]["grant_type"] == "refresh_token"
    # The scopes the account granted are sent exactly, every time.
    assert exchange.request["body"]["scope"] == " ".join(runtime.settings.scope_list)


async def test_debug_and_worker_send_the_same_request_and_token_fingerprint(
    runtime: Runtime, connect: Connect, clock: FakeClock
) -> None:
    """A real system's worker and debug button took different paths; here there is one."""
    account_id = await connect("seller_same")
    debug = await runtime.refresher.refresh(account_id, Trigger.DEBUG)
    clock.advance(seconds=10)
    scheduled = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert debug.exchange is not None
    assert scheduled.exchange is not None
    assert debug.exchange.token_fingerprint == scheduled.exchange.token_fingerprint
    assert debug.exchange.request_dict() == scheduled.exchange.request_dict()
    rows = await runtime.journal.exchanges(account_id=account_id, limit=2)
    assert [r.trigger for r in rows] == ["scheduled", "debug"]  # newest first
    assert rows[0].token_fingerprint == rows[1].token_fingerprint
    body = rows[0].request["body"]["refresh_token"]
    assert body["masked"] is True
    assert body["prefix"].startswith("v^1.1#")  # never ENC:


async def test_undecryptable_token_sends_nothing_and_needs_reconnect(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_copied")
    other_id = await connect("seller_source")
    other = await runtime.store.account_token(other_id)
    assert other is not None and other.refresh_token_ciphertext is not None
    # A ciphertext copied from another row must not decrypt (associated data binds it).
    await runtime.store.set_refresh_ciphertext(account_id, other.refresh_token_ciphertext)
    result = await runtime.refresher.refresh(account_id, Trigger.DEBUG)
    assert result.outcome is Outcome.DECRYPT_FAILED
    assert not result.called_ebay
    assert refresh_calls(emu) == 0
    account = await runtime.store.account_token(account_id)
    assert account is not None
    assert (account.state, account.state_reason) == (TokenState.NEEDS_RECONNECT, "decrypt_failed")
    assert account.next_attempt_at is None
    rows = await runtime.journal.exchanges(account_id=account_id, limit=1)
    assert rows[0].sent is False
    assert rows[0].outcome == "decrypt_failed"
    assert "no request was sent" in (rows[0].error or "")


async def test_doubly_encrypted_token_is_refused_before_http(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str]
) -> None:
    """A real system sent `ENC:v1:...` to eBay; a doubly encrypted token never leaves."""
    emu, _ = emulator
    account_id = await connect("seller_double")
    account = await runtime.store.account_token(account_id)
    assert account is not None and account.refresh_token_ciphertext is not None
    ring = runtime.keys.ring
    key = base64.urlsafe_b64decode(
        _key_material(runtime) + "=" * (-len(_key_material(runtime)) % 4)
    )
    nonce = os.urandom(12)
    aad = associated_data(account_id, TokenField.REFRESH_TOKEN)
    sealed = AESGCM(key).encrypt(nonce, account.refresh_token_ciphertext.encode(), aad)
    doubled = f"ENC:v1:{ring.primary_id}:" + base64.urlsafe_b64encode(nonce + sealed).decode(
        "ascii"
    ).rstrip("=")
    await runtime.store.set_refresh_ciphertext(account_id, doubled)
    result = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert result.outcome is Outcome.DECRYPT_FAILED
    assert "encrypted twice" in result.message
    assert refresh_calls(emu) == 0


def _key_material(runtime: Runtime) -> str:
    import json

    data = json.loads(runtime.settings.key_file.read_text())
    return str(data["keys"][data["primary"]])


async def test_revoked_grant_needs_reconnect_and_is_not_retried(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_revoked")
    emu.revoke_user("seller_revoked")
    await expire(runtime, account_id)
    result = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert result.outcome is Outcome.INVALID_GRANT
    account = await runtime.store.account_token(account_id)
    assert account is not None
    assert (account.state, account.state_reason) == (TokenState.NEEDS_RECONNECT, "invalid_grant")
    assert "invalid or was issued to another client" in (account.last_error_message or "")
    clock.advance(hours=3)
    assert await runtime.store.due_accounts(clock(), 100) == []
    again = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert again.skipped
    assert refresh_calls(emu) == 1
    with pytest.raises(NeedsReconnect) as info:
        await runtime.refresher.get_access_token(account_id)
    assert info.value.reason == "invalid_grant"


async def test_ebay_500_is_transient_backs_off_and_keeps_the_token(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_500")
    before = await runtime.store.account_token(account_id)
    assert before is not None
    emu.set_faults(Faults(error_rate=1.0, error_status=500), username="seller_500")
    result = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert result.outcome is Outcome.TRANSIENT
    after = await runtime.store.account_token(account_id)
    assert after is not None
    assert after.state is TokenState.ACTIVE
    assert after.failures_in_row == 1
    assert after.next_attempt_at is not None and after.next_attempt_at > clock()
    assert after.access_token_ciphertext == before.access_token_ciphertext
    assert after.refresh_token_ciphertext == before.refresh_token_ciphertext
    # The old access token is still valid and still served.
    token = await runtime.refresher.get_access_token(account_id)
    assert token.expires_at == before.access_expires_at
    emu.clear_faults("seller_500")
    clock.advance(hours=2)
    recovered = await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)
    assert recovered.outcome is Outcome.OK
    final = await runtime.store.account_token(account_id)
    assert final is not None
    assert (final.failures_in_row, final.last_error_code) == (0, None)


async def test_concurrent_on_demand_callers_cause_one_ebay_call(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str]
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_busy")
    await expire(runtime, account_id)
    emu.set_faults(Faults(latency_ms=100), username="seller_busy")
    tokens = await asyncio.gather(
        *(runtime.refresher.get_access_token(account_id) for _ in range(100))
    )
    assert refresh_calls(emu, "seller_busy") == 1
    assert len({t.access_token for t in tokens}) == 1
    assert tokens[0].access_token.startswith("v^1.1#")


async def test_two_processes_refreshing_one_account_call_ebay_once(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    """Two refreshers with their own locks (as two processes) meet at the database lease."""
    emu, _ = emulator
    account_id = await connect("seller_shared")
    await expire(runtime, account_id)
    emu.set_faults(Faults(latency_ms=200), username="seller_shared")
    other = Refresher(
        store=runtime.store,
        journal=runtime.journal,
        client=runtime.client,
        keyring=runtime.keys.ring,
        config=refresh_config(runtime.settings),
        owner="other-process",
        ledger=runtime.refresher.ledger,
        clock=clock,
    )
    first, second = await asyncio.gather(
        runtime.refresher.refresh(account_id, Trigger.SCHEDULED),
        other.refresh(account_id, Trigger.DEBUG),
    )
    assert refresh_calls(emu, "seller_shared") == 1
    assert {first.joined, second.joined} == {True, False}
    assert first.outcome is second.outcome is Outcome.OK


async def test_on_demand_cooldown_returns_last_failure_without_calling_ebay(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_loop")
    await expire(runtime, account_id)
    emu.set_faults(Faults(error_rate=1.0, error_status=503), username="seller_loop")
    with pytest.raises(RefreshFailed) as info:
        await runtime.refresher.get_access_token(account_id)
    assert info.value.code == "transient"
    for _ in range(20):
        with pytest.raises(RefreshFailed):
            await runtime.refresher.get_access_token(account_id)
    assert refresh_calls(emu, "seller_loop") == 1
    clock.advance(seconds=31)
    with pytest.raises(RefreshFailed):
        await runtime.refresher.get_access_token(account_id)
    assert refresh_calls(emu, "seller_loop") == 2


async def test_valid_token_is_served_without_calling_ebay_and_marks_use(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_fresh")
    token = await runtime.refresher.get_access_token(account_id)
    assert refresh_calls(emu) == 0
    assert token.expires_at == clock() + timedelta(seconds=7200)
    account = await runtime.store.account_token(account_id)
    assert account is not None and account.last_used_at == clock()
    clock.advance(hours=1, minutes=56)  # inside the 5-minute margin: refresh first
    fresh = await runtime.refresher.get_access_token(account_id)
    assert refresh_calls(emu, "seller_fresh") == 1
    assert fresh.access_token != token.access_token


async def test_account_deleted_during_refresh_is_not_written(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], database: object
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_gone")
    emu.set_faults(Faults(latency_ms=300), username="seller_gone")
    task = asyncio.create_task(runtime.refresher.refresh(account_id, Trigger.ADMIN))
    # Delete while the call is in flight: the lease is held, eBay has not answered yet.
    while not task.done():
        account = await runtime.store.account_token(account_id)
        if account is not None and account.lease_owner is not None:
            break
        await asyncio.sleep(0.01)
    assert await runtime.store.delete_account(account_id)
    result = await task
    assert result.skipped
    async with runtime.db.engine.connect() as conn:
        attempts = await conn.execute(
            sa.select(sa.func.count())
            .select_from(m.RefreshAttempt)
            .where(m.RefreshAttempt.trigger == "admin")
        )
        assert attempts.scalar_one() == 0
        tokens = await conn.execute(sa.select(sa.func.count()).select_from(m.EbayToken))
        assert tokens.scalar_one() == 0
    # The HTTP call did happen: its record is kept, detached from the deleted account.
    kept = await runtime.journal.exchange(result.exchange_id or 0)
    assert kept is not None
    assert kept.account_id is None
    assert kept.action == "refresh_token"
    assert kept.status == 200


class GatedPacer(Pacer):
    """Holds each call at the last step before it is sent, until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def acquire(self) -> None:
        self.reached.set()
        await self.gate.wait()
        await super().acquire()


async def test_a_lost_lease_is_never_applied_over_the_new_holder(
    runtime: Runtime, connect: Connect, clock: FakeClock
) -> None:
    """If a call outlives its lease (settings forbid it; this forces it), the result is kept in
    the journal but the token belongs to whoever holds the lease now."""
    account_id = await connect("seller_slow")
    await expire(runtime, account_id)
    short = dataclasses.replace(refresh_config(runtime.settings), lease=timedelta(seconds=1))
    gated = GatedPacer()
    slow = Refresher(
        store=runtime.store,
        journal=runtime.journal,
        client=runtime.client,
        keyring=runtime.keys.ring,
        config=short,
        owner="slow-process",
        ledger=runtime.refresher.ledger,
        clock=clock,
        pacer=gated,
    )
    task = asyncio.create_task(slow.refresh(account_id, Trigger.SCHEDULED))
    await gated.reached.wait()  # leased, about to send
    clock.advance(seconds=2)  # the slow holder's lease has now expired
    fast = await runtime.refresher.refresh(account_id, Trigger.ADMIN)
    assert fast.outcome is Outcome.OK
    after_fast = await runtime.store.account_token(account_id)
    gated.gate.set()  # the slow call goes out now, and its answer comes back after the new one
    lost = await task
    assert lost.called_ebay and lost.outcome is Outcome.OK
    assert lost.skipped
    assert "lease" in lost.message
    final = await runtime.store.account_token(account_id)
    assert final is not None
    assert after_fast is not None
    assert final.access_token_ciphertext == after_fast.access_token_ciphertext
    attempts = await runtime.journal.attempts(account_id, limit=3)
    assert "lease lost" in (attempts[0].error_message or "")


async def test_regular_use_is_learned_and_keeps_the_token_warm(
    runtime: Runtime, connect: Connect, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    account_id = await connect("seller_sync")
    connected = await runtime.store.account_token(account_id)
    assert connected is not None and connected.next_attempt_at is not None
    probe_at = connected.next_attempt_at
    await runtime.refresher.get_access_token(account_id)
    once = await runtime.store.account_token(account_id)
    assert once is not None and once.use_interval_s is None
    assert once.next_attempt_at == probe_at  # one use says nothing of the next
    for _ in range(3):  # an order sync every 15 minutes
        clock.advance(minutes=15)
        await runtime.refresher.get_access_token(account_id)
    learned = await runtime.store.account_token(account_id)
    assert learned is not None and learned.use_interval_s == pytest.approx(900)
    assert learned.access_expires_at is not None
    assert learned.next_attempt_at == learned.access_expires_at - timedelta(minutes=15)
    assert learned.next_attempt_at < probe_at


async def test_while_calls_are_spare_a_used_account_is_kept_warm(
    runtime: Runtime, connect: Connect, clock: FakeClock
) -> None:
    """A small shop: its calls are far below eBay's limit, so one use keeps the token warm."""
    account_id = await connect("seller_occasional")
    await expire(runtime, account_id)
    await runtime.refresher.get_access_token(account_id)  # one refresh: a pace begins
    used = await runtime.store.account_token(account_id)
    assert used is not None and used.next_attempt_at is not None
    assert used.access_expires_at is not None
    assert used.next_attempt_at > used.access_expires_at  # no pace yet: the idle probe stands
    clock.advance(minutes=20)  # ten minutes of calls to judge by, and the process reads again
    # A refresh that is not a use (one use teaches no rate): its schedule keeps the token warm.
    await runtime.refresher.refresh(account_id, Trigger.ADMIN)
    warm = await runtime.store.account_token(account_id)
    assert warm is not None and warm.access_expires_at is not None
    assert warm.next_attempt_at == warm.access_expires_at - timedelta(minutes=15)


async def test_an_on_demand_refresh_serves_the_new_token_without_reading_it_back(
    runtime: Runtime,
    connect: Connect,
    emulator: tuple[Emulator, str],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu, _ = emulator
    account_id = await connect("seller_served")
    await expire(runtime, account_id)
    ring = runtime.refresher.keyring
    decrypted: list[TokenField] = []
    snapshots: list[int] = []
    account_token = runtime.store.account_token

    class SpyRing:
        def __getattr__(self, name: str) -> object:
            return getattr(ring, name)

        def decrypt(self, ciphertext: str, *, account_id: int, field: TokenField) -> str:
            decrypted.append(field)
            return ring.decrypt(ciphertext, account_id=account_id, field=field)

    async def spy_account_token(account_id: int) -> object:
        snapshots.append(account_id)
        return await account_token(account_id)

    monkeypatch.setattr(runtime.refresher, "keyring", SpyRing())
    monkeypatch.setattr(runtime.store, "account_token", spy_account_token)
    token = await runtime.refresher.get_access_token(account_id)
    assert refresh_calls(emu, "seller_served") == 1
    # One read (the decision) and one decryption (the refresh token sent): the new access token
    # is the one eBay answered, not the stored copy read back.
    assert (snapshots, decrypted) == ([account_id], [TokenField.REFRESH_TOKEN])
    monkeypatch.undo()
    stored = await runtime.store.account_token(account_id)
    assert stored is not None and stored.access_token_ciphertext is not None
    assert token.access_token == ring.decrypt(
        stored.access_token_ciphertext, account_id=account_id, field=TokenField.ACCESS_TOKEN
    )
    assert token.expires_at == stored.access_expires_at == clock() + timedelta(seconds=7200)
