"""Group commit of finished refreshes, and the worker's claim-ahead, on real SQLite / PostgreSQL.

Accounts hold tokens the emulator really issued; every exchange written here is one the product's
eBay client really recorded (masked) from the emulator over HTTP. What a finished refresh writes
(token row, attempt, exchange) must not depend on whether it shared its transaction: PostgreSQL
writes a batch with array statements, SQLite row by row, and both must match a refresh written
alone, field by field.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from ebay_connector.core import token_state
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db import models as m
from ebay_connector.db.store import AccountToken, FinishedRefresh, RefreshWrite
from ebay_connector.ebay.client import CallResult, PreparedRequest, build_refresh_request
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import StoreError, StoreUnavailable
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.service.worker import CycleCounts, CycleStatus, Worker, WorkerConfig
from tests.conftest import DatabaseTarget, FakeClock
from tests.helpers import seed_due_accounts

pytestmark = pytest.mark.integration

OWNER = "group-commit-worker"
LEASE = timedelta(minutes=2)
MISSING_ORGANIZATION = 987_654  # no organization has this id: the journal's foreign keys refuse it
# Not a real secret: what an eBay that rotated refresh tokens might send.
ROTATED_REFRESH_TOKEN = "v^1.1#i^1#r^1#rotated-by-the-test#0000"
POLL_DEADLINE_S = 10.0


# Scenes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One kind of finished refresh: what eBay answered and which columns it writes."""

    name: str
    outcome: Outcome
    faults: Faults | None  # how the emulator is made to answer with that outcome
    rotate: bool  # the refresh token came back rotated (its ciphertext and expiry are written)
    trigger: Trigger
    actor: str | None


OK = Shape("ok", Outcome.OK, None, rotate=False, trigger=Trigger.SCHEDULED, actor=None)
ROTATED = Shape("ok_rotated", Outcome.OK, None, rotate=True, trigger=Trigger.ADMIN, actor="user:7")
TRANSIENT = Shape(
    "transient",
    Outcome.TRANSIENT,
    Faults(error_rate=1.0, error_status=503),
    rotate=False,
    trigger=Trigger.ON_DEMAND,
    actor="key:3",
)
REVOKED = Shape(
    "invalid_grant",
    Outcome.INVALID_GRANT,
    Faults(invalid_grant=True),
    rotate=False,
    trigger=Trigger.DEBUG,
    actor="cli",
)
SHAPES = (OK, ROTATED, TRANSIENT, REVOKED)


async def claim(runtime: Runtime, ids: list[int]) -> dict[int, AccountToken]:
    """Lease every account to OWNER, as the worker's claim does."""
    now = runtime.clock()
    claimed = await runtime.store.claim_due(OWNER, now, now + LEASE, len(ids))
    assert sorted(a.account_id for a in claimed) == sorted(ids)
    assert all(a.lease_owner == OWNER for a in claimed)
    return {a.account_id: a for a in claimed}


async def call_ebay(
    runtime: Runtime, emu: Emulator, account: AccountToken, shape: Shape
) -> CallResult:
    """The refresh request for ``account``, really sent to the emulator; its CallResult."""
    if shape.faults is not None:
        emu.set_faults(shape.faults, username=account.ebay_username)
    ring = runtime.keys.ring
    request = build_refresh_request(
        account.refresh_token_ciphertext,
        decrypt=lambda text: ring.decrypt(
            text, account_id=account.account_id, field=TokenField.REFRESH_TOKEN
        ),
        scopes=account.scopes,
        app=runtime.client.app,
        endpoints=runtime.client.endpoints,
    )
    call = await runtime.client.send_token_request(request)
    emu.clear_faults(account.ebay_username)
    assert call.classified.outcome is shape.outcome
    return call


