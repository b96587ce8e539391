"""Login throttling against password guessing, shared by every API process (in the database).

Every sign-in attempt is counted against two keys: the account e-mail (normalised, whether or not
such a user exists, so a refusal reveals nothing) and the client address (the socket peer; see
:func:`client_address` for proxies). The attempt is *charged before* the password is verified
and refunded on success, so guessing costs the attacker a database row, not our argon2 CPU, and
a hundred parallel guesses cannot all slip past a counter that still reads 4.

Per key, within a window (``login_failure_window_seconds``, 15 min) at most ``limit`` attempts
reach the password check (5 per e-mail, ``login_max_failures_per_client`` per client). The next
attempt locks the key: refused with ``too_many_attempts`` and ``Retry-After`` for
``login_lockout_seconds``, doubling with every further lockout of the same key up to
``login_lockout_max_seconds``. Refused attempts do not extend a lock (the ``Retry-After`` is
honest). A successful sign-in forgets the e-mail's counter and refunds the client's charge (only
one: an attacker with one account of his own cannot reset his address's counter by signing in
between guesses). A key quiet for :data:`MEMORY` starts afresh.

Keys are stored as keyed HMACs (no e-mail address or IP address in the table). Concurrency:
one transaction per attempt with a compare-and-set on each row's ``version`` (and the primary
key for new rows), retried; correct on SQLite and PostgreSQL without row locks.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ebay_connector import log
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.db.users import normalise_email
from ebay_connector.errors import StoreError, TooManyAttempts

if TYPE_CHECKING:
    from ebay_connector.settings import Settings

logger = logging.getLogger(__name__)

MEMORY = timedelta(days=1)  # a key without any attempt for this long starts afresh
CAS_TRIES = 8
ZERO = timedelta(0)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Kind(enum.StrEnum):
    EMAIL = "email"
    CLIENT = "client"


@dataclass(frozen=True)
class Policy:
    max_failures: int  # attempts per e-mail per window
    max_failures_per_client: int  # attempts per client address per window; 0: not counted
    window: timedelta
    lockout: timedelta  # the first lockout; doubled for each further one
    lockout_max: timedelta

    def limit(self, kind: Kind) -> int:
        return self.max_failures if kind is Kind.EMAIL else self.max_failures_per_client


def policy(settings: Settings) -> Policy:
    return Policy(
        max_failures=settings.login_max_failures,
        max_failures_per_client=settings.login_max_failures_per_client,
        window=timedelta(seconds=settings.login_failure_window_seconds),
        lockout=timedelta(seconds=settings.login_lockout_seconds),
        lockout_max=timedelta(seconds=settings.login_lockout_max_seconds),
    )


@dataclass(frozen=True)
class Counter:
    """One key's state."""

    failures: int  # attempts charged in the current window
    window_started_at: datetime
    lockouts: int  # lockouts so far (the next one lasts twice as long)
    locked_until: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Admission:
    allowed: bool
    retry_after: timedelta
    state: Counter
    changed: bool


def lockout_for(lockouts: int, pol: Policy) -> timedelta:
    """How long the ``lockouts``-th lockout (1-based) lasts: doubling, capped."""
    factor: int = 2 ** min(max(lockouts - 1, 0), 30)
    grown: timedelta = pol.lockout * factor
    return min(grown, pol.lockout_max)


def admit(state: Counter | None, now: datetime, limit: int, pol: Policy) -> Admission:
    """Whether one more attempt may reach the password check, and the key's state after it."""
    if state is None or now - state.updated_at >= MEMORY:
        return Admission(True, ZERO, Counter(1, now, 0, None, now), True)
    if state.locked_until is not None and now < state.locked_until:
        return Admission(False, state.locked_until - now, state, False)
    failures, started = state.failures, state.window_started_at
    if now - started >= pol.window or now < started:
        failures, started = 0, now
    if failures >= limit:
        lockouts = state.lockouts + 1
        until = now + lockout_for(lockouts, pol)
        return Admission(False, until - now, Counter(0, now, lockouts, until, now), True)
    charged = replace(state, failures=failures + 1, window_started_at=started, updated_at=now)
    return Admission(True, ZERO, charged, True)


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """``trusted_proxies``: addresses or networks separated by commas or spaces."""
    return tuple(
        ipaddress.ip_network(part, strict=False) for part in text.replace(",", " ").split() if part
    )


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IpNetwork]
) -> str | None:
    """The client's address: the socket peer, unless the peer is a trusted proxy.

    ``X-Forwarded-For`` is written by whoever sends the request, so it is believed only when
    the peer is a proxy the operator trusts, and then read from the right: the first address
    that is not itself a trusted proxy is the one that connected to the proxies.
    """
    if peer is None:
        return None
    if not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain: trust nothing in it
        if not any(address in net for net in trusted):
            return str(address)
    return peer


