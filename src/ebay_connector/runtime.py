"""The composition root: settings in, every running part out.

The CLI, the server, the demo and the tests build their parts here and nowhere else, so every
entry point refreshes, connects and delivers through the same objects wired the same way. Services
receive their collaborators; none of them sees the runtime.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import aiohttp

from ebay_connector.core.allowance import Allowance
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Trigger
from ebay_connector.db import login_throttle
from ebay_connector.db.account_deletions import AccountDeletions
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.connect_states import ConnectStates
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.login_throttle import LoginThrottle
from ebay_connector.db.outbox import Outbox
from ebay_connector.db.users import Users
from ebay_connector.ebay.app_token import AppTokenChore, AppTokens
from ebay_connector.ebay.client import AppCredentials, EbayClient
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.ebay.public_keys import PublicKeys
from ebay_connector.records import Records, open_records
from ebay_connector.service import retention, webhooks
from ebay_connector.service.chores import Chore
from ebay_connector.service.connect import Connector
from ebay_connector.service.manual import ManualRefreshes
from ebay_connector.service.metrics import Metrics
from ebay_connector.service.refresh import RefreshConfig, Refresher
from ebay_connector.service.retention import RetentionChore
from ebay_connector.service.webhooks import Dispatcher, NoticeChore, WebhookEndpoints
from ebay_connector.service.worker import Worker, WorkerConfig, new_instance_id
from ebay_connector.settings import Settings

# On-demand bursts share the pool with the worker, so it never shrinks below this.
MIN_HTTP_CONNECTIONS = 64


# Transport-level loggers whose DEBUG traces print raw headers (e.g. an OAuth code in a Location
# header): they never log below WARNING, whatever the root level.
WIRE_LOGGERS = ("httpcore", "hpack", "aiohttp.client")


def silence_wire_loggers() -> None:
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def make_http_session(settings: Settings) -> aiohttp.ClientSession:
    """The one shared HTTP session for eBay calls (aiohttp; why: see ``ebay.client``).

    No cookie jar: eBay's OAuth endpoints set none we need, and one shared jar would carry a
    cookie from one seller's call into the next. The connection limit keeps one keep-alive
    connection per refresh in flight, never more (see docs/decisions.md, "aiohttp for eBay calls").
    """
    connections = max(settings.worker_concurrency, MIN_HTTP_CONNECTIONS)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_seconds),
    )


def refresh_config(settings: Settings) -> RefreshConfig:
    return RefreshConfig(
        access_token_margin=settings.access_token_margin,
        on_demand_cooldown=settings.on_demand_cooldown,
        lease=settings.lease,
        policy=settings.policy,
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        interval=timedelta(seconds=settings.worker_interval_seconds),
        concurrency=settings.worker_concurrency,
        lease=settings.lease,
        drain=timedelta(seconds=settings.worker_drain_seconds),
        quota=settings.quota,
    )


@dataclass
class Runtime(Records):
    """Every running part of one process, built once by :func:`open_runtime` and nowhere else."""

    http: aiohttp.ClientSession
    client: EbayClient
    pacer: Pacer
    refresher: Refresher
    manual: ManualRefreshes
    connector: Connector
    users: Users
    api_keys: ApiKeys
    connect_states: ConnectStates
    outbox: Outbox
    webhooks: WebhookEndpoints
    app_tokens: AppTokens
    public_keys: PublicKeys
    account_deletions: AccountDeletions
    login_throttle: LoginThrottle
    chores: list[Chore]
    metrics: Metrics  # this runtime's own registry
    instance_id: str

    def worker(self) -> Worker:
        """A worker wired to this runtime (its instance id is the refresher's lease owner)."""
        worker = Worker(
            store=self.store,
            journal=self.journal,
            heartbeats=self.heartbeats,
            refresher=self.refresher,
            config=worker_config(self.settings),
            clock=self.clock,
            chores=self.chores,
        )
        worker.cycle_observers.append(self.metrics.observe_cycle)
        return worker


def build_chores(
    settings: Settings,
    *,
    journal: Journal,
    heartbeats: Heartbeats,
    box: Outbox,
    dispatcher: Dispatcher,
    app_tokens: AppTokens,
) -> list[Chore]:
    """The housekeeping every worker of a runtime runs after its refreshes, in order."""
    return [
        RetentionChore(journal, retention.policy_of(settings)),
        NoticeChore(
            box,
            dispatcher,
            heartbeats,
            journal,
            thresholds=webhooks.notice_thresholds(settings),
            quota_config=settings.quota,
            quota_low_share=settings.quota_low_share,
            keep=timedelta(days=settings.retention_days),  # the journal's retention, for the outbox
        ),
        AppTokenChore(app_tokens),  # renewed only while in use
    ]


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    http: aiohttp.ClientSession | None = None,
    rng: random.Random | None = None,
    schema: str | None = None,
) -> AsyncIterator[Runtime]:
    silence_wire_loggers()
    async with open_records(settings, clock=clock, schema=schema) as records:
        own_http = http is None
        http_client = http or make_http_session(settings)
        try:
            yield _build(records, http_client, rng)
        finally:
            if own_http:
                await http_client.close()


