"""The database: engine construction and the one place database exceptions are translated.

Nothing above this module sees ``sqlalchemy.exc``: failures leave as ``StoreError`` /
``StoreUnavailable`` / ``SchemaMissing``, chained to their cause. The store, the journal and the
heartbeats each own the statements of their concept and run them through :meth:`transaction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.db import models as m
from ebay_connector.errors import SchemaMissing, StoreError, StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "ebay_connector_read_only"  # execution option: a single read, no write lock


def async_url(url: str) -> str:
    """Map the operator-facing URL to the async driver SQLAlchemy should use."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def describe(url: str) -> str:
    """The database for people: the SQLite file, or the URL without its password."""
    path = sqlite_path(url)
    if path is not None:
        return f"SQLite file {path.resolve()}"
    return make_url(url).render_as_string(hide_password=True)


DEFAULT_POOL_SIZE = 20
POOL_TIMEOUT_S = 60
# A server that vanished without a reset (a partition, a dead host) must not hold a caller for
# asyncpg's default 60 s: the request fails as `store_unavailable` and the next one tries again.
CONNECT_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 3.0  # /readyz answers "not ready" within this, never hangs


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_file(path: Path) -> None:
    """The SQLite file (tokens, sealed; the journal; users' hashes) readable by its owner only:
    a new directory 0700, the file created 0600 before SQLite opens it (SQLite gives its -wal
    and -shm files the database file's mode), an existing file's group and other bits removed."""
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            path.chmod(mode & 0o700)
    else:
        os.close(fd)


def create_engine(
    url: str, *, schema: str | None = None, pool_size: int = DEFAULT_POOL_SIZE
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and write-ahead ``BEGIN IMMEDIATE``."""
    full = async_url(url)
    if make_url(full).get_backend_name() == "sqlite":
        path = sqlite_path(full)
        if path is not None:
            private_file(path)
        # A fixed pool: callers beyond it wait for a connection instead of opening a new one, a
        # thread and four PRAGMAs (see docs/decisions.md, "A fixed connection pool, no overflow").
        engine = create_async_engine(
            full,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_S,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction starts (see "begin" below).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                # A single read needs no transaction: in autocommit mode it sees a consistent
                # WAL snapshot and takes no lock, so readers never queue behind the writer.
                return
            # A deferred transaction that reads and then writes fails with SQLITE_BUSY instead of
            # waiting when another process (CLI beside the demo) wrote meanwhile; IMMEDIATE waits.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
    if schema is not None:
        connect_args["server_settings"] = {"search_path": schema}
    # A fixed pool and no overflow: callers beyond it queue for a connection instead of opening
    # (and closing) new ones (see docs/decisions.md, "A fixed connection pool, no overflow").
    return create_async_engine(
        full,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


MAX_DRIVER_MESSAGE = 200


def _driver_message(exc: BaseException) -> str:
    """The driver's own first line (e.g. 'role "x" does not exist'), without SQL or parameters."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    first = lines[0] if lines else ""
    # asyncpg errors arrive wrapped as "<class 'asyncpg...'>: message".
    first = first.split(">: ", 1)[-1]
    text = f"{cause.__class__.__name__}: {first}" if first else cause.__class__.__name__
    return text[:MAX_DRIVER_MESSAGE]


def _is_missing_table(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc))
    return (
        "no such table" in text
        or "UndefinedTable" in text
        or ("does not exist" in text and ("relation" in text))
    )


def translate(exc: sqlalchemy.exc.SQLAlchemyError | OSError) -> StoreError:
    """The product's error for a database failure (the caller chains it with ``from exc``)."""
    if _is_missing_table(exc):
        return SchemaMissing("the database has no schema yet: run `ebay-connector db upgrade`")
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return StoreError(f"constraint violated: {_driver_message(exc)}")
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | OSError):
        return StoreUnavailable(f"database unavailable: {_driver_message(exc)}")
    return StoreError(f"database error: {_driver_message(exc)}")


class Database:
    """Owns the engine. Built by :meth:`open`, ended by :meth:`close`."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        # SQLite has one writer at a time: this process's writers queue here, in order, not in
        # SQLite's busy handler (see docs/decisions.md, "SQLite writers queue in-process").
        # Other processes still meet BEGIN IMMEDIATE.
        self._writer: asyncio.Lock | None = asyncio.Lock() if self.backend == "sqlite" else None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock = utcnow,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> Database:
        return cls(create_engine(url, schema=schema, pool_size=pool_size), clock=clock)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """For one read statement: on SQLite no transaction and no lock (see the begin hook)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{READ_ONLY: True})
                yield conn
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; database exceptions leave as StoreError, chained."""
        async with self._writer or contextlib.nullcontext():
            try:
                async with self.engine.begin() as conn:
                    yield conn
            except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
                raise translate(exc) from exc

    async def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        """One round trip; ``StoreUnavailable`` if the database does not answer in time."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.read() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except TimeoutError as exc:
            message = f"database unavailable: no answer within {timeout_s:g} s"
            raise StoreUnavailable(message) from exc

    async def max_connections(self) -> int | None:
        """The server's limit on connections (PostgreSQL); None where there is none (SQLite)."""
        if self.backend != "postgresql":
            return None
        async with self.read() as conn:
            return int((await conn.execute(sa.text("SHOW max_connections"))).scalar_one())

    async def create_schema(self) -> None:
        """Create all tables directly (tests); operators use ``db upgrade`` (Alembic)."""
        async with self.transaction() as conn:
            await conn.run_sync(m.Base.metadata.create_all)
