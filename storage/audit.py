"""The audit trail: append-only records, each chained to the one before by SHA-256.

A record's hash covers its own fields and the previous record's hash, so changing,
removing or reordering any record breaks every hash after it; `verify` names the first
record that does not fit. Records say who did what to which target, never content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import AuditRecord, utcnow

GENESIS = "0" * 64
# Any constant: PostgreSQL advisory lock serialising appends to the chain.
CHAIN_LOCK = 0x48796769
VERIFY_BATCH = 5000


def _digest(
    previous: str, at: datetime, actor: str, action: str, target: str, details: str, outcome: str
) -> str:
    canonical = json.dumps(
        [previous, at.isoformat(timespec="microseconds"), actor, action, target, details, outcome],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    details: Mapping[str, Any] | None = None,
    outcome: str = "ok",
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record inside the caller's transaction (so both commit, or neither)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    previous = await session.scalar(
        select(AuditRecord.record_hash).order_by(AuditRecord.id.desc()).limit(1)
    )
    when = at or utcnow()
    encoded = json.dumps(dict(details or {}), ensure_ascii=False, sort_keys=True, default=str)
    entry = AuditRecord(
        at=when,
        actor=actor,
        action=action,
        target=target,
        details=encoded,
        outcome=outcome,
        previous_hash=previous or GENESIS,
        record_hash=_digest(previous or GENESIS, when, actor, action, target, encoded, outcome),
    )
    session.add(entry)
    await session.flush()
    return entry


async def append(
    database: Database,
    *,
    actor: str,
    action: str,
    target: str = "",
    details: Mapping[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    """Append one record in a transaction of its own (an access, not part of a change)."""
    async with database.write() as session, session.begin():
        await record(
            session, actor=actor, action=action, target=target, details=details, outcome=outcome
        )


async def records(
    database: Database,
    *,
    after_id: int = 0,
    action: str | None = None,
    target: str | None = None,
    limit: int = 50,
    newest: bool = False,
) -> list[AuditRecord]:
    """A page of the trail in id order: after `after_id`, or the `newest` `limit` ones."""
    statement = select(AuditRecord).where(AuditRecord.id > after_id)
    if action is not None:
        statement = statement.where(AuditRecord.action == action)
    if target is not None:
        statement = statement.where(AuditRecord.target == target)
    order = AuditRecord.id.desc() if newest else AuditRecord.id
    async with database.read() as session:
        rows = list(await session.scalars(statement.order_by(order).limit(limit)))
    return rows[::-1] if newest else rows


@dataclass(frozen=True)
class Verification:
    records: int
    first_bad_id: int | None
    problem: str

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


async def verify(database: Database) -> Verification:
    """Walk the chain in id order and report the first record that breaks it."""
    previous, count, last_id = GENESIS, 0, 0
    while True:
        async with database.read() as session:
            rows = list(
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.id > last_id)
                    .order_by(AuditRecord.id)
                    .limit(VERIFY_BATCH)
                )
            )
        for row in rows:
            if row.previous_hash != previous:
                return Verification(count, row.id, "does not follow the record before it")
            expected = _digest(
                previous, row.at, row.actor, row.action, row.target, row.details, row.outcome
            )
            if expected != row.record_hash:
                return Verification(count, row.id, "was changed after it was written")
            previous, last_id, count = row.record_hash, row.id, count + 1
        if len(rows) < VERIFY_BATCH:
            return Verification(count, None, "")
