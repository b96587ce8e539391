"""`alembic upgrade head` yields exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ebay_connector.db import migrate
from ebay_connector.db.database import Database
from ebay_connector.db.models import Base
from tests.conftest import DatabaseTarget, in_thread, postgres_database

pytestmark = pytest.mark.migration


async def test_upgrade_head_matches_the_models(database: DatabaseTarget) -> None:
    db = Database.open(database.url, schema=database.schema)
    try:
        async with db.engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, Base.metadata))

            differences = await conn.run_sync(diff)
    finally:
        await db.close()
    assert differences == []


def _plain(value: Any) -> Any:
    """The inspector's answer as JSON values (types and defaults by their SQL text), sorted."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _schema_of(sync_conn: sa.Connection, schema: str | None) -> dict[str, Any]:
    """Everything the migrations create: tables with their columns, keys, indexes and
    constraints, sequences, views, and the revision alembic recorded."""
    inspector = sa.inspect(sync_conn)
    tables = {}
    for name in inspector.get_table_names(schema=schema):
        tables[name] = _plain(
            {
                "columns": inspector.get_columns(name, schema=schema),
                "primary_key": inspector.get_pk_constraint(name, schema=schema),
                "foreign_keys": sorted(
                    inspector.get_foreign_keys(name, schema=schema), key=lambda fk: str(fk)
                ),
                "indexes": sorted(
                    inspector.get_indexes(name, schema=schema), key=lambda ix: str(ix["name"])
                ),
                "unique": sorted(
                    inspector.get_unique_constraints(name, schema=schema),
                    key=lambda uq: str(uq["name"]),
                ),
                "checks": sorted(
                    inspector.get_check_constraints(name, schema=schema),
                    key=lambda ck: str(ck["name"]),
                ),
            }
        )
    sequences = (
        inspector.get_sequence_names(schema=schema) if sync_conn.dialect.supports_sequences else []
    )
    version = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    return {
        "tables": tables,
        "sequences": sorted(sequences),
        "views": sorted(inspector.get_view_names(schema=schema)),
        "revisions": sorted(sync_conn.execute(sa.select(version.c.version_num)).scalars()),
    }


async def _schema(database: DatabaseTarget) -> dict[str, Any]:
    db = Database.open(database.url, schema=database.schema)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(_schema_of, database.schema)
    finally:
        await db.close()


async def test_upgrade_is_idempotent(database: DatabaseTarget) -> None:
    first = await _schema(database)  # the fixture upgraded the database to head
    assert set(Base.metadata.tables) | {"alembic_version"} == set(first["tables"])
    assert len(first["revisions"]) == 1
    in_thread(migrate.upgrade, database.url, schema=database.schema)  # already at head: no-op
    assert await _schema(database) == first


def test_the_quota_ledger_starts_from_the_last_24_hours_of_calls(tmp_path: Path) -> None:
    """Upgrading keeps eBay's limit: the ledger is filled from the calls already sent."""
    url = f"sqlite:///{tmp_path / 'before.db'}"
    in_thread(migrate.upgrade, url, revision="0014")
    now = datetime.now(UTC)
    sent = [now - timedelta(hours=1), now - timedelta(hours=1), now - timedelta(hours=30)]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for n, created_at in enumerate([*sent, now]):
            conn.execute(
                sa.text(
                    "INSERT INTO ebay_exchanges (action, trigger, environment, outcome, sent,"
                    " request, created_at) VALUES (:action, 'scheduled', 'emulator', 'ok', :sent,"
                    " '{}', :at)"
                ),
                {"action": "refresh_token", "sent": n < 3, "at": created_at},
            )
    in_thread(migrate.upgrade, url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action, calls FROM quota_buckets")).all()
    engine.dispose()
    # The two calls of an hour ago; not the one of 30 h ago, nor the one never sent.
    assert [(action, calls) for action, calls in rows] == [("refresh_token", 2)]


def _upgrade_with_duplicate_webhooks(url: str) -> list[tuple[int, int, str]]:
    """Webhook endpoints added twice before 0016, then the upgrade: what remains."""
    in_thread(migrate.upgrade, url, revision="0015")

    async def seed() -> None:
        db = Database.open(url)
        try:
            async with db.engine.begin() as conn:
                for name in ("one", "two"):
                    await conn.execute(
                        sa.text(
                            "INSERT INTO organizations (name, created_at) "
                            "VALUES (:n, CURRENT_TIMESTAMP)"
                        ),
                        {"n": name},
                    )
                for org, hook in ((1, "a"), (1, "a"), (1, "b"), (2, "a"), (1, "a")):
                    await conn.execute(
                        sa.text(
                            "INSERT INTO webhook_endpoints (organization_id, url, description, "
                            "secret_ciphertext, created_at) "
                            "VALUES (:o, :u, '', 'x', CURRENT_TIMESTAMP)"
                        ),
                        {"o": org, "u": f"https://{hook}.test/"},
                    )
        finally:
            await db.close()

    in_thread(asyncio.run, seed())
    in_thread(migrate.upgrade, url)

    async def remaining() -> list[tuple[int, int, str]]:
        db = Database.open(url)
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT id, organization_id, url FROM webhook_endpoints ORDER BY id")
                )
                return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]
        finally:
            await db.close()

    result: list[tuple[int, int, str]] = in_thread(asyncio.run, remaining())
    return result


# The oldest of each (organization, URL) stays; the later copies go.
EXPECTED_AFTER_DEDUP = [
    (1, 1, "https://a.test/"),
    (3, 1, "https://b.test/"),
    (4, 2, "https://a.test/"),
]


def test_0016_keeps_the_oldest_of_duplicate_webhook_urls_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/dups.db"
    assert _upgrade_with_duplicate_webhooks(url) == EXPECTED_AFTER_DEDUP


@pytest.mark.postgres
def test_0016_keeps_the_oldest_of_duplicate_webhook_urls_postgresql() -> None:
    with postgres_database("ebc_dups", migrated=False) as url:
        assert _upgrade_with_duplicate_webhooks(url) == EXPECTED_AFTER_DEDUP
