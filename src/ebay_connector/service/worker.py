"""The scheduled worker: claims due accounts in batches, refreshes them through the canonical
path with bounded concurrency, and says honestly what it did.

Replicas scale out over the database: each claims disjoint batches (``Store.claim_due``), so no
account is refreshed twice in a due window and a crashed worker's claims expire and are taken
over. Each cycle ends with a heartbeat whose counts add up and whose status is derived from them
by a pure function: a cycle in which any account failed is never ``ok``.

Memory stays flat however many accounts a cycle refreshes: each result is counted the moment it
finishes and then dropped; the report keeps counts and a few failed accounts, nothing per account.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ebay_connector import log
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Action, Trigger
from ebay_connector.core.outcome import (
    AppCredentials,
    Disposition,
    Outcome,
    app_credentials,
    disposition,
)
from ebay_connector.core.quota import WINDOW, QuotaConfig, QuotaState
from ebay_connector.core.schedule import AppVerdict, ClaimAction, app_verdict, next_claim, next_wake
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.heartbeats import HeartbeatRow, Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import AccountToken, Store
from ebay_connector.errors import ConnectorError
from ebay_connector.service.chores import Chore
from ebay_connector.service.refresh import APP_CREDENTIALS_REJECTED, Refresher, RefreshResult
from ebay_connector.version import code_version

logger = logging.getLogger(__name__)

FAILURE_SAMPLE = 20  # failed accounts a cycle report names; the counts have them all
PRUNE_FACTOR = 10  # heartbeats silent for 10 intervals are pruned and their leases released


class CycleStatus(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # some accounts failed this cycle
    ERROR = "error"  # the cycle itself failed, the app is misconfigured, or every attempt failed
    STARTING = "starting"


@dataclass
class CycleCounts:
    """What one cycle did. ``claimed == refreshed + failed + joined + skipped`` always holds."""

    due: int = 0  # due when the cycle started
    claimed: int = 0
    refreshed: int = 0
    failed: int = 0  # transient + configuration + newly needs_reconnect
    transient: int = 0
    configuration: int = 0
    needs_reconnect: int = 0  # moved to needs_reconnect in this cycle
    joined: int = 0  # another caller refreshed it meanwhile
    skipped: int = 0  # became needs_reconnect or was deleted before its turn
    deferred_quota: int = 0  # due, but left for later to keep the quota reserve
    deferred_pause: int = 0  # due, but eBay asked us to pause (429)
    deferred_config: int = 0  # due, but eBay rejected the application credentials this cycle
    waiting_reconnect: int = 0  # accounts in needs_reconnect, not attempted (not failures)
    outcomes: dict[str, int] = field(default_factory=dict)
    chores: dict[str, dict[str, int]] = field(default_factory=dict)  # housekeeping, by chore

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
        return CycleStatus.ERROR if counts.refreshed == 0 else CycleStatus.DEGRADED
    return CycleStatus.OK


@dataclass(frozen=True)
class FailedAccount:
    """One account whose refresh failed in a cycle (no secret: the outcome and its message)."""

    account_id: int
    outcome: Outcome
    message: str


@dataclass
class CycleTally:
    """A cycle's running account: each result is counted as it finishes, then dropped."""

    counts: CycleCounts = field(default_factory=CycleCounts)
    failures: list[FailedAccount] = field(default_factory=list)  # the first FAILURE_SAMPLE
    answered: set[Outcome] = field(default_factory=set)  # what eBay itself said this cycle

    def add(self, result: RefreshResult) -> None:
        self.counts.add(result)
        if result.called_ebay and not result.joined:
            self.answered.add(result.outcome)
        if result.failed and len(self.failures) < FAILURE_SAMPLE:
            self.failures.append(FailedAccount(result.account_id, result.outcome, result.message))


@dataclass(frozen=True)
class CycleReport:
    started_at: datetime
    finished_at: datetime
    counts: CycleCounts
    status: CycleStatus
    error: str | None
    failures: tuple[FailedAccount, ...]  # a sample: at most FAILURE_SAMPLE of counts.failed
    quota: QuotaState | None


