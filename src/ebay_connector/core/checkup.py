"""A deployment's check-up: what each finding of ``ebay-connector doctor`` means (no I/O).

``service/doctor.py`` gathers the facts (settings, the database, eBay's answers, heartbeats);
each function here turns one check's facts into a :class:`Check` — ``ok``, ``warn`` or ``fail``,
what was found, and what to do about it. Details never hold a secret: they are built from
statuses, names, counts and URLs the operator configured.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ebay_connector.core.quota import QuotaState

MAX_CLOCK_SKEW_S = 30.0  # eBay's Date against ours; beyond it token times and logs disagree


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Check:
    """One check's verdict: ``remedy`` is empty when there is nothing to do."""

    name: str
    status: Status
    detail: str
    remedy: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "remedy": self.remedy,
        }


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings do not fail a deployment)."""
        return all(c.status is not Status.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"checks": [c.to_dict() for c in self.checks], "ok": self.ok}


@dataclass(frozen=True)
class Finding:
    """One thing a check noticed; a check's status is the worst of its findings."""

    status: Status
    detail: str
    remedy: str = ""


def combine(name: str, findings: Sequence[Finding], ok_detail: str) -> Check:
    """The check of several findings: only the problems are named when there are any."""
    problems = [f for f in findings if f.status is not Status.OK]
    if not problems:
        return Check(name, Status.OK, ok_detail)
    return Check(
        name,
        worst(f.status for f in problems),
        "; ".join(f.detail for f in problems),
        " ".join(f.remedy for f in problems if f.remedy),
    )


def not_checked(name: str, because: str) -> Check:
    """A check another one's failure prevents: a warning, the failure is counted once."""
    return Check(name, Status.WARN, f"not checked: {because}", "fix the failing check first")


def timed_out(name: str, seconds: float) -> Check:
    return Check(
        name,
        Status.FAIL,
        f"no answer within {seconds:g} s",
        "find what is slow or unreachable (a firewall dropping packets answers nothing)",
    )


# Settings ----------------------------------------------------------------------------------------


