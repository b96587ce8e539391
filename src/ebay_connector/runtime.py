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
import httpx

from ebay_connector.core.allowance import Allowance
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Trigger
from ebay_connector.db import login_throttle
from ebay_connector.db.account_deletions import AccountDeletions
from ebay_connector.db.account_list import AccountList
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.connect_sessions import ConnectSessionStore
from ebay_connector.db.connect_states import ConnectStates
from ebay_connector.db.database import Database, sqlite_path
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.login_throttle import LoginThrottle
from ebay_connector.db.outbox import Outbox
from ebay_connector.db.quota_ledger import QuotaLedger
from ebay_connector.db.return_urls import ReturnUrls
from ebay_connector.db.users import Users
from ebay_connector.ebay.app_token import AppTokenChore, AppTokens
from ebay_connector.ebay.client import AppCredentials, EbayClient
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.ebay.public_keys import PublicKeys
from ebay_connector.errors import ConfigError
from ebay_connector.keys.source import load_keyring
from ebay_connector.records import Records, open_records
from ebay_connector.service import doctor, retention, webhooks
from ebay_connector.service.chores import Chore
from ebay_connector.service.connect import Connector
from ebay_connector.service.connect_sessions import ConnectSessions
from ebay_connector.service.manual import ManualRefreshes
from ebay_connector.service.metrics import Metrics
from ebay_connector.service.proxy import Proxy
from ebay_connector.service.refresh import RefreshConfig, Refresher
from ebay_connector.service.retention import RetentionChore
from ebay_connector.service.webhooks import Dispatcher, NoticeChore, WebhookEndpoints
from ebay_connector.service.worker import Worker, WorkerConfig, new_instance_id
from ebay_connector.settings import EbayEnvironment, Settings
from ebay_connector.version import code_version

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
        quota=settings.quota,
        outage_memory=settings.outage_token_memory,
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
    account_list: AccountList
    api_keys: ApiKeys
    connect_states: ConnectStates
    return_urls: ReturnUrls
    connect_sessions: ConnectSessions
    proxy: Proxy
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
        ledger=QuotaLedger(db),
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
    connector = Connector(
        store=store,
        journal=journal,
        client=client,
        keyring=ring,
        environment=settings.ebay_environment.value,
        scopes=settings.scope_list,
        policy_config=settings.policy,
        clock=clock,
        outbox=box,
    )
    connect_states = ConnectStates(db, ring.derive_secret("oauth state"))
    proxy = Proxy(
        refresher=refresher,
        store=store,
        http=http,
        endpoints=settings.endpoints,
        max_body_bytes=settings.proxy_max_body_bytes,
        timeout_seconds=settings.http_timeout_seconds,
        clock=clock,
    )
    proxy.observers.append(metrics.observe_proxy_call)
    allowed_urls = ReturnUrls(db)
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
            journal=journal,
            clock=clock,
        ),
        connector=connector,
        users=Users(db),
        account_list=AccountList(db),
        api_keys=ApiKeys(db),
        connect_states=connect_states,
        return_urls=allowed_urls,
        connect_sessions=ConnectSessions(
            sessions=ConnectSessionStore(db),
            allowed_urls=allowed_urls,
            states=connect_states,
            store=store,
            connector=connector,
            client=client,
            scopes=settings.scope_list,
            public_url=settings.public_url,
            ttl=timedelta(seconds=settings.connect_session_ttl_seconds),
            csrf_secret=ring.derive_secret("connect session form"),
        ),
        proxy=proxy,
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


DOCTOR_POOL_SIZE = 2  # the check-up reads a little, a few statements at once


@asynccontextmanager
async def open_doctor(settings: Settings) -> AsyncIterator[doctor.Doctor]:
    """The check-up of the configured deployment, changing nothing of it.

    Not built on the records: the key ring that does not fit the database is one of the things
    the doctor reports, not a reason to stop. A missing SQLite file or key file is not created.
    """
    silence_wire_loggers()
    if (
        settings.token_keys is None
        and settings.ebay_environment is EbayEnvironment.EMULATOR
        and not settings.key_file.exists()
    ):
        raise ConfigError(
            f"EBAY_CONNECTOR_KEY_FILE: no key file at {settings.key_file} (the first "
            "`ebay-connector serve` or `demo` creates it)"
        )
    keys = load_keyring(settings)
    path = sqlite_path(settings.database_url)
    db = None
    if path is None or path.exists():
        db = Database.open(settings.database_url, pool_size=DOCTOR_POOL_SIZE)
    http = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=doctor.HTTP_TIMEOUT_S),
    )
    web = httpx.AsyncClient(timeout=doctor.HTTP_TIMEOUT_S, follow_redirects=False)
    client = EbayClient(
        http,
        app=AppCredentials(
            settings.app_client_id, settings.app_client_secret, settings.app_ru_name
        ),
        endpoints=settings.endpoints,
        fingerprinter=keys.ring,
        deadline_s=doctor.HTTP_TIMEOUT_S,
    )
    try:
        yield doctor.Doctor(
            settings=settings, keys=keys, db=db, client=client, web=web, version=code_version()
        )
    finally:
        await web.aclose()
        await http.close()
        if db is not None:
            await db.close()
