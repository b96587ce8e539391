"""Group commit: writes that arrive while one is being written share the next transaction.

A finished refresh writes two or three small statements; most of what its write costs the event
loop is the transaction around them — a pool checkout with its ping, BEGIN, COMMIT — and, on
SQLite, waiting for the one writer (see docs/decisions.md, "Group commit").

So writes queue here and one task writes the queue: whatever has gathered while the previous
transaction ran goes into the next one (at most ``max_batch`` at a time). There is no timer: a
lone write (an on-demand refresh on a quiet system) starts at once, and under load the batches
grow by themselves. Each caller still gets its own result, after the commit that holds it.

A batch is all-or-nothing. If it fails for a reason that may belong to one item (a constraint,
a deadlock), each item is written again alone, so one bad row never fails its neighbours; if
the database is unavailable, every caller gets that error at once.

A caller that stops waiting (cancelled) does not withdraw its item: the HTTP exchange it
records happened, and the token it carries is the one eBay now considers current.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 32


class GroupCommit(Generic[T, R]):
    """Queue items; write them in batches with ``write_batch`` (one transaction per call).

    ``write_batch`` returns one result per item, in order, or raises for the whole batch.
    ``isolate(exc)`` says whether a failed batch is worth retrying item by item. Items with the
    same ``key`` never share a batch; they are written in the order they were submitted.
    """

    def __init__(
        self,
        write_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        key: Callable[[T], Hashable] = id,
        isolate: Callable[[BaseException], bool] = lambda _exc: True,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write_batch = write_batch
        self._key = key
        self._isolate = isolate
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        # Figures for benchmarks and tests: how many transactions carried how many items.
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the transaction holding it committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            # No await between the emptiness check and clearing _task (finally): a submit cannot
            # slip in between and find a task that is about to end.
            while self._pending:
                batch = []
                try:
                    batch = self._next_batch()
                    await self._write(batch)
                except Exception as exc:  # a bug in write_batch, key or isolate
                    # Its callers learn of it instead of waiting forever; the drain goes on.
                    for _, future in batch or self._pending:
                        _fail(future, exc)
                    if not batch:
                        self._pending.clear()
                batch = []
        except asyncio.CancelledError:
            # The loop is shutting down: nobody will write these, so nobody may wait for them.
            for _, future in (*batch, *self._pending):
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._task = None

    def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            key = self._key(entry[0])
            if len(batch) < self.max_batch and key not in keys:
                batch.append(entry)
            else:
                rest.append(entry)
            # A key seen once stays taken, so a later item never overtakes an earlier one.
            keys.add(key)
        self._pending = rest
        return batch

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write_batch([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self._isolate(exc):
                for entry in batch:
                    await self._write([entry])
                return
            for _, future in batch:
                _fail(future, exc)
            return
        if len(results) != len(batch):  # a bug in write_batch, not a database failure
            raise RuntimeError(f"write_batch returned {len(results)} results for {len(batch)}")
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