def is_local_host(url: str) -> bool:
    """A loopback, private or link-local address, or ``localhost``: not reachable by eBay."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


@dataclass(frozen=True)
class SettingsFacts:
    environment: str  # emulator / sandbox / production
    client_id: str | None  # as configured (None: the emulator's built-in keyset)
    public_url: str
    key_ring: str  # where the key ring comes from
    emulator_url: str


def settings_check(facts: SettingsFacts) -> Check:
    """What the settings lack for their environment (load() already refuses missing keysets)."""
    env = facts.environment
    findings: list[Finding] = []
    scheme = urlsplit(facts.public_url).scheme
    if scheme not in ("http", "https") or not urlsplit(facts.public_url).hostname:
        findings.append(
            Finding(
                Status.FAIL,
                f"EBAY_CONNECTOR_PUBLIC_URL {facts.public_url!r} is not an http(s) URL",
                "set EBAY_CONNECTOR_PUBLIC_URL to the address sellers' browsers reach this "
                "server at.",
            )
        )
    elif env != "emulator":
        if env == "production" and scheme != "https":
            findings.append(
                Finding(
                    Status.FAIL,
                    f"EBAY_CONNECTOR_PUBLIC_URL {facts.public_url} is not https",
                    "serve the connector behind TLS and set EBAY_CONNECTOR_PUBLIC_URL to its "
                    "https:// address.",
                )
            )
        if is_local_host(facts.public_url):
            findings.append(
                Finding(
                    Status.FAIL if env == "production" else Status.WARN,
                    f"EBAY_CONNECTOR_PUBLIC_URL {facts.public_url} is a local address: only a "
                    "browser on this network can follow eBay's redirect to it",
                    "set EBAY_CONNECTOR_PUBLIC_URL to the public address of this deployment.",
                )
            )
        marker = {"sandbox": "-SBX-", "production": "-PRD-"}[env]
        other = "-PRD-" if marker == "-SBX-" else "-SBX-"
        if facts.client_id and other in facts.client_id.upper():
            findings.append(
                Finding(
                    Status.WARN,
                    f"EBAY_CONNECTOR_CLIENT_ID looks like a {other.strip('-')} App ID, not a "
                    f"{env} one",
                    f"use the {env} keyset of the application (developer portal, "
                    "Application Keys).",
                )
            )
    where = f"emulator at {facts.emulator_url}" if env == "emulator" else f"eBay {env}"
    keyset = facts.client_id or "the emulator's built-in keyset"
    return combine(
        "settings",
        findings,
        f"{where}; App ID {keyset}; public URL {facts.public_url}; key ring from {facts.key_ring}",
    )


# Database ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseFacts:
    description: str  # backend and address, password hidden
    revision: str | None  # alembic_version (None: no schema)
    head: str
    pool_size: int  # EBAY_CONNECTOR_DATABASE_POOL_SIZE
    max_connections: int | None = None  # the server's limit (PostgreSQL)


def database_check(facts: DatabaseFacts) -> Check:
    findings: list[Finding] = []
    if facts.revision is None:
        findings.append(Finding(Status.FAIL, "no schema", "run `ebay-connector db upgrade`."))
    elif facts.revision != facts.head:
        findings.append(
            Finding(
                Status.FAIL,
                f"schema at revision {facts.revision}, this code expects {facts.head}",
                "run `ebay-connector db upgrade` (with this version of the code).",
            )
        )
    if facts.max_connections is not None and facts.pool_size >= facts.max_connections:
        findings.append(
            Finding(
                Status.WARN,
                f"a pool of {facts.pool_size} connections per process, the server allows "
                f"{facts.max_connections} in all",
                "lower EBAY_CONNECTOR_DATABASE_POOL_SIZE or raise the server's max_connections.",
            )
        )
    limit = f" of the server's {facts.max_connections}" if facts.max_connections else ""
    return combine(
        "database",
        findings,
        f"{facts.description}; schema at head ({facts.head}); pool {facts.pool_size} "
        f"connections per process{limit}",
    )


def database_missing(description: str) -> Check:
    """The configured SQLite file is not there (doctor does not create it)."""
    return Check(
        "database",
        Status.FAIL,
        f"{description} does not exist",
        "run `ebay-connector db upgrade` (or correct EBAY_CONNECTOR_DATABASE_URL).",
    )


def database_unreachable(description: str, error: str) -> Check:
    return Check(
        "database",
        Status.FAIL,
        f"{description}: {error}",
        "start the database or correct EBAY_CONNECTOR_DATABASE_URL.",
    )


# Key ring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRingFacts:
    ring: Sequence[str]  # key ids in the ring
    primary: str
    by_key: Mapping[str, int]  # ciphertexts per key id they name (any id, in the ring or not)
    tried: int  # ciphertexts decrypted
    failures: Sequence[str]  # "field row: reason (key k)" for each one that did not decrypt
    full: bool  # every ciphertext was tried (--full), or a sample
    unsealed: int = 0  # stored secrets that are no ciphertext of the key ring at all


def key_ring_check(facts: KeyRingFacts, setting: str) -> Check:
    missing = {k: n for k, n in facts.by_key.items() if k not in facts.ring}
    findings: list[Finding] = []
    if missing:
        named = ", ".join(f"{k!r} ({n})" for k, n in sorted(missing.items()))
        findings.append(
            Finding(
                Status.FAIL,
                f"stored secrets are sealed with key ids the ring lacks: {named}",
                f"add the missing key to {setting} (from where it was deployed before); "
                "`ebay-connector keys check` lists every affected account.",
            )
        )
    if facts.unsealed:
        findings.append(
            Finding(
                Status.FAIL,
                f"{facts.unsealed} stored secrets are not sealed with any key",
                "`ebay-connector keys check` lists them; their sellers connect again.",
            )
        )
    if facts.failures:
        shown = "; ".join(facts.failures[:3])
        more = f" (and {len(facts.failures) - 3} more)" if len(facts.failures) > 3 else ""
        findings.append(
            Finding(
                Status.FAIL,
                f"{len(facts.failures)} of {facts.tried} ciphertexts tried do not decrypt: "
                f"{shown}{more}",
                "a key that was rotated away must come back; a seller whose token cannot be "
                "decrypted connects again.",
            )
        )
    counts = " · ".join(f"{k} {n}" for k, n in sorted(facts.by_key.items())) or "none stored yet"
    how = "all" if facts.full else "a sample of"
    return combine(
        "key_ring",
        findings,
        f"keys {', '.join(facts.ring)} (primary {facts.primary}); ciphertexts by key: {counts}; "
        f"{how} {facts.tried} decrypted",
    )


# Workers, the clock, the quota -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSeen:
    instance_id: str
    host: str
    version: str
    status: str  # as read now: ok / degraded / error / stale ...
    updated_at: datetime


def workers_check(workers: Sequence[WorkerSeen], version: str) -> Check:
    """A fresh heartbeat, not in error, of this code's version."""
    name = "workers"
    remedy_start = "start `ebay-connector worker` (or `serve --with-worker`) next to the server."
    fresh = [w for w in workers if w.status != "stale"]
    if not workers:
        return Check(name, Status.FAIL, "no worker has ever sent a heartbeat", remedy_start)
    if not fresh:
        last = max(workers, key=lambda w: w.updated_at)
        return Check(
            name,
            Status.FAIL,
            f"no fresh heartbeat: the last, from {last.instance_id} on {last.host} "
            f"(version {last.version}), is from {last.updated_at:%Y-%m-%d %H:%M:%S} UTC",
            remedy_start,
        )
    findings: list[Finding] = []
    failing = [w for w in fresh if w.status == "error"]
    if failing:
        findings.append(
            Finding(
                Status.FAIL,
                f"{len(failing)} worker(s) in error ({', '.join(w.instance_id for w in failing)})",
                "see `ebay-connector inspect runtime` and the worker's log.",
            )
        )
    others = sorted({w.version for w in fresh if w.version != version})
    if others:
        findings.append(
            Finding(
                Status.WARN,
                f"worker(s) run version {', '.join(others)}, this is {version}",
                "restart the workers with this version (a deploy not finished?).",
            )
        )
    return combine(
        name, findings, f"{len(fresh)} worker(s) with a fresh heartbeat, version {version}"
    )


