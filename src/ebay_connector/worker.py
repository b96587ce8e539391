"""The scheduled worker: refreshes every due account through the canonical path, and says so.

Each cycle ends with a heartbeat whose counts add up and whose status is derived from them by a
pure function: a cycle in which any account failed is never ``ok``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from ebay_connector import log
from ebay_connector.clock import Clock, utcnow
from ebay_connector.errors import ConnectorError
from ebay_connector.exchange import Trigger
from ebay_connector.outcome import Disposition, disposition
from ebay_connector.refresh import Refresher, RefreshResult
from ebay_connector.store import HeartbeatRow, Store
from ebay_connector.token_state import TokenState
from ebay_connector.version import code_version

logger = logging.getLogger(__name__)

MAX_BATCH = 500


class CycleStatus(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # some accounts failed this cycle
    ERROR = "error"  # the cycle itself failed, the app is misconfigured, or every attempt failed
    STARTING = "starting"


@dataclass
class CycleCounts:
    """What one cycle did. ``due == refreshed + failed + joined + skipped`` always holds."""

    due: int = 0
    refreshed: int = 0
    failed: int = 0  # transient + configuration + newly needs_reconnect
    transient: int = 0
    configuration: int = 0
    needs_reconnect: int = 0  # moved to needs_reconnect in this cycle
    joined: int = 0  # another caller refreshed it meanwhile
    skipped: int = 0  # became needs_reconnect or was deleted before its turn
    waiting_reconnect: int = 0  # accounts in needs_reconnect, not attempted (not failures)
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, result: RefreshResult) -> None:
        self.outcomes[result.outcome.value] = self.outcomes.get(result.outcome.value, 0) + 1
        if result.skipped:
            self.skipped += 1
        elif result.joined:
            self.joined += 1
        elif result.ok:
            self.refreshed += 1
        else:
            self.failed += 1
            kind = disposition(result.outcome)
            if kind is Disposition.PERMANENT:
                self.needs_reconnect += 1
            elif kind is Disposition.CONFIGURATION:
                self.configuration += 1
            else:
                self.transient += 1


def cycle_status(counts: CycleCounts, error: str | None) -> CycleStatus:
    """The honest status of a cycle."""
    if error is not None or counts.configuration > 0:
        return CycleStatus.ERROR
    if counts.failed > 0:
        attempted = counts.refreshed + counts.failed
        return (
            CycleStatus.ERROR if counts.refreshed == 0 and attempted > 1 else CycleStatus.DEGRADED
        )
    return CycleStatus.OK


@dataclass(frozen=True)
class CycleReport:
    started_at: datetime
    finished_at: datetime
    counts: CycleCounts
    status: CycleStatus
    error: str | None
    results: tuple[RefreshResult, ...]


@dataclass(frozen=True)
class WorkerConfig:
    interval: timedelta = timedelta(seconds=60)
    concurrency: int = 32
    batch: int = MAX_BATCH


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs cycles; one heartbeat row per instance."""

    def __init__(
        self,
        *,
        store: Store,
        refresher: Refresher,
        config: WorkerConfig,
        clock: Clock = utcnow,
        instance_id: str | None = None,
    ) -> None:
        self.store = store
        self.refresher = refresher
        self.config = config
        self.clock = clock
        self.instance_id = instance_id or new_instance_id()
        self.started_at = clock()
        self.cycles = 0
        self.version = code_version()

    async def run_once(self) -> CycleReport:
        """One cycle: refresh every due account, then write the heartbeat."""
        started = self.clock()
        counts = CycleCounts()
        results: list[RefreshResult] = []
        error: str | None = None
        try:
            due = await self.store.due_accounts(started, self.config.batch)
            counts.due = len(due)
            counts.waiting_reconnect = (await self.store.count_by_state()).get(
                TokenState.NEEDS_RECONNECT.value, 0
            )
            semaphore = asyncio.Semaphore(self.config.concurrency)

            async def one(account_id: int) -> RefreshResult | ConnectorError:
                async with semaphore:
                    try:
                        return await self.refresher.refresh(account_id, Trigger.SCHEDULED)
                    except ConnectorError as exc:
                        return exc

            for outcome in await asyncio.gather(*(one(a) for a in due)):
                if isinstance(outcome, ConnectorError):
                    counts.failed += 1
                    counts.transient += 1
                    error = f"{outcome.code}: {outcome.message}"
                else:
                    results.append(outcome)
                    counts.add(outcome)
        except ConnectorError as exc:
            error = f"{exc.code}: {exc.message}"
        status = cycle_status(counts, error)
        finished = self.clock()
        self.cycles += 1
        await self._beat(status, counts, error, started, finished)
        log.event(
            logger,
            "worker.cycle",
            logging.INFO if status is CycleStatus.OK else logging.WARNING,
            instance=self.instance_id,
            status=status.value,
            due=counts.due,
            refreshed=counts.refreshed,
            failed=counts.failed,
            needs_reconnect=counts.needs_reconnect,
            waiting_reconnect=counts.waiting_reconnect,
            error=error,
        )
        return CycleReport(started, finished, counts, status, error, tuple(results))

    async def _beat(
        self,
        status: CycleStatus,
        counts: CycleCounts,
        error: str | None,
        started: datetime | None,
        finished: datetime | None,
    ) -> None:
        try:
            await self.store.save_heartbeat(
                HeartbeatRow(
                    instance_id=self.instance_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    version=self.version,
                    started_at=self.started_at,
                    interval_seconds=int(self.config.interval.total_seconds()),
                    last_cycle_started_at=started,
                    last_cycle_finished_at=finished,
                    status=status.value,
                    counts=asdict(counts),
                    last_error=error,
                    cycles=self.cycles,
                    updated_at=self.clock(),
                )
            )
        except ConnectorError as exc:
            # A heartbeat we cannot write is itself the signal (it goes stale); say why here.
            log.event(logger, "worker.heartbeat_failed", logging.ERROR, error=exc.message)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set; wake at the interval or when stopped."""
        log.event(logger, "worker.started", instance=self.instance_id, version=self.version)
        await self._beat(CycleStatus.STARTING, CycleCounts(), None, None, None)
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except ConnectorError as exc:  # the heartbeat write itself failed
                    log.event(logger, "worker.cycle_failed", logging.ERROR, error=exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.interval.total_seconds())
        finally:
            try:
                await self.store.delete_heartbeat(self.instance_id)
            except ConnectorError:
                log.event(logger, "worker.unregister_failed", logging.WARNING)
            log.event(logger, "worker.stopped", instance=self.instance_id)
