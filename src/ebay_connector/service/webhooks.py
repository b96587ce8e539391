"""Webhooks: signed JSON deliveries of notices, retried with backoff, off the refresh path.

Wire format (documented in docs/webhooks.md)::

    POST <endpoint url>
    Content-Type: application/json
    X-Ebay-Connector-Event-Id: <uuid>          the idempotency id (same on every retry)
    X-Ebay-Connector-Event-Type: <type>
    X-Ebay-Connector-Delivery-Attempt: <n>
    X-Ebay-Connector-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

The worker's :class:`NoticeChore` only writes events to the outbox and *kicks* a
:class:`Dispatcher`, whose sending runs in its own asyncio task: a slow or dead receiver never
slows a refresh cycle. A delivery is leased before each attempt, so replicas never send the same
attempt twice; a crash mid-attempt means one more attempt later (receivers dedupe on the id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from ebay_connector import log
from ebay_connector.core import destination, notices, quota, retry
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Action
from ebay_connector.db import outbox
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.errors import (
    ConnectorError,
    DestinationRefused,
    InvalidWebhookUrl,
    UsageError,
    WebhookNotFound,
)
from ebay_connector.keys.crypto import KeyRing
from ebay_connector.service import outbound
from ebay_connector.settings import Settings
from ebay_connector.version import code_version

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Ebay-Connector-Signature"
EVENT_ID_HEADER = "X-Ebay-Connector-Event-Id"
EVENT_TYPE_HEADER = "X-Ebay-Connector-Event-Type"
ATTEMPT_HEADER = "X-Ebay-Connector-Delivery-Attempt"
SIGNATURE_TOLERANCE = timedelta(minutes=5)  # what receivers should accept (docs)
MAX_URL_LENGTH = 2048
MAX_ERROR_CHARS = 300
MAX_DESCRIPTION_CHARS = 200
BACKOFF = retry.Backoff(
    base=timedelta(seconds=30), cap=timedelta(hours=2), floor=timedelta(seconds=10)
)
CANDIDATE_BATCH = 500
CLOSE_GRACE = timedelta(seconds=5)
DEFAULT_QUOTA = quota.QuotaConfig()


# Signing -----------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed by the whole secret string."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    now: datetime,
    tolerance: timedelta = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver does: check the MAC in constant time and the timestamp's freshness."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or "v1" not in parts:
        return False
    if abs(now.timestamp() - int(stamp)) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(parts["v1"], signature(secret, int(stamp), body))


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def check_url(url: str) -> httpx.URL:
    """An endpoint URL as httpx will send to it, or ``InvalidWebhookUrl``: http(s), a host (IDNA),
    no credentials, no fragment, no character that reads differently from what is connected to.

    Parsed with httpx's own parser, so a URL accepted here is one the sender can send to.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl("the URL must be one line of at most 2048 characters")
    bad = destination.unreadable_character(url, url=True)
    if bad is not None:
        raise InvalidWebhookUrl(f"the URL must not contain {bad} (a control or format character)")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InvalidWebhookUrl("the URL is not valid") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("the URL must start with http:// or https://")
    if not parsed.host:
        raise InvalidWebhookUrl("the URL has no host")
    if parsed.userinfo:
        # Credentials in a URL would be shown in the API, the UI and the delivery log.
        raise InvalidWebhookUrl("the URL must not carry credentials; use the signature instead")
    if parsed.fragment or "#" in url:
        raise InvalidWebhookUrl("the URL must not have a #fragment")
    if port is not None and not 0 < port < 65536:
        raise InvalidWebhookUrl("the URL's port is not valid")
    host = parsed.raw_host.decode("ascii")
    if destination.numeric_host(host) is None and not all(
        label and len(label) <= 63 for label in host.split(".")
    ):
        raise InvalidWebhookUrl("the URL's host is not valid")
    return parsed


def url_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def secret_context(endpoint_id: int) -> str:
    return f"webhook/{endpoint_id}"


# Delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DispatchConfig:
    timeout: timedelta = timedelta(seconds=10)
    max_attempts: int = 8
    concurrency: int = 8
    backoff: retry.Backoff = BACKOFF
    destinations: outbound.DestinationPolicy = outbound.PUBLIC_ONLY


DEFAULT_DISPATCH = DispatchConfig()


@dataclass(frozen=True)
class Attempted:
    status: str
    status_code: int | None
    error: str | None
    duration_ms: float | None
    next_attempt_at: datetime | None