def refresh_write(
    runtime: Runtime, account: AccountToken, shape: Shape, call: CallResult
) -> RefreshWrite:
    """The write the refresher passes to ``finish_refresh`` for this answer."""
    now = runtime.clock()
    classified = call.classified
    transition = token_state.after_attempt(
        classified=classified,
        failures_in_row=account.failures_in_row,
        now=now,
        schedule=lambda expiry: expiry - timedelta(minutes=15),
        rng=random.Random(0),  # the same jitter for every account of a shape
    )
    ring = runtime.keys.ring
    access_ct = refresh_ct = refresh_expires = None
    if classified.grant is not None:
        access_ct = ring.encrypt(
            classified.grant.access_token,
            account_id=account.account_id,
            field=TokenField.ACCESS_TOKEN,
        )
    if shape.rotate:
        refresh_ct = ring.encrypt(
            ROTATED_REFRESH_TOKEN, account_id=account.account_id, field=TokenField.REFRESH_TOKEN
        )
        refresh_expires = now + timedelta(days=300)
    return RefreshWrite(
        account=account,
        lease_owner=OWNER,
        trigger=shape.trigger,
        actor=shape.actor,
        started_at=now - timedelta(seconds=2),
        outcome=classified.outcome,
        error_message=None if classified.outcome is Outcome.OK else classified.message,
        exchange=call.exchange,
        transition=transition,
        access_token_ciphertext=access_ct,
        refresh_token_ciphertext=refresh_ct,
        refresh_expires_at=refresh_expires,
    )


# Reading what was written ------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    token: dict[str, Any] | None
    attempts: list[dict[str, Any]]  # the account's attempts, the seed's "connect" one aside
    exchanges: list[dict[str, Any]]  # the account's exchanges


async def written(runtime: Runtime, account_id: int) -> Written:
    # A declarative class's __table__ is typed FromClause; for these models it is a Table.
    tokens: sa.Table = m.EbayToken.__table__  # type: ignore[assignment]
    attempts: sa.Table = m.RefreshAttempt.__table__  # type: ignore[assignment]
    exchanges: sa.Table = m.EbayExchange.__table__  # type: ignore[assignment]
    async with runtime.db.engine.connect() as conn:
        token = (
            await conn.execute(sa.select(tokens).where(tokens.c.account_id == account_id))
        ).first()
        attempt_rows = await conn.execute(
            sa.select(attempts)
            .where(attempts.c.account_id == account_id, attempts.c.trigger != "connect")
            .order_by(attempts.c.id)
        )
        exchange_rows = await conn.execute(
            sa.select(exchanges)
            .where(exchanges.c.account_id == account_id)
            .order_by(exchanges.c.id)
        )
        return Written(
            None if token is None else dict(token._mapping),
            [dict(r._mapping) for r in attempt_rows],
            [dict(r._mapping) for r in exchange_rows],
        )


async def exchange_by_id(runtime: Runtime, exchange_id: int) -> dict[str, Any] | None:
    # A declarative class's __table__ is typed FromClause; for this model it is a Table.
    exchanges: sa.Table = m.EbayExchange.__table__  # type: ignore[assignment]
    async with runtime.db.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(exchanges).where(exchanges.c.id == exchange_id))
        ).first()
        return None if row is None else dict(row._mapping)


async def attempts_of_exchange(runtime: Runtime, exchange_id: int) -> int:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(
            sa.select(sa.func.count())
            .select_from(m.RefreshAttempt)
            .where(m.RefreshAttempt.exchange_id == exchange_id)
        )
        return int(result.scalar_one())


def ciphertext_source(value: Any, given: str | None, before: str | None) -> str:
    """Which ciphertext a column holds, named (ciphertexts differ per account by design)."""
    if given is not None and value == given:
        return "given"
    if value == before:
        return "kept"
    return "something else"


def view(
    result: FinishedRefresh, rows: Written, before: AccountToken, write: RefreshWrite
) -> dict[str, Any]:
    """What one finished refresh wrote, with what necessarily differs between accounts (ids,
    ciphertexts bound to the account) replaced by how it relates to the write's inputs."""
    assert rows.token is not None
    assert len(rows.attempts) == 1, "not exactly one attempt"
    assert len(rows.exchanges) == 1, "not exactly one exchange"
    token = dict(rows.token)
    assert token.pop("account_id") == before.account_id
    token["version"] = token["version"] - before.version
    token["access_token_ciphertext"] = ciphertext_source(
        token["access_token_ciphertext"],
        write.access_token_ciphertext,
        before.access_token_ciphertext,
    )
    token["refresh_token_ciphertext"] = ciphertext_source(
        token["refresh_token_ciphertext"],
        write.refresh_token_ciphertext,
        before.refresh_token_ciphertext,
    )
    attempt = dict(rows.attempts[0])
    assert attempt.pop("account_id") == before.account_id
    attempt["id"] = attempt["id"] == result.attempt_id
    attempt["exchange_id"] = attempt["exchange_id"] == result.exchange_id
    exchange = dict(rows.exchanges[0])
    exchange["id"] = exchange["id"] == result.exchange_id
    exchange["account_id"] = exchange["account_id"] == before.account_id
    return {
        "result": (result.applied, result.deleted),
        "token": token,
        "attempt": attempt,
        "exchange": exchange,
    }