@dataclass(frozen=True)
class WorkerConfig:
    interval: timedelta = timedelta(seconds=60)
    concurrency: int = 32
    lease: timedelta = timedelta(seconds=120)
    drain: timedelta = timedelta(seconds=30)
    quota: QuotaConfig = field(default_factory=QuotaConfig)


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs cycles; one heartbeat row per instance. The instance id is the lease owner."""

    def __init__(
        self,
        *,
        store: Store,
        journal: Journal,
        heartbeats: Heartbeats,
        refresher: Refresher,
        config: WorkerConfig,
        clock: Clock = utcnow,
        chores: Sequence[Chore] = (),
    ) -> None:
        self.chores = list(chores)
        # Told of every finished cycle (metrics); must be quick and must not raise.
        self.cycle_observers: list[Callable[[CycleReport], None]] = []
        self.store = store
        self.journal = journal
        self.heartbeats = heartbeats
        self.refresher = refresher
        self.config = config
        self.clock = clock
        # Claims, leases and the heartbeat all carry the refresher's owner id: a claim made under
        # another name would not match the lease the refresh then finishes under.
        self.instance_id = refresher.owner
        self.started_at = clock()
        self.cycles = 0
        self.version = code_version()
        # eBay said invalid_client: every account would get the same answer, so the next cycle
        # sends one probe before it claims more (until a refresh succeeds again).
        self.app_rejected = False

    async def run_once(self, stop: asyncio.Event | None = None) -> CycleReport:
        """One cycle: claim and refresh due accounts until none is left (or quota, pause, stop)."""
        stop = stop or asyncio.Event()
        started = self.clock()
        tally = CycleTally()
        counts = tally.counts
        error: str | None = None
        quota: QuotaState | None = None
        try:
            await self._prune_stalled(started)
            quota = QuotaState(await self.journal.quota_usage(started - WINDOW), self.config.quota)
            counts.due = await self.store.due_count(started)
            counts.waiting_reconnect = (await self.store.count_by_state()).get(
                TokenState.NEEDS_RECONNECT.value, 0
            )
            error = await self._drive(stop, quota.proactive_budget(), tally)
            if counts.deferred_quota or counts.deferred_pause or counts.deferred_config:
                left = await self.store.due_count(self.clock())
                if counts.deferred_config:
                    counts.deferred_config = left
                elif counts.deferred_quota:
                    counts.deferred_quota = left
                else:
                    counts.deferred_pause = left
        except ConnectorError as exc:
            error = f"{exc.code}: {exc.message}"
        if not stop.is_set():
            await self._chores(counts)
        status = cycle_status(counts, error)
        finished = self.clock()
        self.cycles += 1
        credentials = app_credentials(tally.answered)
        await self._beat(status, counts, error, started, finished, quota, credentials)
        log.event(
            logger,
            "worker.cycle",
            logging.INFO if status is CycleStatus.OK else logging.WARNING,
            instance=self.instance_id,
            status=status.value,
            due=counts.due,
            claimed=counts.claimed,
            refreshed=counts.refreshed,
            failed=counts.failed,
            needs_reconnect=counts.needs_reconnect,
            deferred_quota=counts.deferred_quota,
            waiting_reconnect=counts.waiting_reconnect,
            failed_accounts=" ".join(f"{f.account_id}:{f.outcome.value}" for f in tally.failures)
            or None,
            error=error,
        )
        report = CycleReport(started, finished, counts, status, error, tuple(tally.failures), quota)
        for observer in self.cycle_observers:
            try:
                observer(report)
            except Exception:  # an observer's bug must never end the worker
                logger.exception("worker.observer_failed")
        return report

    async def _chores(self, counts: CycleCounts) -> None:
        """Run the housekeeping after the refreshes; a failing chore is reported, not fatal."""
        for chore in self.chores:
            done: Mapping[str, int]
            try:
                done = await chore.run(self.clock())
            except ConnectorError as exc:
                log.event(
                    logger,
                    "worker.chore_failed",
                    logging.ERROR,
                    chore=chore.name,
                    code=exc.code,
                    error=exc.message,
                )
                done = {"failed": 1}
            except Exception:
                logger.exception("worker.chore_crashed")
                done = {"failed": 1}
            if done:
                counts.chores[chore.name] = dict(done)

    async def _drive(self, stop: asyncio.Event, budget: int, tally: CycleTally) -> str | None:
        """Keep up to ``concurrency`` refreshes in flight, claiming as slots free up.

        The first ``invalid_client`` ends the claiming for this cycle: the application's
        credentials are wrong, so every further call would burn quota for the same answer.
        """
        counts = tally.counts
        concurrency = self.config.concurrency
        # Claim in batches (not one round trip per account), but small ones, and AHEAD: a claim
        # runs beside the refreshes and fills a small buffer (see core.schedule.next_claim).
        in_flight: set[asyncio.Task[RefreshResult]] = set()
        ready: collections.deque[AccountToken] = collections.deque()
        claiming: asyncio.Task[list[AccountToken]] | None = None
        stopping: asyncio.Future[Any] | None = None
        asked = 0  # how many the running claim asked for
        slots: dict[int, datetime] = {}  # claimed account → the ledger minute of its quota slot
        error: str | None = None
        exhausted = False
        probing = self.app_rejected  # one account at a time until eBay accepts us again
        try:
            while True:
                if ready and (
                    stop.is_set() or error is not None or self.refresher.pacer.paused(self.clock())
                ):
                    counts.claimed -= await self._unclaim(list(ready), slots)
                    ready.clear()
                while ready and len(in_flight) < concurrency:
                    in_flight.add(self._start(ready.popleft()))
                if claiming is None and not exhausted and not stop.is_set():
                    now = self.clock()
                    step = next_claim(
                        concurrency=concurrency,
                        in_flight=len(in_flight),
                        ready=len(ready),
                        claimed=counts.claimed,
                        budget=budget,
                        probing=probing,
                        paused=self.refresher.pacer.paused(now),
                    )
                    if step.action is ClaimAction.CLAIM:
                        asked = step.size
                        claiming = asyncio.create_task(self._claim(now, asked, slots, counts))
                    elif step.action is ClaimAction.DEFER_PAUSE:
                        counts.deferred_pause, exhausted = 1, True  # counted once the cycle ends
                    elif step.action is ClaimAction.DEFER_QUOTA:
                        counts.deferred_quota, exhausted = 1, True
                if not in_flight and claiming is None:
                    return error
                timeout = self.config.drain.total_seconds() if stop.is_set() else None
                waiting: set[asyncio.Future[Any]] = {*in_flight}
                if claiming is not None:
                    waiting.add(claiming)
                if ready and not stop.is_set():
                    # A stop gives back the claimed-ahead accounts now, not after the next
                    # in-flight refresh (which may take up to the HTTP timeout).
                    if stopping is None:
                        stopping = asyncio.ensure_future(stop.wait())
                    waiting.add(stopping)
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # draining, and the in-flight calls outlived the drain timeout
                    return "stopped before in-flight refreshes finished"
                if stopping is not None and stopping in done:
                    done.discard(stopping)
                if claiming is not None and claiming in done:
                    done.discard(claiming)
                    batch, claiming = claiming.result(), None
                    counts.claimed += len(batch)
                    ready.extend(batch)
                    exhausted = exhausted or len(batch) < asked
                for task in done:
                    in_flight.discard(task)
                    result = task.result()
                    tally.add(result)
                    minute = slots.pop(result.account_id, None)
                    if minute is not None and not result.called_ebay:
                        await self._give_back({minute: 1})
                    verdict = app_verdict(
                        result.outcome, called_ebay=result.called_ebay, joined=result.joined
                    )
                    if verdict is AppVerdict.REJECTED:
                        if error is None:
                            log.event(
                                logger,
                                "worker.app_rejected",
                                logging.ERROR,
                                instance=self.instance_id,
                                error=APP_CREDENTIALS_REJECTED,
                            )
                        error = APP_CREDENTIALS_REJECTED
                        self.app_rejected = exhausted = True
                        counts.deferred_config = 1  # counted once the cycle ends
                    elif verdict is not AppVerdict.UNHEARD:
                        # eBay got past our credentials (or failed for another reason): claim
                        # widely again; only a success clears the probe for later cycles.
                        probing = False
                        if verdict is AppVerdict.ACCEPTED:
                            self.app_rejected = False
        except ConnectorError as exc:
            error = f"{exc.code}: {exc.message}"
            return error
        finally:
            if stopping is not None:
                stopping.cancel()
            if claiming is not None:
                # Not cancelled: a claim cancelled after its commit would strand its leases
                # until they expire. Whatever it took is given back with the rest of `ready`.
                with contextlib.suppress(ConnectorError):
                    taken = await claiming
                    counts.claimed += len(taken)
                    ready.extend(taken)
            for task in in_flight:
                task.cancel()  # their refresh releases the lease on the way out
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            if ready:
                counts.claimed -= await self._unclaim(list(ready), slots)

    async def _claim(
        self, now: datetime, asked: int, slots: dict[int, datetime], counts: CycleCounts
    ) -> list[AccountToken]:
        """Reserve quota slots, then claim as many due accounts as slots were granted.

        The slots come from the proactive share of eBay's limit, atomically across replicas
        (each replica's own budget, read at its cycle's start, cannot see the others' spending).
        """
        grant = Action.REFRESH_TOKEN.value
        reservation = await self.refresher.ledger.reserve(
            grant, asked, self.config.quota.proactive_ceiling(), now
        )
        if reservation.granted < asked:
            counts.deferred_quota = 1  # counted once the cycle ends
        if reservation.granted == 0:
            return []
        try:
            batch = await self.store.claim_due(
                self.instance_id, now, now + self.config.lease, reservation.granted
            )
        except ConnectorError:
            await self._give_back({reservation.minute: reservation.granted})
            raise
        await self._give_back({reservation.minute: reservation.granted - len(batch)})
        for account in batch:
            slots[account.account_id] = reservation.minute
        return batch

    async def _give_back(self, minutes: Mapping[datetime, int]) -> None:
        """Return quota slots whose calls were not sent; on failure they stay counted (safe)."""
        grant = Action.REFRESH_TOKEN.value
        for minute, count in minutes.items():
            try:
                await self.refresher.ledger.release(grant, minute, count)
            except ConnectorError:
                log.event(logger, "worker.quota_release_failed", logging.WARNING, slots=count)

    async def _unclaim(self, accounts: list[AccountToken], slots: dict[int, datetime]) -> int:
        """Give back claimed accounts this cycle will not start, and their quota slots;
        returns how many."""
        if not accounts:
            return 0
        unsent: collections.Counter[datetime] = collections.Counter()
        for account in accounts:
            minute = slots.pop(account.account_id, None)
            if minute is not None:
                unsent[minute] += 1
        await self._give_back(unsent)
        try:
            await self.store.release_claims([a.account_id for a in accounts], self.instance_id)
        except ConnectorError:
            # Their leases expire by themselves; another worker takes them over then.
            log.event(logger, "worker.unclaim_failed", logging.WARNING, accounts=len(accounts))
        return len(accounts)

    def _start(self, account: AccountToken) -> asyncio.Task[RefreshResult]:
        return asyncio.create_task(self._refresh(account))

    async def _refresh(self, account: AccountToken) -> RefreshResult:
        """One claimed account; a failure of our own (database down) is that account's result."""
        try:
            return await self.refresher.refresh_claimed(account, Trigger.SCHEDULED)
        except ConnectorError as exc:
            log.event(
                logger,
                "worker.refresh_error",
                logging.ERROR,
                account=account.account_id,
                code=exc.code,
                error=exc.message,
            )
            return RefreshResult(
                account_id=account.account_id,
                trigger=Trigger.SCHEDULED,
                outcome=Outcome.TRANSIENT,
                message=f"{exc.code}: {exc.message}",
                state=account.state,
                state_reason=account.state_reason,
                access_expires_at=account.access_expires_at,
                next_attempt_at=None,
                called_ebay=False,
            )

    async def _prune_stalled(self, now: datetime) -> None:
        silent = timedelta(seconds=PRUNE_FACTOR * self.config.interval.total_seconds())
        for instance in await self.heartbeats.prune(now - max(silent, self.config.lease)):
            released = await self.store.release_leases(instance)
            log.event(logger, "worker.pruned", logging.WARNING, instance=instance, leases=released)

    async def _beat(
        self,
        status: CycleStatus,
        counts: CycleCounts,
        error: str | None,
        started: datetime | None,
        finished: datetime | None,
        quota: QuotaState | None = None,
        credentials: AppCredentials | None = None,
    ) -> None:
        body = asdict(counts)
        if quota is not None:
            body["quota"] = quota.to_dict()
        try:
            await self.heartbeats.save(
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
                    counts=body,
                    last_error=error,
                    app_credentials=credentials,
                    cycles=self.cycles,
                    updated_at=self.clock(),
                )
            )
        except ConnectorError as exc:
            # A heartbeat we cannot write is itself the signal (it goes stale); say why here.
            log.event(logger, "worker.heartbeat_failed", logging.ERROR, error=exc.message)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set; sleep until the next account is due (at most 60 s).

        On stop: no new claims, in-flight refreshes get ``drain`` to finish, leases are released
        and the heartbeat is removed.
        """
        log.event(logger, "worker.started", instance=self.instance_id, version=self.version)
        await self._beat(CycleStatus.STARTING, CycleCounts(), None, None, None)
        try:
            while not stop.is_set():
                wait = self.config.interval
                try:
                    report = await self.run_once(stop)
                    deferred = bool(report.counts.deferred_quota or report.counts.deferred_pause)
                    wait = next_wake(
                        self.clock(), await self.store.next_due_at(), self.config.interval, deferred
                    )
                except ConnectorError as exc:  # e.g. the database is down: try again later
                    log.event(logger, "worker.cycle_failed", logging.ERROR, error=exc.message)
                except Exception:
                    # A bug must not silently end the worker while /healthz says ok: log it,
                    # report it in the heartbeat, and keep cycling.
                    logger.exception("worker.cycle_crashed")
                    await self._beat(
                        CycleStatus.ERROR, CycleCounts(), "internal error (see logs)", None, None
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait.total_seconds())
        finally:
            # Shielded: a cancelled worker still gives back its leases and unregisters.
            await asyncio.shield(self._unregister())

    async def _unregister(self) -> None:
        with contextlib.suppress(ConnectorError):
            await self.store.release_leases(self.instance_id)
        with contextlib.suppress(ConnectorError):
            await self.heartbeats.delete(self.instance_id)
        for chore in self.chores:  # a chore's background task (webhook delivery) ends with us
            close = getattr(chore, "close", None)
            if close is not None:
                await close()
        log.event(logger, "worker.stopped", instance=self.instance_id)