def after_attempt(
    *,
    attempt: int,
    status_code: int | None,
    now: datetime,
    config: DispatchConfig,
    rng: random.Random,
) -> tuple[str, datetime | None]:
    """Delivered on any 2xx; else retried with capped, jittered backoff until attempts run out."""
    if status_code is not None and 200 <= status_code < 300:
        return outbox.DeliveryStatus.DELIVERED, None
    if attempt >= config.max_attempts:
        return outbox.DeliveryStatus.FAILED, None
    return outbox.DeliveryStatus.PENDING, now + retry.next_delay(
        attempt, rng, policy=config.backoff
    )


class Dispatcher:
    """Sends due deliveries in a background task it owns; :meth:`kick` never waits."""

    def __init__(
        self,
        box: outbox.Outbox,
        ring: KeyRing,
        *,
        config: DispatchConfig = DEFAULT_DISPATCH,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.outbox = box
        self.ring = ring
        self.on_outcome = on_outcome  # told each attempt's outcome (metrics)
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self._task: asyncio.Task[int] | None = None

    def kick(self) -> None:
        """Start sending what is due, unless a drain is already running."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain_logged(), name="webhook-dispatcher")

    async def idle(self) -> None:
        """Wait for the running drain (tests, shutdown)."""
        if self._task is not None:
            # wait() never raises the task's own outcome (its errors are logged by the task).
            await asyncio.wait([self._task])

    async def close(self, grace: timedelta = timedelta(0)) -> None:
        """Let the running drain finish within ``grace``, then cancel it.

        A cancelled attempt keeps its lease until it expires; then it is tried again.
        """
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait([task], timeout=grace.total_seconds())
        task.cancel()
        await self.idle()

    async def _drain_logged(self) -> int:
        try:
            return await self.drain()
        except ConnectorError as exc:
            log.event(logger, "webhooks.drain_failed", logging.ERROR, code=exc.code)
        except Exception:
            logger.exception("webhooks.drain_crashed")
        return 0

    async def drain(self) -> int:
        """Send every delivery due now (failures are rescheduled into the future); the count."""
        sent = 0
        ids = await self.outbox.due(self.clock(), self.config.concurrency * 4)
        if not ids:
            return 0  # the common case: no client (and no TLS context) is built
        async with self._client() as client:
            gate = asyncio.Semaphore(self.config.concurrency)
            while ids:

                async def one(delivery_id: int) -> int:
                    async with gate:
                        try:
                            return 1 if await self._deliver(client, delivery_id) else 0
                        except Exception:
                            # E.g. the database between claim and finish: the lease runs out
                            # and the attempt counts; the other deliveries go on.
                            logger.exception("webhooks.delivery_crashed delivery=%s", delivery_id)
                            return 0

                done = sum(await asyncio.gather(*(one(i) for i in ids)))
                if done == 0:
                    break  # every due one was claimed by another replica
                sent += done
                ids = await self.outbox.due(self.clock(), self.config.concurrency * 4)
        return sent

    async def deliver_now(self, delivery_id: int) -> outbox.DeliveryRow | None:
        """One delivery's attempt right now (the "send test event" action), then its row."""
        async with self._client() as client:
            await self._deliver(client, delivery_id)
        return await self.outbox.delivery(delivery_id)

    def _client(self) -> httpx.AsyncClient:
        # Our own client, not eBay's: its timeouts and pool are the receivers' business, and it
        # connects only to addresses the destination rule allows.
        return outbound.client(self.config.destinations, self.config.timeout)

    async def _deliver(self, client: httpx.AsyncClient, delivery_id: int) -> bool:
        lease = self.config.timeout + timedelta(seconds=30)
        claimed = await self.outbox.claim(delivery_id, self.clock(), lease)
        if claimed is None:
            return False
        status_code: int | None = None
        error: str | None = None
        started = time.monotonic()
        if claimed.attempt > self.config.max_attempts:
            # Attempts that never finished (a crash, a lost lease) still count: it ends here.
            error = "gave up: no attempt left"
        else:
            status_code, error = await self._attempt(client, claimed)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        now = self.clock()
        status, next_at = after_attempt(
            attempt=claimed.attempt,
            status_code=status_code,
            now=now,
            config=self.config,
            rng=self.rng,
        )
        await self.outbox.finish(
            delivery_id,
            status=status,
            status_code=status_code,
            error=error[:MAX_ERROR_CHARS] if error else None,
            duration_ms=duration_ms,
            next_attempt_at=next_at,
            now=now,
        )
        if self.on_outcome is not None:
            self.on_outcome(str(status))
        log.event(
            logger,
            "webhooks.delivery",
            logging.INFO if status != outbox.DeliveryStatus.FAILED else logging.WARNING,
            delivery=delivery_id,
            endpoint=claimed.endpoint_id,
            event=claimed.event_type,
            attempt=claimed.attempt,
            status=status,
            http_status=status_code,
        )
        return True

    async def _attempt(
        self, client: httpx.AsyncClient, claimed: outbox.Claimed
    ) -> tuple[int | None, str | None]:
        """One POST; its status code, or what went wrong in words a receiver's owner can use.

        Whatever fails — the secret, the URL, the connection, an exception nobody foresaw —
        fails this delivery alone; the message never carries the exception's own text (it
        could describe the server's network to whoever owns the endpoint).
        """
        try:
            secret = self.ring.open(
                claimed.secret_ciphertext, context=secret_context(claimed.endpoint_id)
            )
            body = body_bytes(claimed.payload)
            stamp = int(self.clock().timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"ebay-connector/{code_version()}",
                EVENT_ID_HEADER: claimed.event_id,
                EVENT_TYPE_HEADER: claimed.event_type,
                ATTEMPT_HEADER: str(claimed.attempt),
                SIGNATURE_HEADER: signature_header(secret, stamp, body),
            }
            check_url(claimed.url)  # a row written before today's rules is held to them too
            answer = await client.post(claimed.url, content=body, headers=headers)
        except DestinationRefused:
            return None, "could not connect: destination not allowed"
        except InvalidWebhookUrl:
            return None, "could not connect: the URL is not valid"
        except ConnectorError as exc:  # e.g. the secret does not decrypt
            return None, f"not sent: {exc.code}"
        except httpx.TimeoutException:
            return None, "could not connect: timed out"
        except httpx.HTTPError:
            return None, "could not connect"
        except Exception:
            logger.exception("webhooks.attempt_failed endpoint=%s", claimed.endpoint_id)
            return None, "could not connect"
        status_code = answer.status_code
        return status_code, None if 200 <= status_code < 300 else f"HTTP {status_code}"


# The chore ---------------------------------------------------------------------------------


PRUNE_BATCH = 1000  # old events deleted per worker cycle, at most


class NoticeChore:
    """After each worker cycle: turn token-state transitions into events, then kick delivery."""

    name = "notices"

    def __init__(
        self,
        box: outbox.Outbox,
        dispatcher: Dispatcher,
        heartbeats: Heartbeats,
        journal: Journal,
        *,
        thresholds: notices.Thresholds = notices.DEFAULT_THRESHOLDS,
        quota_config: quota.QuotaConfig = DEFAULT_QUOTA,
        quota_low_share: float = notices.QUOTA_LOW_SHARE,
        batch: int = CANDIDATE_BATCH,
        keep: timedelta | None = None,
    ) -> None:
        self.keep = keep  # events (and their deliveries) older than this are pruned
        self.outbox = box
        self.dispatcher = dispatcher
        self.heartbeats = heartbeats
        self.journal = journal
        self.thresholds = thresholds
        self.quota_config = quota_config
        self.quota_low_share = quota_low_share
        self.batch = batch
        self._after = 0  # a bounded batch per run; the next run continues after it
        # May the next projection past the limit notify? Unknown until the first run reads the
        # outbox (a restart in the middle of a crossing must not announce it again).
        self._projection_armed: bool | None = None

    async def run(self, now: datetime) -> Mapping[str, int]:
        events = 0
        rows = await self.outbox.candidates(
            now, self.thresholds.expiry_horizon, self._after, self.batch
        )
        self._after = rows[-1].account_id if len(rows) == self.batch else 0
        for row in rows:
            found, mark = notices.decide(row.mark, row.facts, now, self.thresholds)
            if mark == row.mark:
                continue
            payloads = [(n.type.value, _account_data(row, n)) for n in found]
            if await self.outbox.commit_mark(row, mark, payloads, now):
                events += len(payloads)
        events += await self._application_notices(now)
        if await self.outbox.due(now, 1):
            self.dispatcher.kick()  # sends in its own task: the cycle does not wait
        done = {"events": events} if events else {}
        if self.keep is not None:
            pruned = await self.outbox.prune(now - self.keep, PRUNE_BATCH)
            if pruned:
                done["pruned"] = pruned
        return done

    async def close(self) -> None:
        """On worker stop: give in-flight deliveries a few seconds, then stop them."""
        await self.dispatcher.close(CLOSE_GRACE)

    async def _application_notices(self, now: datetime) -> int:
        organizations = await self.outbox.organizations_with_endpoints()
        if not organizations:
            return 0
        beats = [
            notices.WorkerBeat(b.instance_id, b.host, b.version, b.updated_at, b.stale(now))
            for b in await self.heartbeats.all()
        ]
        used = await self.journal.quota_usage(now - quota.WINDOW)
        found = notices.stale_workers(beats) + notices.quota_low(
            used, self.quota_config.limits, now, self.quota_low_share
        )
        found += await self._projection(now)
        events = 0
        for organization in organizations:
            for notice in found:
                key = f"{organization}:{notice.dedup}"
                if await self.outbox.emit(
                    organization, notice.type.value, dict(notice.data), dedup_key=key
                ):
                    events += 1
        return events

    async def _projection(self, now: datetime) -> list[notices.Notice]:
        grant = Action.REFRESH_TOKEN.value
        if self._projection_armed is None:
            last = await self.outbox.last_emitted(notices.EventType.QUOTA_PROJECTED_EXCEEDED.value)
            self._projection_armed = last is None or last < now - quota.WINDOW
        projection = await self.journal.quota_projection(
            now, self.quota_config.limits.get(grant, 0)
        )
        found, self._projection_armed = notices.quota_projected(
            projection, self._projection_armed, now, grant
        )
        return found


def _account_data(row: outbox.Candidate, notice: notices.Notice) -> dict[str, Any]:
    return {
        "account": {
            "id": row.account_id,
            "label": row.label,
            "ebay_username": row.ebay_username,
            "state": row.facts.state,
            "reason": row.facts.state_reason,
            "failures_in_row": row.facts.failures_in_row,
            "last_error_code": row.last_error_code,
        },
        **notice.data,
    }


def dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        timeout=timedelta(seconds=settings.webhook_timeout_seconds),
        max_attempts=settings.webhook_max_attempts,
        concurrency=settings.webhook_concurrency,
        destinations=outbound.DestinationPolicy(
            destination.parse_networks(settings.webhook_allowed_networks)
        ),
    )


