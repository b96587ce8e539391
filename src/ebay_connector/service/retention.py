"""Retention: how long exchange records and refresh attempts are kept, and the chore that prunes.

The policy, decided here and nowhere else:

* an exchange older than ``max_age`` is deleted, and so is any beyond the newest
  ``per_account`` of its account (ties at the boundary are kept);
* whatever its age or rank, the newest ``ok`` and the newest not-``ok`` exchange of every
  account are kept, so "when did this account last work, and how did it last fail" always has
  an answer;
* an exchange of no account (a failed connect, a deleted account) goes by age alone;
* an attempt goes with its exchange; an attempt without one goes by age.

"Newest" is the highest id: ids are handed out in the order exchanges are recorded.

The worker runs :class:`RetentionChore` after its refreshes. It prunes at most every
:data:`RUN_EVERY`, in transactions of at most ``batch_size`` exchanges, at most
``batch_size * max_batches`` exchanges per run, and trims at most ``accounts_per_run`` accounts
to the cap per run (round robin), so a cycle is never held up for long; a backlog (the first
run on a large table) is worked off over several runs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from ebay_connector import log
from ebay_connector.db.journal import Journal
from ebay_connector.settings import Settings

logger = logging.getLogger(__name__)

RUN_EVERY = timedelta(minutes=5)
BATCH_SIZE = 5_000  # exchanges per delete transaction
MAX_BATCHES = 10  # so at most 50,000 exchanges per run
ACCOUNTS_PER_RUN = 500  # accounts over the cap trimmed per run, round robin

OK = "ok"


@dataclass(frozen=True)
class RetentionPolicy:
    max_age: timedelta
    per_account: int

    def cutoff(self, now: datetime) -> datetime:
        """Exchanges recorded before this are old."""
        return now - self.max_age


@dataclass(frozen=True)
class PruneCounts:
    exchanges: int = 0
    attempts: int = 0


def is_due(last_run: datetime | None, now: datetime, every: timedelta = RUN_EVERY) -> bool:
    """Whether a prune is due; a clock that went backwards makes it due rather than stuck."""
    return last_run is None or now - last_run >= every or now < last_run


@dataclass(frozen=True)
class ExchangeFacts:
    """What the policy looks at of an exchange."""

    id: int
    account_id: int | None
    outcome: str
    created_at: datetime


def survivors(
    exchanges: Iterable[ExchangeFacts], policy: RetentionPolicy, now: datetime
) -> set[int]:
    """The ids the policy keeps: its whole statement over an in-memory table.

    The chore reaches the same result in bounded batches; tests compare the two.
    """
    cutoff = policy.cutoff(now)
    by_account: dict[int, list[ExchangeFacts]] = defaultdict(list)
    kept: set[int] = set()
    for e in exchanges:
        if e.account_id is None:
            if e.created_at >= cutoff:
                kept.add(e.id)
        else:
            by_account[e.account_id].append(e)
    for rows in by_account.values():
        newest_ok = max((e.id for e in rows if e.outcome == OK), default=None)
        newest_failed = max((e.id for e in rows if e.outcome != OK), default=None)
        kept.update(i for i in (newest_ok, newest_failed) if i is not None)
        times = sorted((e.created_at for e in rows), reverse=True)
        boundary = times[policy.per_account - 1] if len(times) >= policy.per_account else None
        kept.update(
            e.id
            for e in rows
            if e.created_at >= cutoff and (boundary is None or e.created_at >= boundary)
        )
    return kept


async def prune(
    journal: Journal,
    policy: RetentionPolicy,
    now: datetime,
    *,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
    accounts_per_run: int = ACCOUNTS_PER_RUN,
    after_account: int = 0,
) -> tuple[PruneCounts, int]:
    """Delete what the policy does not keep, at most ``batch_size * max_batches`` exchanges.

    The cap is enforced for at most ``accounts_per_run`` accounts, round robin from
    ``after_account``, so no account waits behind others that keep growing. Returns the counts
    and the account after which the next run continues.
    """
    limit = batch_size * max_batches
    exchanges = attempts = 0
    keep = await journal.newest_ok_and_failed()
    cutoff = policy.cutoff(now)

    after_id, transactions = 0, 0
    while exchanges < limit and transactions < max_batches:
        batch = await journal.prune_older(
            cutoff, keep=keep, after_id=after_id, limit=min(batch_size, limit - exchanges)
        )
        transactions += 1
        exchanges, attempts = exchanges + batch.exchanges, attempts + batch.attempts
        if batch.last_id is None or batch.scanned < batch_size:
            break
        after_id = batch.last_id

    cursor = after_account
    over = await journal.accounts_over(policy.per_account) if exchanges < limit else []
    in_turn = [a for a in over if a > after_account] + [a for a in over if a <= after_account]
    for account_id in in_turn[:accounts_per_run]:
        if exchanges >= limit:
            break
        boundary = await journal.nth_newest_time(account_id, policy.per_account)
        while boundary is not None and exchanges < limit:
            batch = await journal.prune_account_before(
                account_id, boundary, keep=keep, limit=min(batch_size, limit - exchanges)
            )
            exchanges, attempts = exchanges + batch.exchanges, attempts + batch.attempts
            if batch.scanned < batch_size:
                break
        if exchanges < limit:
            cursor = account_id  # done with it (else the next run starts with it again)

    if exchanges < limit:
        attempts += await journal.prune_orphan_attempts(cutoff, limit=batch_size)
    return PruneCounts(exchanges=exchanges, attempts=attempts), cursor


class RetentionChore:
    """Prunes the journal after a worker cycle, at most every ``every``."""

    name = "retention"

    def __init__(
        self,
        journal: Journal,
        policy: RetentionPolicy,
        *,
        every: timedelta = RUN_EVERY,
        batch_size: int = BATCH_SIZE,
        max_batches: int = MAX_BATCHES,
        accounts_per_run: int = ACCOUNTS_PER_RUN,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self.every = every
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.accounts_per_run = accounts_per_run
        self.last_run: datetime | None = None
        self.next_account = 0  # where the round robin of the cap continues

    async def run(self, now: datetime) -> Mapping[str, int]:
        if not is_due(self.last_run, now, self.every):
            return {}
        # Marked before pruning: a prune that fails is retried at the next due time, not at
        # every cycle in between.
        self.last_run = now
        counts, self.next_account = await prune(
            self.journal,
            self.policy,
            now,
            batch_size=self.batch_size,
            max_batches=self.max_batches,
            accounts_per_run=self.accounts_per_run,
            after_account=self.next_account,
        )
        if counts.exchanges or counts.attempts:
            log.event(
                logger,
                "retention.pruned",
                exchanges=counts.exchanges,
                attempts=counts.attempts,
                max_age_days=self.policy.max_age.days,
                per_account=self.policy.per_account,
            )
        return asdict(counts)


def policy_of(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        max_age=timedelta(days=settings.retention_days),
        per_account=settings.retention_per_account,
    )