def expected_exchange(write: RefreshWrite, account_id: int | None, now: datetime) -> dict[str, Any]:
    """The exchange row of a finished refresh: the masked record the client made, as it was."""
    record = write.exchange
    account = write.account
    return {
        "id": True,
        "action": "refresh_token",
        "trigger": write.trigger.value,
        "actor": write.actor,
        "account_id": account_id,
        "organization_id": account.organization_id,
        "environment": account.environment,
        "outcome": record.outcome.value,
        "sent": record.sent,
        "request": record.request_dict(),
        "response": record.response_dict(),
        "status": record.status,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "token_fingerprint": record.token_fingerprint,
        "created_at": now,
    }


def expected_view(before: AccountToken, write: RefreshWrite, now: datetime) -> dict[str, Any]:
    """What an applied finished refresh must write, from its inputs alone."""
    transition = write.transition
    success = transition.access_expires_at is not None
    rotated = write.refresh_token_ciphertext is not None
    token = {
        "state": transition.state.value,
        "state_reason": transition.reason,
        "last_error_code": transition.last_error_code,
        "last_error_message": transition.last_error_message,
        "failures_in_row": transition.failures_in_row,
        "next_attempt_at": transition.next_attempt_at,
        "last_attempt_at": now,
        "lease_owner": None,
        "lease_until": None,
        "updated_at": now,
        "version": 1,
        "access_token_ciphertext": "given" if success else "kept",
        "access_expires_at": transition.access_expires_at if success else before.access_expires_at,
        "last_success_at": now if success else before.last_success_at,
        "refresh_token_ciphertext": "given" if rotated else "kept",
        "refresh_expires_at": write.refresh_expires_at if rotated else before.refresh_expires_at,
    }
    attempt = {
        "id": True,
        "organization_id": before.organization_id,
        "trigger": write.trigger.value,
        "actor": write.actor,
        "started_at": write.started_at,
        "finished_at": now,
        "outcome": write.outcome.value,
        "error_code": None if write.outcome is Outcome.OK else write.outcome.value,
        "error_message": write.error_message,
        "old_expires_at": before.access_expires_at,
        "new_expires_at": transition.access_expires_at,
        "exchange_id": True,
    }
    return {
        "result": (True, False),
        "token": token,
        "attempt": attempt,
        "exchange": {**expected_exchange(write, before.account_id, now), "account_id": True},
    }


def check_masked(row: dict[str, Any], secrets: list[str]) -> None:
    """The exchange holds the token it sent and the ones it got masked, never in clear."""
    assert row["request"]["body"]["refresh_token"]["masked"] is True
    text = json.dumps([row["request"], row["response"]])
    leaked = [i for i, secret in enumerate(secrets) if secret in text]
    assert not leaked, f"secrets number {leaked} are stored in clear in an exchange"


def sent_secrets(runtime: Runtime, account: AccountToken, call: CallResult) -> list[str]:
    """The refresh token sent and the access token granted (to look for, never to print)."""
    assert account.refresh_token_ciphertext is not None
    secrets = [
        runtime.keys.ring.decrypt(
            account.refresh_token_ciphertext,
            account_id=account.account_id,
            field=TokenField.REFRESH_TOKEN,
        )
    ]
    if call.classified.grant is not None:
        secrets.append(call.classified.grant.access_token)
    return secrets


# a) many finishes, few transactions --------------------------------------------------------


