"""Shared fixtures: real SQLite and PostgreSQL databases, the real emulator on loopback, a clock.

PostgreSQL: one migrated schema per test process in the database named by
EBAY_CONNECTOR_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), emptied
before each test. When it is unreachable the PostgreSQL tier is skipped with a visible reason —
unless EBAY_CONNECTOR_TEST_REQUIRE_POSTGRES=1 (set by .ci/run), where an unreachable PostgreSQL
fails the run.

Test processes run side by side (pytest-xdist, see scripts/test) and beside other checkouts' runs
on the same PostgreSQL: everything a test creates has a unique name (schema, database, port,
temporary directory), and no test acts on another's connections or data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import argon2
import asyncpg
import pytest

from ebay_connector import settings
from ebay_connector.db import migrate, users
from ebay_connector.db.models import Base
from ebay_connector.emulator import Emulator, EmulatorServer
from ebay_connector.runtime import Runtime, open_runtime

POSTGRES_URL = os.environ.get(
    "EBAY_CONNECTOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("EBAY_CONNECTOR_TEST_REQUIRE_POSTGRES") == "1"

_postgres_checked: dict[str, str | None] = {}


def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking code that starts its own event loop away from the test's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers; else why not (checked once per run)."""
    if "reason" not in _postgres_checked:

        async def probe() -> None:
            conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"))
            await conn.close()

        try:
            in_thread(asyncio.run, asyncio.wait_for(probe(), 5))
            _postgres_checked["reason"] = None
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _postgres_checked["reason"] = f"PostgreSQL at {POSTGRES_URL} unreachable: {exc!r}"
    return _postgres_checked["reason"]


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """argon2 at its cheapest parameters in the test processes (argon2-cffi's profile for tests).

    At the product's cost each hash or check takes 0.15-0.4 s of CPU, and the in-process tiers
    hash and check hundreds of passwords; what they test is who may sign in, not the hash's cost.
    The processes the tests start (demo, serve) keep the product's parameters.
    """
    cheap = argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(users, "_HASHER", cheap)
        users._dummy_hash.cache_clear()  # made on first use, with whichever hasher is in place
        yield
    users._dummy_hash.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's EBAY_CONNECTOR_* variables or .env file."""
    for name in list(os.environ):
        if name.startswith(settings.ENV_PREFIX) and not name.startswith(
            settings.ENV_PREFIX + "TEST_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class FakeClock:
    """A clock tests move by hand; never sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class DatabaseTarget:
    url: str
    schema: str | None
    backend: str


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test process; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    in_thread(migrate.upgrade, f"sqlite:///{path}")
    return path


@dataclass(frozen=True)
class _PostgresSchema:
    name: str
    empty: str  # the statements that bring it back to "just migrated"


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[_PostgresSchema]:
    """A PostgreSQL schema migrated once per test process (migrating costs ~0.3 s; emptying ~10 ms).

    Emptying deletes every row (children first) and restarts every sequence, so each test starts
    where a freshly migrated schema starts, ids included.
    """
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _pg_execute(f'CREATE SCHEMA "{schema}"')
    try:
        in_thread(migrate.upgrade, POSTGRES_URL, schema=schema)
        tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
        migrated = _pg_fetch(
            "SELECT tablename FROM pg_tables"
            " WHERE schemaname = $1 AND tablename <> 'alembic_version'",
            schema,
        )
        assert set(migrated) == set(tables), "the migrations and the models name other tables"
        sequences = _pg_fetch("SELECT sequencename FROM pg_sequences WHERE schemaname = $1", schema)
        empty = "".join(f'DELETE FROM "{schema}"."{table}";' for table in tables) + "".join(
            f'ALTER SEQUENCE "{schema}"."{sequence}" RESTART;' for sequence in sequences
        )
        yield _PostgresSchema(schema, f"BEGIN;{empty}COMMIT;")
    finally:
        _pg_execute(f'DROP SCHEMA "{schema}" CASCADE')


# A test that acts on every connection to its database (terminates them, say) gets a database of
# its own: in the shared one it would hit the other test processes' connections.
OWN_POSTGRES_DATABASE = "own-postgresql-database"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseTarget]:
    """A freshly migrated database: a copy of a migrated SQLite file, or the test process's
    PostgreSQL schema, emptied (or, for OWN_POSTGRES_DATABASE, a new PostgreSQL database)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        shutil.copyfile(template, tmp_path / "test.db")
        yield DatabaseTarget(f"sqlite:///{tmp_path}/test.db", None, "sqlite")
    elif request.param == OWN_POSTGRES_DATABASE:
        with postgres_database("ebc_own", migrated=True) as url:
            yield DatabaseTarget(url, None, "postgresql")
    else:
        schema: _PostgresSchema = request.getfixturevalue("_postgres_schema")
        _pg_execute(schema.empty)
        yield DatabaseTarget(POSTGRES_URL, schema.name, "postgresql")


def require_postgres() -> None:
    """Skip the test when PostgreSQL is unreachable — or fail it where CI requires PostgreSQL."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def postgres_database(prefix: str, *, migrated: bool) -> Iterator[str]:
    """A new PostgreSQL database (a process cannot be handed a schema), dropped afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _pg_execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        if migrated:
            in_thread(migrate.upgrade, url)
        yield url
    finally:
        _pg_execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _pg_execute(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    in_thread(asyncio.run, run())


def _pg_fetch(sql: str, *args: Any) -> list[Any]:
    """The first column of every row."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"))
        try:
            return [row[0] for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    result: list[Any] = in_thread(asyncio.run, run())
    return result


@pytest.fixture(scope="session")
def _emulator_stops() -> Iterator[list[threading.Thread]]:
    """The threads stopping the tests' emulators; all are joined before the session ends."""
    stops: list[threading.Thread] = []
    yield stops
    for stop in stops:
        stop.join()


@pytest.fixture
def emulator(
    clock: FakeClock, _emulator_stops: list[threading.Thread]
) -> Iterator[tuple[Emulator, str]]:
    """The real emulator, served over HTTP on 127.0.0.1, sharing the test's clock."""
    emu = Emulator(clock=clock, seed=1234)
    server = EmulatorServer(emu).start()
    try:
        yield emu, server.base_url
    finally:
        # Stopping takes uvicorn ~0.2 s (its shutdown tick), for each of some 350 tests, and
        # nothing after the test waits for it: the stop runs in a thread of its own.
        stop = threading.Thread(target=server.stop, name="emulator-stop", daemon=True)
        stop.start()
        _emulator_stops[:] = [s for s in _emulator_stops if s.is_alive()]
        _emulator_stops.append(stop)


def make_settings(database: DatabaseTarget, emulator_url: str, tmp_path: Path, **extra: Any) -> Any:
    return settings.load(
        _env_file=None,
        database_url=database.url,
        emulator_url=emulator_url,
        key_file=tmp_path / "keys" / "keyring.json",
        **{"public_url": "http://127.0.0.1:9", **extra},
    )


def register_app(emu: Emulator, conf: Any) -> None:
    """Register the product's application (its settings' keyset and callback) at the emulator."""
    emu.register_app(
        client_id=conf.app_client_id,
        client_secret=conf.app_client_secret,
        ru_name=conf.app_ru_name,
        accept_url=conf.callback_url,
    )


@contextlib.asynccontextmanager
async def open_test_runtime(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    *,
    rng_seed: int = 7,
    **extra: Any,
) -> AsyncIterator[Runtime]:
    """A runtime on ``database`` whose application the emulator knows; ``extra`` are settings."""
    emu, base_url = emulator
    conf = make_settings(database, base_url, tmp_path, **extra)
    register_app(emu, conf)
    rng = random.Random(rng_seed)
    async with open_runtime(conf, clock=clock, rng=rng, schema=database.schema) as rt:
        yield rt


@pytest.fixture
async def runtime(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> AsyncIterator[Runtime]:
    """A runtime with the product's HTTP timeout: its deadline includes the wait for a pooled
    connection, and a loaded machine makes many concurrent calls wait seconds for one. A test
    that waits for the timeout on purpose (a hang) opens its own runtime with a short one."""
    async with open_test_runtime(database, emulator, tmp_path, clock) as rt:
        yield rt
