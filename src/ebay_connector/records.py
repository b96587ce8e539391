"""The stored state of one deployment, opened without eBay: what reading commands need.

:func:`open_records` opens the database and the key ring and checks that the ring fits what is
stored; :func:`ebay_connector.runtime.open_runtime` builds every service on top of it. A command
that only reads (``accounts``, ``logs``, ``inspect``) opens just the records, and so starts
without loading the HTTP clients, the worker or the web stack (docs/decisions.md, "CLI
start-up").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.db.database import Database
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.db.store import Store
from ebay_connector.keys import rotation
from ebay_connector.keys.source import KeySource, load_keyring, ring_setting
from ebay_connector.settings import Settings


@dataclass
class Records:
    settings: Settings
    db: Database
    store: Store
    journal: Journal
    heartbeats: Heartbeats
    keys: KeySource
    clock: Clock

    @property
    def environment(self) -> str:
        return self.settings.ebay_environment.value

    def parts(self) -> dict[str, Any]:
        """The records' fields by name, for a runtime built on them."""
        return {f.name: getattr(self, f.name) for f in fields(Records)}


@asynccontextmanager
async def open_records(
    settings: Settings, *, clock: Clock = utcnow, schema: str | None = None
) -> AsyncIterator[Records]:
    keys = load_keyring(settings)
    db = Database.open(
        settings.database_url, clock=clock, schema=schema, pool_size=settings.database_pool_size
    )
    store = Store(db)
    try:
        # A wrong key fails here in one line, not as every account turning decrypt_failed.
        await rotation.verify_keyring(db, keys.ring, setting=ring_setting(settings))
        yield Records(
            settings=settings,
            db=db,
            store=store,
            journal=Journal(db),
            heartbeats=Heartbeats(db),
            keys=keys,
            clock=clock,
        )
    finally:
        await store.flush()
        await db.close()
