"""`alembic upgrade head` yields exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ebay_connector.models import Base
from ebay_connector.store import Store
from tests.conftest import Database

pytestmark = pytest.mark.migration


async def test_upgrade_head_matches_the_models(database: Database) -> None:
    store = Store.open(database.url, schema=database.schema)
    try:
        async with store.engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, Base.metadata))

            differences = await conn.run_sync(diff)
    finally:
        await store.close()
    assert differences == []


async def test_upgrade_is_idempotent(database: Database) -> None:
    from ebay_connector import migrate
    from tests.conftest import in_thread

    in_thread(migrate.upgrade, database.url, schema=database.schema)  # already at head: no-op