def _trusted(address: str, trusted: Iterable[IpNetwork]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in net for net in trusted)


class _Conflict(Exception):
    """Another process changed a counter between our read and our write: try again."""


class LoginThrottle:
    """Charges, refuses and refunds sign-in attempts; all state in the ``login_throttles`` table."""

    def __init__(
        self, db: Database, secret: bytes, pol: Policy, trusted_proxies: Sequence[IpNetwork] = ()
    ) -> None:
        self.db = db
        self.policy = pol
        self.trusted_proxies = trusted_proxies  # whose X-Forwarded-For names the client
        self._secret = secret

    def key(self, kind: Kind, value: str) -> str:
        text = f"{kind.value}:{value}".encode()
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()

    def _keys(self, email: str, client: str | None) -> list[tuple[Kind, str]]:
        keys = [(Kind.EMAIL, self.key(Kind.EMAIL, normalise_email(email)))]
        if client is not None and self.policy.max_failures_per_client > 0:
            keys.append((Kind.CLIENT, self.key(Kind.CLIENT, client)))
        return keys

    async def charge(self, email: str, client: str | None) -> None:
        """Count one attempt before the password is checked; ``TooManyAttempts`` if refused."""
        keys = self._keys(email, client)
        for attempt in range(CAS_TRIES):
            try:
                refused = await self._charge_once(keys)
            except _Conflict:
                continue
            except StoreError as exc:
                # Plain StoreError: a constraint — two first attempts inserted the same key at
                # once. Anything else (unavailable, schema missing) is not ours to retry.
                if type(exc) is not StoreError or attempt == CAS_TRIES - 1:
                    raise
                continue
            if refused is None:
                return
            kind, wait = refused
            error = TooManyAttempts("too many sign-in attempts; try again later", retry_after=wait)
            # Which counter refused, never whose: no e-mail or address in the log.
            log.event(
                logger,
                "login.throttled",
                logging.WARNING,
                counter=kind.value,
                retry_after=error.retry_after_seconds,
            )
            raise error
        raise TooManyAttempts(
            "too many concurrent sign-in attempts", retry_after=timedelta(seconds=1)
        )

    async def _charge_once(self, keys: list[tuple[Kind, str]]) -> tuple[Kind, timedelta] | None:
        table = m.LoginThrottle
        now = self.db.clock()
        async with self.db.transaction() as conn:
            rows = {
                row.key: row
                for row in (
                    await conn.execute(
                        sa.select(table.__table__).where(table.key.in_([k for _, k in keys]))
                    )
                ).all()
            }
            decisions = []
            for kind, key in keys:
                row = rows.get(key)
                state = None if row is None else _counter(row)
                decisions.append(
                    (kind, key, row, admit(state, now, self.policy.limit(kind), self.policy))
                )
            refused = [(kind, d.retry_after) for kind, _, _, d in decisions if not d.allowed]
            for kind, key, row, decision in decisions:
                # A refusal charges nothing: only a lock that starts now is written.
                if not decision.changed or (refused and decision.allowed):
                    continue
                values = _values(decision.state)
                if row is None:
                    await conn.execute(sa.delete(table).where(table.updated_at < now - MEMORY))
                    await conn.execute(
                        sa.insert(table).values(key=key, kind=kind.value, version=0, **values)
                    )
                    continue
                done = await conn.execute(
                    sa.update(table)
                    .where(table.key == key, table.version == row.version)
                    .values(version=row.version + 1, **values)
                )
                if done.rowcount != 1:
                    raise _Conflict
        if not refused:
            return None
        return max(refused, key=lambda item: item[1])

    async def succeeded(self, email: str, client: str | None) -> None:
        """A correct password: forget the e-mail's counter, refund the client's charge."""
        table = m.LoginThrottle
        keys = dict((kind, key) for kind, key in self._keys(email, client))
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(table).where(table.key == keys[Kind.EMAIL]))
            if Kind.CLIENT in keys:
                await conn.execute(
                    sa.update(table)
                    .where(table.key == keys[Kind.CLIENT], table.failures > 0)
                    .values(failures=table.failures - 1, version=table.version + 1)
                )


def _counter(row: sa.Row[tuple[object, ...]]) -> Counter:
    return Counter(
        failures=int(row.failures),
        window_started_at=row.window_started_at,
        lockouts=int(row.lockouts),
        locked_until=row.locked_until,
        updated_at=row.updated_at,
    )


def _values(state: Counter) -> dict[str, object]:
    return {
        "failures": state.failures,
        "window_started_at": state.window_started_at,
        "lockouts": state.lockouts,
        "locked_until": state.locked_until,
        "updated_at": state.updated_at,
    }