async def test_concurrent_finishes_share_a_transaction_and_write_what_a_solo_write_does(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    per_shape = 5
    ids = await seed_due_accounts(runtime, emu, len(SHAPES) * (per_shape + 1), "group")
    # Later than the seed, so a column the write leaves alone is told from one it sets to now.
    clock.advance(minutes=30)
    accounts = await claim(runtime, ids)
    shape_of = {aid: SHAPES[i % len(SHAPES)] for i, aid in enumerate(ids)}
    solo = {shape.name: next(a for a in ids if shape_of[a] is shape) for shape in SHAPES}
    # One real call per shape; every account of the shape records that same exchange, so the
    # rows of a batched write and of the solo write can be compared literally.
    calls = {
        shape.name: await call_ebay(runtime, emu, accounts[solo[shape.name]], shape)
        for shape in SHAPES
    }
    writes = {
        aid: refresh_write(runtime, accounts[aid], shape_of[aid], calls[shape_of[aid].name])
        for aid in ids
    }
    finishes = runtime.store._finishes
    now = clock()

    results: dict[int, FinishedRefresh] = {}
    for shape in SHAPES:
        batches = finishes.batches
        results[solo[shape.name]] = await runtime.store.finish_refresh(writes[solo[shape.name]])
        assert finishes.batches == batches + 1  # alone in its transaction

    batched = [aid for aid in ids if aid not in solo.values()]
    assert len(batched) == len(SHAPES) * per_shape
    batches, items = finishes.batches, finishes.items
    # Not in account order, and shapes interleaved: a result or a row given to the wrong
    # account would show as another shape's values.
    submitted = list(reversed(batched))
    answers = await asyncio.gather(
        *(runtime.store.finish_refresh(writes[aid]) for aid in submitted)
    )
    results.update(zip(submitted, answers, strict=True))
    # All were queued before the first transaction began, so they share it.
    assert (finishes.batches - batches, finishes.items - items) == (1, len(batched))

    views = {}
    for aid in ids:
        shape = shape_of[aid]
        rows = await written(runtime, aid)
        views[aid] = view(results[aid], rows, accounts[aid], writes[aid])
        assert views[aid] == expected_view(accounts[aid], writes[aid], now), shape.name
        secrets = sent_secrets(runtime, accounts[solo[shape.name]], calls[shape.name])
        check_masked(rows.exchanges[0], secrets)
    for aid in batched:
        assert views[aid] == views[solo[shape_of[aid].name]], shape_of[aid].name
    assert len({r.exchange_id for r in results.values()}) == len(ids)
    assert len({r.attempt_id for r in results.values()}) == len(ids)


# b) applied, lease lost and deleted in one batch -------------------------------------------


async def test_one_batch_mixing_applied_lease_lost_and_deleted_writes(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    emu, _ = emulator
    ids = await seed_due_accounts(runtime, emu, 3, "mixed")
    applied_id, lost_id, gone_id = ids
    clock.advance(minutes=30)
    accounts = await claim(runtime, ids)
    shapes = {applied_id: ROTATED, lost_id: TRANSIENT, gone_id: OK}
    writes = {}
    for aid, shape in shapes.items():
        call = await call_ebay(runtime, emu, accounts[aid], shape)
        writes[aid] = refresh_write(runtime, accounts[aid], shape, call)
    now = clock()
    # While the calls were out: another worker took over one lease, and one account was deleted.
    await runtime.store.release_lease(lost_id, OWNER)
    assert await runtime.store.try_lease(lost_id, "another-worker", now, now + LEASE)
    lost_before = await runtime.store.account_token(lost_id)
    assert lost_before is not None and lost_before.lease_owner == "another-worker"
    assert await runtime.store.delete_account(gone_id)

    finishes = runtime.store._finishes
    batches = finishes.batches
    order = [gone_id, applied_id, lost_id]
    answers = await asyncio.gather(*(runtime.store.finish_refresh(writes[aid]) for aid in order))
    assert finishes.batches == batches + 1  # one transaction for all three
    results = dict(zip(order, answers, strict=True))
    assert len({r.exchange_id for r in answers}) == 3

    # Applied: everything, exactly as a write alone.
    rows = await written(runtime, applied_id)
    assert view(results[applied_id], rows, accounts[applied_id], writes[applied_id]) == (
        expected_view(accounts[applied_id], writes[applied_id], now)
    )

    # Lease lost: recorded, but the token belongs to the new holder and is left as it was.
    lost = results[lost_id]
    assert (lost.applied, lost.deleted) == (False, False)
    assert lost.attempt_id is not None
    assert await runtime.store.account_token(lost_id) == lost_before
    rows = await written(runtime, lost_id)
    assert len(rows.attempts) == 1 and len(rows.exchanges) == 1
    attempt = rows.attempts[0]
    assert attempt["id"] == lost.attempt_id
    assert attempt["exchange_id"] == lost.exchange_id
    assert (attempt["outcome"], attempt["error_code"]) == ("transient", "transient")
    assert attempt["error_message"] == (
        f"{writes[lost_id].error_message} (lease lost: token not updated)"
    )
    assert (attempt["old_expires_at"], attempt["new_expires_at"]) == (
        accounts[lost_id].access_expires_at,
        None,
    )
    exchange = dict(rows.exchanges[0])
    exchange["id"] = exchange["id"] == lost.exchange_id
    assert exchange == expected_exchange(writes[lost_id], lost_id, now)

    # Deleted: only the exchange, detached from the account, kept in its organization.
    gone = results[gone_id]
    assert (gone.applied, gone.deleted, gone.attempt_id) == (False, True, None)
    assert await written(runtime, gone_id) == Written(None, [], [])
    exchange = await exchange_by_id(runtime, gone.exchange_id) or {}
    exchange["id"] = exchange.get("id") == gone.exchange_id
    assert exchange == expected_exchange(writes[gone_id], None, now)
    assert await attempts_of_exchange(runtime, gone.exchange_id) == 0


async def test_a_success_whose_lease_was_lost_applies_no_token_and_no_expiry(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    """eBay granted (and rotated) a token, but another worker holds the lease now."""
    emu, _ = emulator
    (account_id,) = await seed_due_accounts(runtime, emu, 1, "lost_ok")
    clock.advance(minutes=30)
    account = (await claim(runtime, [account_id]))[account_id]
    write = refresh_write(
        runtime, account, ROTATED, await call_ebay(runtime, emu, account, ROTATED)
    )
    await runtime.store.release_lease(account_id, OWNER)
    before = await runtime.store.account_token(account_id)
    result = await runtime.store.finish_refresh(write)
    assert (result.applied, result.deleted) == (False, False)
    # Neither ciphertext, nor an expiry, nor the schedule: the row is exactly as it was.
    assert await runtime.store.account_token(account_id) == before
    attempt = (await written(runtime, account_id)).attempts[0]
    assert (attempt["outcome"], attempt["error_code"]) == ("ok", None)
    assert attempt["error_message"] == "(lease lost: token not updated)"
    assert attempt["new_expires_at"] is None


# c) one bad write in a batch ---------------------------------------------------------------


async def count_rows(runtime: Runtime, table: type[m.Base]) -> int:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(sa.select(sa.func.count()).select_from(table))
        return int(result.scalar_one())


async def one_bad_write_among_good_ones(
    runtime: Runtime,
    emu: Emulator,
    clock: FakeClock,
    spoil: Callable[[RefreshWrite], RefreshWrite],
) -> StoreError:
    """Three writes queued together, the middle one spoiled. The neighbours must be written as
    if alone, only the spoiled one's caller fails, and nothing of it is left half-written.
    Returns the spoiled one's error."""
    ids = await seed_due_accounts(runtime, emu, 3, "spoiled")
    clock.advance(minutes=30)
    accounts = await claim(runtime, ids)
    call = await call_ebay(runtime, emu, accounts[ids[0]], OK)
    writes = {aid: refresh_write(runtime, accounts[aid], OK, call) for aid in ids}
    bad_id = ids[1]
    writes[bad_id] = spoil(writes[bad_id])
    bad_before = await runtime.store.account_token(bad_id)
    exchanges_before = await count_rows(runtime, m.EbayExchange)
    attempts_before = await count_rows(runtime, m.RefreshAttempt)
    now = clock()

    finishes = runtime.store._finishes
    batches, items = finishes.batches, finishes.items
    answers = await asyncio.gather(
        *(runtime.store.finish_refresh(writes[aid]) for aid in ids), return_exceptions=True
    )
    error = answers[1]
    assert isinstance(error, StoreError), repr(error)
    assert not isinstance(error, StoreUnavailable)
    # The shared transaction failed as a whole; each write was then tried alone, and exactly
    # the two good ones committed (the counters count committed transactions only).
    assert (finishes.batches - batches, finishes.items - items) == (2, 2)

    for aid, answer in zip(ids, answers, strict=True):
        if aid == bad_id:
            continue
        assert isinstance(answer, FinishedRefresh), repr(answer)
        rows = await written(runtime, aid)
        assert view(answer, rows, accounts[aid], writes[aid]) == expected_view(
            accounts[aid], writes[aid], now
        )

    # Nothing of the bad write: its token row as claimed (our lease, the old version and
    # ciphertexts), no attempt and no exchange anywhere beyond the neighbours' two.
    assert await runtime.store.account_token(bad_id) == bad_before
    bad_rows = await written(runtime, bad_id)
    assert (bad_rows.attempts, bad_rows.exchanges) == ([], [])
    assert await count_rows(runtime, m.EbayExchange) == exchanges_before + 2
    assert await count_rows(runtime, m.RefreshAttempt) == attempts_before + 2
    return error


async def test_a_write_breaking_a_foreign_key_fails_alone(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock
) -> None:
    """The attempt and exchange name an organization that does not exist: their foreign keys
    refuse it, after the token row was already updated in the same transaction."""
    emu, _ = emulator

    def missing_organization(write: RefreshWrite) -> RefreshWrite:
        account = dataclasses.replace(write.account, organization_id=MISSING_ORGANIZATION)
        return dataclasses.replace(write, account=account)

    error = await one_bad_write_among_good_ones(runtime, emu, clock, missing_organization)
    assert error.message.startswith("constraint violated:")


@pytest.mark.parametrize(
    "database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_write_too_long_for_its_column_fails_alone(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock, database: DatabaseTarget
) -> None:
    """PostgreSQL enforces VARCHAR lengths (SQLite does not): an actor longer than the column
    fails the array statement of the whole batch, and then only its own write."""
    emu, _ = emulator
    # The column is a String: its type has a length (TypeEngine in general does not).
    column_length = m.RefreshAttempt.__table__.c.actor.type.length  # type: ignore[attr-defined]

    def too_long_actor(write: RefreshWrite) -> RefreshWrite:
        return dataclasses.replace(write, actor="x" * (column_length + 1))

    error = await one_bad_write_among_good_ones(runtime, emu, clock, too_long_actor)
    assert "too long" in error.message


# d) the worker's claim-ahead ---------------------------------------------------------------


def make_worker(runtime: Runtime, concurrency: int) -> Worker:
    return Worker(
        store=runtime.store,
        journal=runtime.journal,
        heartbeats=runtime.heartbeats,
        refresher=runtime.refresher,
        config=WorkerConfig(concurrency=concurrency),
        clock=runtime.clock,
    )


async def leased_to(runtime: Runtime, owner: str) -> list[int]:
    return [a.account_id for a in await runtime.store.accounts() if a.lease_owner == owner]


def assert_counts_add_up(counts: CycleCounts | dict[str, Any]) -> None:
    c = counts if isinstance(counts, dict) else dataclasses.asdict(counts)
    assert c["claimed"] == c["refreshed"] + c["failed"] + c["joined"] + c["skipped"], c


async def fates(runtime: Runtime, emu: Emulator, ids: list[int]) -> dict[str, int]:
    """How many accounts were refreshed once, failed once, or never called and are still due;
    none may be left leased, called twice, or called without its result written."""
    now = runtime.clock()
    found: collections.Counter[str] = collections.Counter()
    for aid in ids:
        account = await runtime.store.account_token(aid)
        assert account is not None
        assert account.lease_owner is None, f"account {aid} is still leased"
        calls = emu.calls.count(grant_type="refresh_token", username=account.ebay_username)
        if calls == 0:
            assert account.next_attempt_at is not None and account.next_attempt_at <= now
            assert (account.version, account.failures_in_row) == (0, 0)
            found["untouched"] += 1
        elif account.access_expires_at is not None and account.access_expires_at > now:
            assert calls == 1, f"account {aid} refreshed with {calls} calls"
            found["refreshed"] += 1
        else:
            assert calls == 1, f"account {aid} failed with {calls} calls"
            assert (account.version, account.failures_in_row) == (1, 1)
            found["failed"] += 1
    return dict(found)


async def test_a_worker_stopped_mid_cycle_gives_back_what_it_claimed_ahead(
    runtime: Runtime,
    emulator: tuple[Emulator, str],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu, _ = emulator
    concurrency = 4
    ids = await seed_due_accounts(runtime, emu, 40, "stop")
    # The first calls are held at the client until the stop has landed (not for a fixed
    # latency, which a loaded machine's polling can outlast): the stop surely lands while
    # they are out.
    client = runtime.refresher.client
    send = client.send_token_request
    answer = asyncio.Event()

    async def held(request: PreparedRequest) -> CallResult:
        await answer.wait()
        return await send(request)

    monkeypatch.setattr(client, "send_token_request", held)
    worker = make_worker(runtime, concurrency)
    stop = asyncio.Event()
    cycle = asyncio.create_task(worker.run_once(stop))
    # concurrency slots in flight and one account claimed ahead for the next free slot.
    claimed_ahead = concurrency + 1
    deadline = time.monotonic() + POLL_DEADLINE_S
    while len(await leased_to(runtime, worker.instance_id)) < claimed_ahead:
        assert not cycle.done(), "the cycle ended before it claimed"
        assert time.monotonic() < deadline, "the worker never claimed"
        await asyncio.sleep(0.01)
    # Nothing answered yet: all claimed accounts are in flight or waiting in the buffer.
    assert emu.calls.count(grant_type="refresh_token") == 0
    stop.set()
    # The stop gives back the account claimed ahead at once; then the calls out are answered.
    while len(await leased_to(runtime, worker.instance_id)) > concurrency:
        assert time.monotonic() < deadline + POLL_DEADLINE_S, "the claimed-ahead stayed leased"
        await asyncio.sleep(0.01)
    answer.set()
    report = await asyncio.wait_for(cycle, POLL_DEADLINE_S)

    c = report.counts
    assert (report.status, report.error) == (CycleStatus.OK, None)
    assert c.due == len(ids)
    # The in-flight calls finished and were written; the one claimed ahead was given back.
    assert (c.claimed, c.refreshed, c.failed) == (concurrency, concurrency, 0)
    assert_counts_add_up(c)
    assert await leased_to(runtime, worker.instance_id) == []
    assert await fates(runtime, emu, ids) == {
        "refreshed": concurrency,
        "untouched": len(ids) - concurrency,
    }
    assert await runtime.store.due_count(clock()) == len(ids) - concurrency
    beats = {b.instance_id: b for b in await runtime.heartbeats.all()}
    beat = beats[worker.instance_id].counts
    assert_counts_add_up(beat)
    assert (beat["claimed"], beat["refreshed"]) == (c.claimed, c.refreshed)


@pytest.mark.parametrize("refusal", ["rate_limited", "invalid_client"])
async def test_a_worker_told_to_back_off_gives_back_what_it_claimed_ahead(
    runtime: Runtime, emulator: tuple[Emulator, str], clock: FakeClock, refusal: str
) -> None:
    """A 429 pauses the process and invalid_client ends the cycle's claiming: either way the
    account waiting in the claim-ahead buffer is not started, and not kept leased."""
    emu, _ = emulator
    concurrency = 4
    ids = await seed_due_accounts(runtime, emu, 20, refusal)
    if refusal == "rate_limited":
        emu.set_faults(Faults(latency_ms=200, rate_limited=True, retry_after_s=120))
    else:
        emu.set_faults(Faults(latency_ms=200))
        # The keyset re-registered under another secret: eBay refuses the one we send.
        settings = runtime.settings
        emu.register_app(
            client_id=settings.app_client_id,
            client_secret="rotated-on-ebay",
            ru_name=settings.app_ru_name,
            accept_url=settings.callback_url,
        )
    worker = make_worker(runtime, concurrency)
    report = await asyncio.wait_for(worker.run_once(), POLL_DEADLINE_S)

    c = report.counts
    assert report.status is CycleStatus.ERROR
    assert (c.claimed, c.failed, c.refreshed) == (concurrency, concurrency, 0)
    assert_counts_add_up(c)
    deferred = c.deferred_pause if refusal == "rate_limited" else c.deferred_config
    assert deferred == len(ids) - concurrency  # the given-back account is due again
    beats = {b.instance_id: b for b in await runtime.heartbeats.all()}
    beat = beats[worker.instance_id].counts
    assert_counts_add_up(beat)
    assert (beat["claimed"], beat["failed"]) == (c.claimed, c.failed)
    assert await leased_to(runtime, worker.instance_id) == []
    assert await fates(runtime, emu, ids) == {
        "failed": concurrency,
        "untouched": len(ids) - concurrency,
    }