def _build(records: Records, http: aiohttp.ClientSession, rng: random.Random | None) -> Runtime:
    settings, db, clock = records.settings, records.db, records.clock
    store, journal, ring = records.store, records.journal, records.keys.ring
    client = EbayClient(
        http,
        app=AppCredentials(
            settings.app_client_id, settings.app_client_secret, settings.app_ru_name
        ),
        endpoints=settings.endpoints,
        fingerprinter=ring,
        deadline_s=settings.http_timeout_seconds,
    )
    instance_id = new_instance_id()
    metrics = Metrics()
    pacer = Pacer(settings.max_calls_per_second or None)
    refresher = Refresher(
        store=store,
        journal=journal,
        pacer=pacer,
        client=client,
        keyring=ring,
        config=refresh_config(settings),
        owner=instance_id,
        clock=clock,
        rng=rng,
    )
    refresher.observers.append(metrics.observe_refresh)
    box = Outbox(db)
    dispatcher = Dispatcher(
        box,
        ring,
        config=webhooks.dispatch_config(settings),
        clock=clock,
        on_outcome=metrics.webhook_delivery,
    )
    manual_window = timedelta(seconds=settings.manual_refresh_window_seconds)
    app_tokens = AppTokens(
        db=db,
        client=client,
        keyring=ring,
        environment=settings.ebay_environment.value,
        owner=instance_id,
        clock=clock,
        lease=settings.lease,
    )
    return Runtime(
        **records.parts(),
        http=http,
        client=client,
        pacer=pacer,
        refresher=refresher,
        manual=ManualRefreshes(
            refresher,
            per_account=Allowance(settings.manual_refreshes_per_account, manual_window),
            per_organization=Allowance(settings.manual_refreshes_per_organization, manual_window),
            clock=clock,
        ),
        connector=Connector(
            store=store,
            journal=journal,
            client=client,
            keyring=ring,
            environment=settings.ebay_environment.value,
            scopes=settings.scope_list,
            policy_config=settings.policy,
            clock=clock,
        ),
        users=Users(db),
        api_keys=ApiKeys(db),
        connect_states=ConnectStates(db, ring.derive_secret("oauth state")),
        outbox=box,
        webhooks=WebhookEndpoints(box, dispatcher, ring),
        app_tokens=app_tokens,
        public_keys=PublicKeys(
            client,
            app_tokens,
            clock,
            lambda exchange: journal.record_exchange(
                exchange,
                trigger=Trigger.ON_DEMAND,
                environment=settings.ebay_environment.value,
            ),
        ),
        account_deletions=AccountDeletions(db),
        login_throttle=LoginThrottle(
            db,
            ring.derive_secret("login throttle"),
            login_throttle.policy(settings),
            login_throttle.parse_networks(settings.trusted_proxies),
        ),
        chores=build_chores(
            settings,
            journal=journal,
            heartbeats=records.heartbeats,
            box=box,
            dispatcher=dispatcher,
            app_tokens=app_tokens,
        ),
        metrics=metrics,
        instance_id=instance_id,
    )