def clock_check(date_header: str | None, ours: datetime) -> Check:
    """eBay's ``Date`` against our clock at the moment of the answer."""
    if date_header is None:
        return Check("clock", Status.WARN, "eBay's answer carried no Date header")
    try:
        theirs = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return Check("clock", Status.WARN, f"eBay's Date header is unreadable: {date_header!r}")
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    skew = (ours - theirs).total_seconds()
    # The Date header has whole seconds: a second of skew is the header's rounding.
    if abs(skew) > MAX_CLOCK_SKEW_S:
        side = "ahead of" if skew > 0 else "behind"
        return Check(
            "clock",
            Status.FAIL,
            f"our clock is {abs(skew):.0f} s {side} eBay's",
            "synchronise this host's clock (NTP: chrony or systemd-timesyncd).",
        )
    return Check("clock", Status.OK, f"within {max(abs(skew), 1):.0f} s of eBay's")


def quota_check(state: QuotaState, low_share: float) -> Check:
    """Today's headroom on each grant: none left fails, less than ``low_share`` warns."""
    findings: list[Finding] = []
    parts = []
    for grant, limit in state.config.limits.items():
        remaining = state.remaining(grant)
        parts.append(f"{grant} {remaining}/{limit}")
        if remaining == 0:
            findings.append(
                Finding(
                    Status.FAIL,
                    f"{grant}: none of today's {limit} left",
                    "wait for eBay's rolling 24 h window, or ask eBay for a higher limit "
                    "(Application Growth Check).",
                )
            )
        elif remaining < limit * low_share:
            findings.append(
                Finding(
                    Status.WARN,
                    f"{grant}: {remaining} of {limit} left for today",
                    "see `ebay-connector inspect runtime`; ask eBay for more if this is usual.",
                )
            )
    return combine("quota", findings, "left in the last 24 h: " + " · ".join(parts))
