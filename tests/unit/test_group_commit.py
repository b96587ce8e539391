"""GroupCommit: concurrent writes share transactions, yet every caller gets its own answer.

The collaborator is a fake ``write_batch`` defined here (the unit's database, not our code): it
records each call, can be held on an :class:`asyncio.Event`, and commits a batch all-or-nothing.
Nothing here sleeps on the wall clock; "at once" means within a few turns of the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import pytest

from ebay_connector.db.group_commit import DEFAULT_MAX_BATCH, GroupCommit

pytestmark = pytest.mark.unit

# A hang in the code under test must fail the test, not stall the run. Nothing here waits for
# real time to pass; this only bounds a deadlock.
DEADLOCK_S = 5.0


class Bad(Exception):
    """What a constraint violation looks like to GroupCommit: fails the batch it is in."""


class Down(Exception):
    """What an unavailable database looks like: retrying alone would not help."""


@dataclass
class FakeDatabase:
    """``write_batch`` with a transaction's semantics: a batch with a bad item commits nothing."""

    bad: frozenset[object] = frozenset()
    down: bool = False
    gate: asyncio.Event | None = None  # while set to an unset event, the next write blocks
    calls: list[list[object]] = field(default_factory=list)
    committed: list[list[object]] = field(default_factory=list)
    short_by: int = 0  # return this many results too few (a buggy write_batch)

    async def write_batch(self, items: Sequence[object]) -> list[str]:
        self.calls.append(list(items))
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        if self.down:
            raise Down("database unavailable")
        bad = [item for item in items if item in self.bad]
        if bad:
            raise Bad(f"constraint violated by {bad[0]!r}")
        self.committed.append(list(items))
        return [f"written:{item}" for item in items][: len(items) - self.short_by]


def isolate_bad(exc: BaseException) -> bool:
    return not isinstance(exc, Down)


