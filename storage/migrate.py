"""Alembic migrations for the message store and, separately, the key store.

Each database has its own migration history (`storage/migrations/messages` and
`storage/migrations/keystore`): the key store is a different database on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from storage.db import open_database

MIGRATIONS = Path(__file__).parent / "migrations"
Target = Literal["messages", "keystore"]


def alembic_config(target: Target, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS / target))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(target: Target, url: str, revision: str = "head") -> None:
    """Bring one database to `revision` (synchronous: Alembic drives its own loop)."""
    command.upgrade(alembic_config(target, url), revision)


def run_migrations(context: EnvironmentContext, metadata: MetaData) -> None:
    """The body of every env.py: run online migrations over our async engine."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        database = open_database(url)
        try:
            async with database.writer_engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await database.dispose()

    asyncio.run(run())


def head_revision(target: Target) -> str | None:
    return ScriptDirectory.from_config(alembic_config(target, "sqlite://")).get_current_head()


async def current_revision(url: str) -> str | None:
    """The revision a database is at (None when it was never migrated)."""
    database = open_database(url)
    try:
        async with database.reader_engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await database.dispose()


async def check_current(target: Target, url: str) -> None:
    """Refuse to run over a database whose schema is not the one this code expects."""
    current, head = await current_revision(url), head_revision(target)
    if current != head:
        raise SchemaError(
            f"the {target} database is at revision {current or 'none'}, this version needs "
            f"{head}: run `hygie db upgrade` first"
        )


class SchemaError(Exception):
    """The database schema does not match this version of Hygie."""
