"""`alembic upgrade head` yields exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ebay_connector.db.database import Database
from ebay_connector.db.models import Base
from tests.conftest import DatabaseTarget

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


async def test_upgrade_is_idempotent(database: DatabaseTarget) -> None:
    from ebay_connector.db import migrate
    from tests.conftest import in_thread

    in_thread(migrate.upgrade, database.url, schema=database.schema)  # already at head: no-op