async def turns(n: int = 5) -> None:
    """Let the event loop run ``n`` rounds (no wall-clock time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def held_first_batch(
    db: FakeDatabase, commit: GroupCommit[object, str], first: object
) -> tuple[asyncio.Event, asyncio.Task[str]]:
    """Submit ``first`` and wait until its batch is being written and blocked on the gate."""
    gate = asyncio.Event()
    db.gate = gate
    task = asyncio.create_task(commit.submit(first))
    await turns()
    assert db.calls == [[first]], "the first submit did not start its write at once"
    return gate, task


def flatten(batches: list[list[object]]) -> list[object]:
    return [item for batch in batches for item in batch]


async def test_submits_arriving_during_a_write_share_the_next_batch() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, max_batch=64)
    gate, first = await held_first_batch(db, commit, 0)
    later = [asyncio.create_task(commit.submit(i)) for i in range(1, 51)]
    await turns()
    # Still held: nothing else may have been written beside the blocked transaction.
    assert db.calls == [[0]]
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), DEADLOCK_S)
    assert results == [f"written:{i}" for i in range(51)]
    assert db.calls == [[0], list(range(1, 51))]
    assert (commit.batches, commit.items) == (2, 51)


async def test_a_lone_submit_is_written_at_once_without_a_timer() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch)
    task = asyncio.create_task(commit.submit("alone"))
    # A timer (however short) that waits for company would not have called write_batch yet:
    # only loop turns pass here, never time.
    await turns()
    assert db.calls == [["alone"]]
    assert task.done()
    assert task.result() == "written:alone"
    # The drain ended with the queue; the next lone submit starts a new one just as fast.
    again = asyncio.create_task(commit.submit("again"))
    await turns()
    assert again.done() and again.result() == "written:again"
    assert db.calls == [["alone"], ["again"]]
    assert (commit.batches, commit.items) == (2, 2)


@pytest.mark.parametrize("max_batch", [1, 4, DEFAULT_MAX_BATCH])
async def test_batches_never_exceed_max_batch_and_keep_submission_order(max_batch: int) -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, max_batch=max_batch)
    gate, first = await held_first_batch(db, commit, 0)
    queued = 2 * max_batch + 3  # full batches, and a partial one where max_batch allows
    later = [asyncio.create_task(commit.submit(i)) for i in range(1, queued + 1)]
    await turns()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), DEADLOCK_S)
    assert results == [f"written:{i}" for i in range(queued + 1)]
    full, rest = divmod(queued, max_batch)
    assert [len(batch) for batch in db.calls] == [1] + [max_batch] * full + [rest] * (rest > 0)
    assert flatten(db.calls) == list(range(queued + 1))
    assert (commit.batches, commit.items) == (len(db.calls), queued + 1)


def test_max_batch_below_one_is_refused() -> None:
    async def never(items: Sequence[object]) -> list[object]:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(never, max_batch=0)


@pytest.mark.parametrize("max_batch", [2, 64])
async def test_items_of_one_key_never_share_a_batch_and_keep_their_order(max_batch: int) -> None:
    db = FakeDatabase()

    def account(item: object) -> Hashable:
        assert isinstance(item, tuple)
        key: Hashable = item[0]
        return key

    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, key=account, max_batch=max_batch)
    gate, first = await held_first_batch(db, commit, ("z", 0))
    items = [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2), ("c", 1), ("z", 1)]
    later = [asyncio.create_task(commit.submit(item)) for item in items]
    await turns()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), DEADLOCK_S)
    assert results == [f"written:{item}" for item in [("z", 0), *items]]
    for batch in db.calls:
        keys = [account(item) for item in batch]
        assert len(keys) == len(set(keys)), f"one key twice in a transaction: {batch}"
        assert len(batch) <= max_batch
    written = flatten(db.calls)
    for key in "abcz":
        in_submission = [item for item in [("z", 0), *items] if item[0] == key]
        assert [item for item in written if account(item) == key] == in_submission
    if max_batch == 64:
        # Each batch takes the oldest item of every key: as few transactions as the keys allow
        # (the blocked one, then three for "a"), not one per item.
        assert len(db.calls) == 4


async def test_a_bad_item_fails_only_its_own_caller_when_isolated() -> None:
    db = FakeDatabase(bad=frozenset({"bad"}))
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, isolate=isolate_bad)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(commit.submit(i) for i in ["one", "bad", "three"]), return_exceptions=True
        ),
        DEADLOCK_S,
    )
    assert results[0] == "written:one"
    assert results[2] == "written:three"
    assert isinstance(results[1], Bad)
    assert "'bad'" in str(results[1])
    # One transaction for all three, which failed; then each item alone.
    assert db.calls == [["one", "bad", "three"], ["one"], ["bad"], ["three"]]
    assert db.committed == [["one"], ["three"]]
    assert (commit.batches, commit.items) == (2, 2)
    # The queue is not stuck after a failure.
    assert await asyncio.wait_for(commit.submit("after"), DEADLOCK_S) == "written:after"


async def test_a_failure_not_worth_isolating_fails_every_caller_of_the_batch_once() -> None:
    db = FakeDatabase(down=True)
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, isolate=isolate_bad)
    results = await asyncio.wait_for(
        asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True), DEADLOCK_S
    )
    assert all(isinstance(r, Down) for r in results)
    assert results[0] is results[1] is results[2]  # the one error of the one transaction
    assert db.calls == [[0, 1, 2]]  # no item-by-item retries against a database that is down
    assert (commit.batches, commit.items) == (0, 0)
    db.down = False
    assert await asyncio.wait_for(commit.submit(3), DEADLOCK_S) == "written:3"


async def test_isolate_false_fails_all_even_when_one_item_is_to_blame() -> None:
    db = FakeDatabase(bad=frozenset({"bad"}))
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, isolate=lambda _exc: False)
    results = await asyncio.wait_for(
        asyncio.gather(*(commit.submit(i) for i in ["one", "bad"]), return_exceptions=True),
        DEADLOCK_S,
    )
    assert all(isinstance(r, Bad) for r in results)
    assert db.calls == [["one", "bad"]]
    assert db.committed == []


async def test_a_cancelled_caller_does_not_withdraw_its_item() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch)
    gate, first = await held_first_batch(db, commit, "first")
    impatient = asyncio.create_task(commit.submit("impatient"))
    await turns()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    patient = asyncio.create_task(commit.submit("patient"))
    await turns()
    gate.set()
    assert await asyncio.wait_for(first, DEADLOCK_S) == "written:first"
    assert await asyncio.wait_for(patient, DEADLOCK_S) == "written:patient"
    # The exchange it records happened: it is written, in its place, beside its neighbour.
    assert db.committed == [["first"], ["impatient", "patient"]]
    assert (commit.batches, commit.items) == (2, 3)


async def test_a_caller_cancelled_during_its_write_still_gets_it_committed() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch)
    gate, first = await held_first_batch(db, commit, "in-flight")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await asyncio.wait_for(commit.flush(), DEADLOCK_S)
    assert db.committed == [["in-flight"]]
    assert (commit.batches, commit.items) == (1, 1)


async def test_flush_waits_for_everything_queued() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, max_batch=2)
    await asyncio.wait_for(commit.flush(), DEADLOCK_S)  # nothing queued: returns at once
    gate, first = await held_first_batch(db, commit, 0)
    callers = [asyncio.create_task(commit.submit(i)) for i in range(1, 6)]
    flushing = asyncio.create_task(commit.flush())
    await turns()
    assert not flushing.done()
    assert db.committed == []
    gate.set()
    await asyncio.wait_for(flushing, DEADLOCK_S)
    # Everything queued before flush returned is written, across several transactions.
    assert flatten(db.committed) == list(range(6))
    assert len(db.committed) == 4
    assert await asyncio.gather(first, *callers) == [f"written:{i}" for i in range(6)]


async def test_flush_also_waits_for_items_queued_while_it_waits() -> None:
    db = FakeDatabase()
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch)
    gate, first = await held_first_batch(db, commit, 0)
    flushing = asyncio.create_task(commit.flush())
    await turns()
    late = asyncio.create_task(commit.submit("late"))
    await turns()
    gate.set()
    await asyncio.wait_for(flushing, DEADLOCK_S)
    assert db.committed == [[0], ["late"]]
    await asyncio.gather(first, late)


async def test_flush_returns_after_a_failed_batch() -> None:
    db = FakeDatabase(down=True)
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch, isolate=isolate_bad)
    caller = asyncio.create_task(commit.submit(1))
    await asyncio.wait_for(commit.flush(), DEADLOCK_S)
    with pytest.raises(Down):
        await caller


@pytest.mark.parametrize("short_by", [1, 3])
async def test_write_batch_returning_the_wrong_number_of_results_fails_callers(
    short_by: int,
) -> None:
    db = FakeDatabase(short_by=short_by)
    commit: GroupCommit[object, str] = GroupCommit(db.write_batch)
    results = await asyncio.wait_for(
        asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True), DEADLOCK_S
    )
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert f"returned {3 - short_by} results for 3" in str(results[0])
    assert (commit.batches, commit.items) == (0, 0)  # not counted as written
    # Not retried item by item: that is a bug in write_batch, not something one item caused.
    assert db.calls == [[0, 1, 2]]


async def test_a_write_batch_answering_nonsense_fails_its_callers_and_the_drain_goes_on() -> None:
    async def write_batch(items: Sequence[object]) -> list[str]:
        if 0 in items:
            return None  # type: ignore[return-value]  # the bug under test: len(None) raises
        return [f"written:{item}" for item in items]

    commit: GroupCommit[object, str] = GroupCommit(write_batch)
    with pytest.raises(TypeError):
        await asyncio.wait_for(commit.submit(0), DEADLOCK_S)
    # The drain survived: a later submit is written, not stuck behind a dead task.
    assert await asyncio.wait_for(commit.submit(1), DEADLOCK_S) == "written:1"


@pytest.mark.parametrize("broken", ["key", "isolate"])
async def test_a_raising_key_or_isolate_fails_the_callers_instead_of_hanging(broken: str) -> None:
    def fails(_: object) -> bool:
        raise ValueError(f"{broken} is broken")

    db = FakeDatabase(bad=frozenset({1}))
    if broken == "key":
        commit: GroupCommit[object, str] = GroupCommit(db.write_batch, key=fails)
    else:
        commit = GroupCommit(db.write_batch, isolate=fails)
    results = await asyncio.wait_for(
        asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True), DEADLOCK_S
    )
    assert all(isinstance(r, ValueError) for r in results), results
