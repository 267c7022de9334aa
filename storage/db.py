"""Engines and sessions for SQLite (embedded, one machine) and PostgreSQL (several nodes).

SQLite runs in WAL mode with `synchronous=FULL`: in WAL mode only FULL syncs the log on
every commit, so a commit that returned is on disk (https://sqlite.org/pragma.html#pragma_synchronous).
Writers take the lock at `BEGIN IMMEDIATE`, so two writers never deadlock while upgrading a
read lock; readers use plain `BEGIN` and run beside the writer, as WAL allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_engine(url: str, *, echo: bool, immediate: bool) -> AsyncEngine:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("SQLite needs a file: in-memory databases lose messages")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None hands transaction control to the events below (pysqlite's own
    # implicit BEGIN is unreliable), as SQLAlchemy's SQLite dialect documentation advises.
    engine = create_async_engine(url, echo=echo, connect_args={"isolation_level": None})
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


@dataclass(frozen=True)
class Database:
    """One database: a writer and a reader session factory over one or two engines."""

    url: str
    writer_engine: AsyncEngine
    reader_engine: AsyncEngine
    write: async_sessionmaker[AsyncSession]
    read: async_sessionmaker[AsyncSession]

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.reader_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def dispose(self) -> None:
        await self.writer_engine.dispose()
        if self.reader_engine is not self.writer_engine:
            await self.reader_engine.dispose()


def open_database(url: str, *, pool_size: int = 10, echo: bool = False) -> Database:
    """Engines configured for durability on either backend."""
    if is_sqlite(url):
        writer = _sqlite_engine(url, echo=echo, immediate=True)
        reader = _sqlite_engine(url, echo=echo, immediate=False)
    else:
        # No pre-ping: it costs three round trips per checkout on asyncpg; a connection
        # that died with its server fails one statement (the client retries) and is
        # replaced, and recycling bounds how long any connection lives.
        writer = reader = create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800
        )
    return Database(
        url=url,
        writer_engine=writer,
        reader_engine=reader,
        write=async_sessionmaker(writer, expire_on_commit=False),
        read=async_sessionmaker(reader, expire_on_commit=False),
    )