def notice_thresholds(settings: Settings) -> notices.Thresholds:
    return notices.Thresholds(
        refresh_failing_after=timedelta(seconds=settings.refresh_failing_after_seconds)
    )


# Endpoints, as an organization manages them -----------------------------------------------


@dataclass(frozen=True)
class WebhookEndpoints:
    """An organization's webhook endpoints: add (URL checked, secret sealed and shown once),
    look up, list, test and remove. The CLI, the API and the UI all call these."""

    box: outbox.Outbox
    dispatcher: Dispatcher
    ring: KeyRing

    async def create(
        self, organization_id: int, url: str, description: str
    ) -> tuple[outbox.EndpointRow, str]:
        """Validate, store (secret sealed to the row) and answer the secret once."""
        parsed = check_url(url)
        await outbound.check_host(
            parsed.raw_host.decode("ascii"), url_port(parsed), self.dispatcher.config.destinations
        )
        description = description.strip()
        bad = destination.unreadable_character(description)
        if bad is not None or len(description) > MAX_DESCRIPTION_CHARS:
            raise UsageError(
                f"the description is one line of at most {MAX_DESCRIPTION_CHARS} characters"
                + (f" without {bad}" if bad else "")
            )
        secret = new_secret()
        row = await self.box.create_endpoint(
            organization_id,
            str(parsed),
            description,
            lambda endpoint_id: self.ring.seal(secret, context=secret_context(endpoint_id)),
        )
        return row, secret

    async def owned(self, organization_id: int, endpoint_id: int) -> outbox.EndpointRow:
        row = await self.box.endpoint(organization_id, endpoint_id)
        if row is None:
            raise WebhookNotFound(f"no webhook {endpoint_id}")
        return row

    async def endpoints(self, organization_id: int) -> list[outbox.EndpointRow]:
        return await self.box.endpoints(organization_id)

    async def deliveries(
        self, organization_id: int, endpoint_id: int, limit: int = 50
    ) -> list[outbox.DeliveryRow]:
        await self.owned(organization_id, endpoint_id)
        return await self.box.deliveries(organization_id, endpoint_id, limit)

    async def send_test(
        self, endpoint: outbox.EndpointRow, actor: str
    ) -> outbox.DeliveryRow | None:
        """A ``webhook.test`` event to this one endpoint, attempted now (retried like any other)."""
        ids = await self.box.emit(
            endpoint.organization_id,
            notices.EventType.TEST.value,
            {"endpoint_id": endpoint.id, "requested_by": actor},
            endpoint_ids=[endpoint.id],
        )
        return await self.dispatcher.deliver_now(ids[0]) if ids else None

    async def remove(self, organization_id: int, endpoint_id: int) -> bool:
        """Remove an endpoint with its delivery log; pending deliveries to it are dropped."""
        return await self.box.delete_endpoint(organization_id, endpoint_id)
