"""Prometheus metrics: what this process did (counters, histograms) and what the database says.

Two kinds of numbers, kept apart on purpose:

* **Process metrics** are fed in-process while work happens: every refresh result
  (``Refresher.observers``), every worker cycle (``Worker.cycle_observers``), every token API
  request (the API's timing middleware) and every webhook delivery
  (:meth:`Metrics.webhook_delivery`).
  They count what *this* process did since it started, as Prometheus counters expect.
* **Database gauges** (accounts by state, due backlog, quota used, workers, last successful
  cycle) are read at scrape time into a :class:`DatabaseSnapshot`, so every replica shows the
  same cluster-wide numbers without a coordinator.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the global one): tests build
several apps in one process, and a registry shared between them would mix their counts.
No label holds a key or anything unbounded, and nothing here holds a secret. One family carries
the account id on purpose: the proxy's calls, counted per account, API and status (the ids are
this installation's own accounts; see docs/decisions.md, "Proxy metrics per account").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ebay_connector.core.exchange import Action
from ebay_connector.core.quota import WINDOW, Projection, QuotaConfig
from ebay_connector.core.token_state import TokenState
from ebay_connector.db.heartbeats import HeartbeatRow, Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import Store
from ebay_connector.errors import UsageError

if TYPE_CHECKING:
    from ebay_connector.service.refresh import RefreshResult
    from ebay_connector.service.worker import CycleReport

PREFIX = "ebay_connector_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 5.0

# An eBay call times out after 30 s by default; the top buckets keep slow ones visible.
REFRESH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Worker statuses that mean "the cycle ran and did useful work" (see worker.cycle_status):
# `degraded` still refreshed accounts; `error` refreshed none or could not run.
SUCCESSFUL_CYCLE_STATUSES = frozenset({"ok", "degraded"})
WORKER_STATUSES = ("ok", "degraded", "error", "starting", "stale")


class RefreshKind(enum.StrEnum):
    """How a refresh result came about, so joined callers are not counted as eBay calls."""

    ATTEMPTED = "attempted"  # this caller ran the attempt (sent, or refused before any HTTP)
    JOINED = "joined"  # another caller refreshed meanwhile; this is its result
    SKIPPED = "skipped"  # not attempted (needs reconnect, or deleted meanwhile)


class WebhookOutcome(enum.StrEnum):
    """Outcomes of one webhook delivery attempt; all are present (at zero) from the start.

    The same words as ``outbox.DeliveryStatus`` after an attempt, except that its ``pending``
    (another attempt is scheduled) is counted as ``retrying``.
    """

    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRYING = "retrying"  # non-2xx, timeout or connection error; another attempt is scheduled
    FAILED = "failed"  # the last attempt failed; the delivery is abandoned


# The delivery status a dispatcher holds after an attempt, where it differs from the outcome.
_WEBHOOK_STATUS_ALIASES = {"pending": WebhookOutcome.RETRYING}


@dataclass(frozen=True)
class DatabaseSnapshot:
    """The cluster-wide numbers, read from the database right before a scrape."""

    accounts_by_state: Mapping[str, int]
    due_backlog: int
    quota_used: Mapping[str, int]
    quota_limits: Mapping[str, int]
    workers_by_status: Mapping[str, int] = field(default_factory=dict)
    last_successful_cycle: datetime | None = None
    quota_projection: Projection | None = None  # refresh grants, the next 24 h


def last_successful_cycle(beats: Iterable[HeartbeatRow]) -> datetime | None:
    """The latest finish of a cycle whose status counts as success, over all heartbeats."""
    finished = [
        b.last_cycle_finished_at
        for b in beats
        if b.status in SUCCESSFUL_CYCLE_STATUSES and b.last_cycle_finished_at is not None
    ]
    return max(finished, default=None)


def workers_by_status(beats: Iterable[HeartbeatRow], now: datetime) -> dict[str, int]:
    counts = dict.fromkeys(WORKER_STATUSES, 0)
    for beat in beats:
        status = beat.status_at(now)
        counts[status] = counts.get(status, 0) + 1
    return counts


async def read_database(
    *,
    store: Store,
    journal: Journal,
    heartbeats: Heartbeats,
    quota: QuotaConfig,
    now: datetime,
) -> DatabaseSnapshot:
    """Read every database gauge (a handful of aggregate queries)."""
    beats = await heartbeats.all()
    return DatabaseSnapshot(
        accounts_by_state=await store.count_by_state(),
        due_backlog=await store.due_count(now),
        quota_used=await journal.quota_usage(now - WINDOW),
        quota_limits=dict(quota.limits),
        workers_by_status=workers_by_status(beats, now),
        last_successful_cycle=last_successful_cycle(beats),
        quota_projection=await journal.quota_projection(
            now, quota.limits.get(Action.REFRESH_TOKEN.value, 0)
        ),
    )


@dataclass(frozen=True)
class ProxyError:
    status: int
    api: str
    at: datetime


@dataclass
class ProxyDay:
    day: date
    calls: int = 0
    last_error: ProxyError | None = None


class Metrics:
    """This process's metrics; ``observe_*`` are the observers wired by the runtime."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.refreshes = Counter(
            PREFIX + "refreshes",
            "Refresh results by trigger, outcome and kind (attempted, joined, skipped).",
            ("trigger", "outcome", "kind"),
            registry=r,
        )
        self.refresh_duration = Histogram(
            PREFIX + "refresh_duration_seconds",
            "Time a caller waited for a refresh result, by trigger.",
            ("trigger",),
            buckets=REFRESH_BUCKETS,
            registry=r,
        )
        self.token_api_requests = Counter(
            PREFIX + "token_api_requests",
            "Requests to GET /api/v1/accounts/{id}/access-token by HTTP status.",
            ("status",),
            registry=r,
        )
        self.token_api_duration = Histogram(
            PREFIX + "token_api_duration_seconds",
            "Time to answer GET /api/v1/accounts/{id}/access-token.",
            buckets=TOKEN_API_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            PREFIX + "webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            ("outcome",),
            registry=r,
        )
        for outcome in WebhookOutcome:
            self.webhook_deliveries.labels(outcome=outcome.value)
        self.cycle_duration = Histogram(
            PREFIX + "worker_cycle_duration_seconds",
            "Duration of the worker cycles run in this process.",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.cycles = Counter(
            PREFIX + "worker_cycles",
            "Worker cycles run in this process, by status.",
            ("status",),
            registry=r,
        )
        self.proxy_requests = Counter(
            PREFIX + "proxy_requests",
            "Calls through the eBay API proxy by account, API and eBay's HTTP status.",
            ("account", "api", "status"),
            registry=r,
        )
        self._last_success: datetime | None = None
        self._proxy_days: dict[int, ProxyDay] = {}

    # Observers (quick, never raise) -----------------------------------------------------------

    def observe_refresh(self, result: RefreshResult, seconds: float) -> None:
        kind = (
            RefreshKind.SKIPPED
            if result.skipped
            else RefreshKind.JOINED
            if result.joined
            else RefreshKind.ATTEMPTED
        )
        trigger = result.trigger.value
        self.refreshes.labels(trigger=trigger, outcome=result.outcome.value, kind=kind.value).inc()
        self.refresh_duration.labels(trigger=trigger).observe(max(0.0, seconds))

    def observe_cycle(self, report: CycleReport) -> None:
        seconds = (report.finished_at - report.started_at).total_seconds()
        self.cycle_duration.observe(max(0.0, seconds))
        status = report.status.value
        self.cycles.labels(status=status).inc()
        if status in SUCCESSFUL_CYCLE_STATUSES and (
            self._last_success is None or report.finished_at > self._last_success
        ):
            self._last_success = report.finished_at

    def observe_token_request(self, status: int, seconds: float) -> None:
        self.token_api_requests.labels(status=str(status)).inc()
        self.token_api_duration.observe(max(0.0, seconds))

    def observe_proxy_call(self, account_id: int, api: str, status: int, now: datetime) -> None:
        self.proxy_requests.labels(account=str(account_id), api=api, status=str(status)).inc()
        day = self._proxy_days.get(account_id)
        if day is None or day.day != now.date():
            day = self._proxy_days[account_id] = ProxyDay(now.date())
        day.calls += 1
        if status >= 400:
            day.last_error = ProxyError(status, api, now)

    def proxy_day(self, account_id: int, now: datetime) -> ProxyDay:
        """This process's proxied calls of the account today (UTC) and the last error seen."""
        day = self._proxy_days.get(account_id)
        if day is None:
            return ProxyDay(now.date())
        if day.day != now.date():
            return ProxyDay(now.date(), last_error=day.last_error)
        return day

    def webhook_delivery(self, outcome: WebhookOutcome | str) -> None:
        """Count one webhook delivery attempt: ``delivered``, ``retrying`` (or the dispatcher's
        ``pending``) or ``failed``. An unknown word raises ``ValueError`` (a bug, not data)."""
        known = _WEBHOOK_STATUS_ALIASES.get(str(outcome)) or WebhookOutcome(outcome)
        self.webhook_deliveries.labels(outcome=known.value).inc()

    # Exposition --------------------------------------------------------------------------------

    def render(self, snapshot: DatabaseSnapshot | None) -> bytes:
        """The text exposition: process metrics plus the snapshot's gauges (if any)."""
        view = CollectorRegistry(auto_describe=False)
        view.register(_View(self, snapshot))
        return generate_latest(view)

    def process_registry(self) -> CollectorRegistry:
        """A registry with the process metrics only, for a worker's own metrics port."""
        view = CollectorRegistry(auto_describe=False)
        view.register(_View(self, None))
        return view

    def gauges(self, snapshot: DatabaseSnapshot | None) -> Iterator[Metric]:
        last = self._last_success
        if snapshot is not None:
            accounts = GaugeMetricFamily(
                PREFIX + "accounts", "Connected eBay accounts by token state.", labels=["state"]
            )
            by_state = {s.value: 0 for s in TokenState} | dict(snapshot.accounts_by_state)
            for state, n in sorted(by_state.items()):
                accounts.add_metric([state], n)
            yield accounts
            yield GaugeMetricFamily(
                PREFIX + "due_backlog",
                "Active accounts due for a refresh now (cluster-wide).",
                value=snapshot.due_backlog,
            )
            used = GaugeMetricFamily(
                PREFIX + "quota_used",
                "eBay token calls sent over the last 24 hours, by grant type.",
                labels=["grant"],
            )
            limit = GaugeMetricFamily(
                PREFIX + "quota_limit", "eBay's daily limit, by grant type.", labels=["grant"]
            )
            for grant, n in sorted(snapshot.quota_limits.items()):
                used.add_metric([grant], snapshot.quota_used.get(grant, 0))
                limit.add_metric([grant], n)
            yield used
            yield limit
            if snapshot.quota_projection is not None:
                projection = snapshot.quota_projection
                refresh = [Action.REFRESH_TOKEN.value]
                projected = GaugeMetricFamily(
                    PREFIX + "quota_projected",
                    "eBay token calls the next 24 hours take at the recent pace, by grant type.",
                    labels=["grant"],
                )
                projected.add_metric(refresh, projection.projected)
                yield projected
                exceeded = GaugeMetricFamily(
                    PREFIX + "quota_projected_exceeded",
                    "1 when that projection passes eBay's daily limit, else 0.",
                    labels=["grant"],
                )
                exceeded.add_metric(refresh, int(projection.exceeded))
                yield exceeded
            workers = GaugeMetricFamily(
                PREFIX + "workers", "Registered workers by heartbeat status.", labels=["status"]
            )
            for status, n in sorted(snapshot.workers_by_status.items()):
                workers.add_metric([status], n)
            yield workers
            if snapshot.last_successful_cycle is not None and (
                last is None or snapshot.last_successful_cycle > last
            ):
                last = snapshot.last_successful_cycle
        # NaN-free: before any successful cycle the gauge is 0 ("never"), which alerts on age.
        yield GaugeMetricFamily(
            PREFIX + "worker_last_success_timestamp_seconds",
            "Unix time of the latest worker cycle with status ok or degraded.",
            value=last.timestamp() if last is not None else 0.0,
        )


class _View(Collector):
    """One scrape's view: the process registry followed by the gauges."""

    def __init__(self, metrics: Metrics, snapshot: DatabaseSnapshot | None) -> None:
        self._metrics = metrics
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield from self._metrics.registry.collect()
        yield from self._metrics.gauges(self._snapshot)


@contextmanager
def serve_process_metrics(metrics: Metrics, port: int, host: str = LOOPBACK) -> Iterator[str]:
    """Serve ``metrics``' process metrics at ``http://host:port/metrics`` (a daemon thread).

    For a standalone worker, which has no HTTP server: the database gauges are left to the
    API's ``/metrics`` (reading them here would need the event loop from another thread).
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.process_registry())
    except OSError as exc:
        raise UsageError(
            f"--metrics-port {port}: cannot listen on {host}: {exc.strerror or exc}"
        ) from exc
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT_S)
