"""Fresh databases for each test, on SQLite and, when configured, on PostgreSQL.

`HYGIE_TEST_DATABASE_URL` names a PostgreSQL server and a database to connect to for
administration (e.g. postgresql://postgres@127.0.0.1:5432/test). Each test run migrates two
template databases once and makes copies of them (CREATE DATABASE … TEMPLATE); a test
gets a pair no other test is using, emptied (TRUNCATE … RESTART IDENTITY) after the test
that used it before, and every database the run made is dropped when it ends. Emptying
is much faster than dropping and creating databases for every test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from storage.migrate import upgrade

ENV = "HYGIE_TEST_DATABASE_URL"


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get(ENV) else ["sqlite"]


def _admin_dsn() -> str:
    url = make_url(os.environ[ENV]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _database_url(name: str) -> str:
    url = make_url(os.environ[ENV]).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class DatabasePair:
    backend: str
    messages_url: str
    keystore_url: str


@dataclass
class Provisioner:
    """Hands out fresh, migrated database pairs; cleans up what it made."""

    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    _templates: dict[str, DatabasePair] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)
    _idle: list[DatabasePair] = field(default_factory=list)

    async def fresh(self, backend: str) -> DatabasePair:
        if backend == "sqlite":
            return await self._fresh_sqlite()
        return await self._fresh_postgresql()

    async def _fresh_sqlite(self) -> DatabasePair:
        template = self.workdir / "template"
        if not template.exists():
            template.mkdir()
            for target, name in (("messages", "hygie.db"), ("keystore", "keystore.db")):
                await asyncio.to_thread(upgrade, target, f"sqlite+aiosqlite:///{template / name}")
        target = self.workdir / uuid.uuid4().hex[:12]
        shutil.copytree(template, target)
        return DatabasePair(
            "sqlite",
            f"sqlite+aiosqlite:///{target / 'hygie.db'}",
            f"sqlite+aiosqlite:///{target / 'keystore.db'}",
        )

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(_admin_dsn())
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def release(self, pair: DatabasePair) -> None:
        """Empty a PostgreSQL pair for the next test (SQLite files are simply left)."""
        if pair.backend != "postgresql":
            return
        for url in (pair.messages_url, pair.keystore_url):
            dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            connection = await asyncpg.connect(dsn)
            try:
                # Connections the test left behind (a killed server) would hold locks.
                await connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                tables = await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
                if tables:
                    names = ", ".join(f'"{row["tablename"]}"' for row in tables)
                    await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            finally:
                await connection.close()
        self._idle.append(pair)

    async def _fresh_postgresql(self) -> DatabasePair:
        if self._idle:
            return self._idle.pop()
        if "postgresql" not in self._templates:
            names = (f"hygie_{self.run_id}_tm", f"hygie_{self.run_id}_tk")
            await self._admin(*(f'CREATE DATABASE "{n}"' for n in names))
            self._created.extend(names)
            await asyncio.to_thread(upgrade, "messages", _database_url(names[0]))
            await asyncio.to_thread(upgrade, "keystore", _database_url(names[1]))
            self._templates["postgresql"] = DatabasePair(
                "postgresql", _database_url(names[0]), _database_url(names[1])
            )
        template = self._templates["postgresql"]
        suffix = uuid.uuid4().hex[:8]
        names = (f"hygie_{self.run_id}_{suffix}_m", f"hygie_{self.run_id}_{suffix}_k")
        await self._admin(
            f'CREATE DATABASE "{names[0]}" TEMPLATE "{make_url(template.messages_url).database}"',
            f'CREATE DATABASE "{names[1]}" TEMPLATE "{make_url(template.keystore_url).database}"',
        )
        self._created.extend(names)
        return DatabasePair("postgresql", _database_url(names[0]), _database_url(names[1]))

    async def cleanup(self) -> None:
        if self._created:
            await self._admin(
                *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in reversed(self._created))
            )
            self._created.clear()
