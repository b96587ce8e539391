"""Schema migrations (Alembic), callable from the CLI, the server and the tests."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ebay_connector.db import database
from ebay_connector.errors import SchemaMissing

SCRIPT_LOCATION = "ebay_connector.db:migrations"


def alembic_config(database_url: str, *, schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    return config


def upgrade(database_url: str, *, schema: str | None = None, revision: str = "head") -> None:
    """Bring the database to ``revision``. Blocking: from async code use :func:`upgrade_async`."""
    try:
        command.upgrade(alembic_config(database_url, schema=schema), revision)
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise database.translate(exc) from exc


async def upgrade_async(database_url: str, *, schema: str | None = None) -> None:
    # env.py runs its own event loop; give it a thread of its own.
    await asyncio.to_thread(upgrade, database_url, schema=schema)


def head() -> str:
    """The revision this code's models are at."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None  # the package ships its migrations
    return revision


async def current(db: database.Database) -> str | None:
    """The revision the database is at (None: no schema), read without changing anything."""
    try:
        async with db.read() as conn:
            result = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            row = result.first()
    except SchemaMissing:
        return None
    return None if row is None else str(row[0])
