"""Functional logs: who did what, when, with a summary of the request and its result.

MISSION "Storage and retention": functional logs (who, when, what action, request,
response) are kept six months, and never hold content. Callers pass a summary ("3
messages received before 2016-05-01"), not a message, a subject or a body; long values
are cut. Unlike the audit trail (`storage.audit`), these records are not chained: they
are purged in batches once they are older than the retention period.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import FunctionalLog as FunctionalLogRow
from storage.models import utcnow

REQUEST_MAX = 2048
RESULT_MAX = 512
TARGET_MAX = 512
PURGE_BATCH = 5000


def node_name() -> str:
    """This process, as it appears in logs written by several nodes: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    request: str
    result: str
    node: str

    @classmethod
    def of(cls, row: FunctionalLogRow) -> LogEntry:
        return cls(
            row.id, row.at, row.actor, row.action, row.target, row.request, row.result, row.node
        )


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    request: str = "",
    result: str = "ok",
    at: datetime | None = None,
) -> None:
    """Add one entry inside the caller's transaction (it commits with the action)."""
    session.add(
        FunctionalLogRow(
            at=at or utcnow(),
            actor=_cut(actor, 320),
            action=_cut(action, 64),
            target=_cut(target, TARGET_MAX),
            request=_cut(request, REQUEST_MAX),
            result=_cut(result, RESULT_MAX),
            node=node_name(),
        )
    )


async def record_many(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entries: Sequence[tuple[str, str, str]],
    at: datetime | None = None,
) -> None:
    """Several entries of one action, each (target, request, result), in one statement."""
    if not entries:
        return
    when, node = at or utcnow(), node_name()
    await session.execute(
        insert(FunctionalLogRow),
        [
            {
                "at": when,
                "actor": _cut(actor, 320),
                "action": _cut(action, 64),
                "target": _cut(target, TARGET_MAX),
                "request": _cut(request, REQUEST_MAX),
                "result": _cut(result, RESULT_MAX),
                "node": node,
            }
            for target, request, result in entries
        ],
    )


class FunctionalLogStore:
    """The functional log of one message-store database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        request: str = "",
        result: str = "ok",
        at: datetime | None = None,
    ) -> None:
        """Add one entry in a transaction of its own."""
        async with self.database.write() as session, session.begin():
            await record(
                session,
                actor=actor,
                action=action,
                target=target,
                request=request,
                result=result,
                at=at,
            )

    async def entries(
        self, *, action: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[LogEntry]:
        """The most recent entries, oldest first."""
        query = select(FunctionalLogRow)
        if action is not None:
            query = query.where(FunctionalLogRow.action == action)
        if target is not None:
            query = query.where(FunctionalLogRow.target == target)
        async with self.database.read() as session:
            rows = await session.scalars(query.order_by(FunctionalLogRow.id.desc()).limit(limit))
            return [LogEntry.of(row) for row in rows][::-1]

    async def count_older_than(self, older_than: datetime) -> int:
        async with self.database.read() as session:
            count = await session.scalar(
                select(func.count()).where(FunctionalLogRow.at < older_than)
            )
            return int(count or 0)

    async def purge(
        self,
        older_than: datetime,
        *,
        batch_size: int = PURGE_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Delete entries written before `older_than`, a batch per short transaction (so
        that writers, on SQLite especially, never wait long). Returns how many went."""
        purged = 0
        while True:
            async with self.database.write() as session, session.begin():
                batch = (
                    select(FunctionalLogRow.id)
                    .where(FunctionalLogRow.at < older_than)
                    .order_by(FunctionalLogRow.at)
                    .limit(batch_size)
                    .scalar_subquery()
                )
                result = await session.execute(
                    delete(FunctionalLogRow)
                    .where(FunctionalLogRow.id.in_(batch))
                    .execution_options(synchronize_session=False)
                )
            done = int(getattr(result, "rowcount", 0) or 0)
            purged += done
            if on_batch is not None and done:
                on_batch(done)
            if done < batch_size:
                return purged
