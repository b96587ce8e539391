"""Composition at the edge: settings in, running parts out (store, keys, client, refresher).

The CLI, the server and the tests build their parts here and nowhere else, so every entry point
refreshes through the same objects wired the same way.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp

from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.db.database import Database
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import Store
from ebay_connector.ebay.client import AppCredentials, EbayClient
from ebay_connector.ebay.pacing import Pacer
from ebay_connector.errors import ConfigError, KeyRingError
from ebay_connector.keys import rotation
from ebay_connector.keys.crypto import KeyRing
from ebay_connector.service import chores as housekeeping
from ebay_connector.service.chores import Chore
from ebay_connector.service.metrics import Metrics
from ebay_connector.service.refresh import RefreshConfig, Refresher
from ebay_connector.service.worker import Worker, WorkerConfig, new_instance_id
from ebay_connector.settings import EbayEnvironment, Settings

# On-demand bursts share the pool with the worker, so it never shrinks below this.
MIN_HTTP_CONNECTIONS = 64


@dataclass(frozen=True)
class KeySource:
    ring: KeyRing
    description: str  # where the ring came from, for the start-up line
    created: bool


def load_keyring(settings: Settings) -> KeySource:
    """The key ring from the environment, or the embedded default's local key file."""
    if settings.token_keys is not None:
        try:
            ring = KeyRing.from_spec(
                settings.token_keys.get_secret_value(),
                settings.token_primary_key_id,
                settings.fingerprint_key.get_secret_value() if settings.fingerprint_key else None,
            )
        except KeyRingError as exc:
            raise ConfigError(f"{_key_setting(exc.message)}: {exc.message}") from exc
        return KeySource(ring, "EBAY_CONNECTOR_TOKEN_KEYS", created=False)
    if settings.ebay_environment is not EbayEnvironment.EMULATOR:
        raise ConfigError(
            "EBAY_CONNECTOR_TOKEN_KEYS: required outside the emulator; "
            "the generated local key file is only for the embedded default"
        )
    path = Path(settings.key_file)
    try:
        ring, created = KeyRing.load_or_create_file(path)
    except KeyRingError as exc:
        raise ConfigError(f"EBAY_CONNECTOR_KEY_FILE: {exc.message}") from exc
    except OSError as exc:
        raise ConfigError(
            f"EBAY_CONNECTOR_KEY_FILE: cannot use {path}: {exc.strerror or exc}"
        ) from exc
    return KeySource(ring, str(path.resolve()), created=created)


def _ring_setting(settings: Settings) -> str:
    """The setting an operator fixes when the key ring is wrong."""
    return "EBAY_CONNECTOR_TOKEN_KEYS" if settings.token_keys else "EBAY_CONNECTOR_KEY_FILE"


def _key_setting(message: str) -> str:
    """Which key setting a key-ring error is about (the message never holds key material)."""
    if "fingerprint" in message:
        return "EBAY_CONNECTOR_FINGERPRINT_KEY"
    if "primary" in message:
        return "EBAY_CONNECTOR_TOKEN_PRIMARY_KEY_ID"
    return "EBAY_CONNECTOR_TOKEN_KEYS"


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
class Runtime:
    settings: Settings
    db: Database
    store: Store
    journal: Journal
    heartbeats: Heartbeats
    keys: KeySource
    http: aiohttp.ClientSession
    client: EbayClient
    pacer: Pacer
    refresher: Refresher
    instance_id: str
    clock: Clock
    chores: list[Chore] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)  # this runtime's own registry

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

    @property
    def environment(self) -> str:
        return self.settings.ebay_environment.value


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
    keys = load_keyring(settings)
    db = Database.open(
        settings.database_url, clock=clock, schema=schema, pool_size=settings.database_pool_size
    )
    store, journal = Store(db), Journal(db)
    own_http = http is None
    http_client = http or make_http_session(settings)
    client = EbayClient(
        http_client,
        app=AppCredentials(
            settings.app_client_id, settings.app_client_secret, settings.app_ru_name
        ),
        endpoints=settings.endpoints,
        fingerprinter=keys.ring,
        deadline_s=settings.http_timeout_seconds,
    )
    instance_id = new_instance_id()
    pacer = Pacer(settings.max_calls_per_second or None)
    refresher = Refresher(
        store=store,
        journal=journal,
        pacer=pacer,
        client=client,
        keyring=keys.ring,
        config=refresh_config(settings),
        owner=instance_id,
        clock=clock,
        rng=rng,
    )
    try:
        # A wrong key fails here in one line, not as every account turning decrypt_failed.
        await rotation.verify_keyring(db, keys.ring, setting=_ring_setting(settings))
        runtime = Runtime(
            settings=settings,
            db=db,
            store=store,
            journal=journal,
            heartbeats=Heartbeats(db),
            keys=keys,
            http=http_client,
            client=client,
            pacer=pacer,
            refresher=refresher,
            instance_id=instance_id,
            clock=clock,
        )
        refresher.observers.append(runtime.metrics.observe_refresh)
        runtime.chores = housekeeping.build(runtime)
        yield runtime
    finally:
        await store.flush()
        if own_http:
            await http_client.close()
        await db.close()
