"""The durable outbound queue: messages for other operators, and each recipient's fate.

Messages enter the queue in the same transaction as local delivery
(`MessageStore.store_batch`). Relay workers, on one node or several, `claim` due
recipients: the claim moves their next attempt past a lease in one short transaction, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL so that no two workers take the same recipient and
no message is sent twice; a worker that dies simply lets the lease run out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from storage import crypto
from storage.db import Database
from storage.keystore import KeyStore
from storage.messages import NotFound
from storage.models import Mailbox, OutboundMessage, OutboundRecipient, utcnow


@dataclass(frozen=True)
class Claim:
    """Recipients of one message at one domain, taken by one worker for one attempt."""

    message_id: uuid.UUID
    mail_from: str
    domain: str
    recipients: tuple[str, ...]
    attempts: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class QueueEntry:
    message_id: uuid.UUID
    mail_from: str
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_reply: str
    created_at: datetime
    expires_at: datetime
    size: int


class OutboundQueue:
    def __init__(self, database: Database, keys: KeyStore) -> None:
        self.database = database
        self.keys = keys

    async def claim(
        self, *, limit: int, lease: timedelta, now: datetime | None = None
    ) -> list[Claim]:
        """Take due recipients (grouped by message and domain) for one delivery attempt."""
        now = now or utcnow()
        query = (
            select(OutboundRecipient)
            .where(OutboundRecipient.state == "queued", OutboundRecipient.next_attempt_at <= now)
            .order_by(OutboundRecipient.next_attempt_at)
            .limit(limit)
        )
        if not self.database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self.database.write() as session, session.begin():
            rows = list(await session.scalars(query))
            if not rows:
                return []
            for row in rows:
                row.next_attempt_at = now + lease
                row.attempts += 1
            messages = {
                m.id: m
                for m in await session.scalars(
                    select(OutboundMessage).where(
                        OutboundMessage.id.in_({row.message_id for row in rows})
                    )
                )
            }
        grouped: dict[tuple[uuid.UUID, str], list[OutboundRecipient]] = {}
        for row in rows:
            grouped.setdefault((row.message_id, row.domain), []).append(row)
        return [
            Claim(
                message_id=message_id,
                mail_from=messages[message_id].mail_from,
                domain=domain,
                recipients=tuple(r.recipient for r in group),
                attempts=max(r.attempts for r in group),
                created_at=messages[message_id].created_at,
                expires_at=messages[message_id].expires_at,
            )
            for (message_id, domain), group in grouped.items()
        ]

    async def next_due(self) -> datetime | None:
        """When the earliest queued recipient is due (None: nothing is queued)."""
        async with self.database.read() as session:
            return await session.scalar(
                select(func.min(OutboundRecipient.next_attempt_at)).where(
                    OutboundRecipient.state == "queued"
                )
            )

    async def read(self, message_id: uuid.UUID) -> bytes:
        """The queued message, decrypted for sending."""
        async with self.database.read() as session:
            message = await session.get(OutboundMessage, message_id)
            if message is None:
                raise NotFound(f"no queued message {message_id}")
            mailbox = await session.get(Mailbox, message.mailbox_id)
            assert mailbox is not None
        key = await self.keys.get(mailbox.key_id)
        header, body = crypto.open_message(
            key, mailbox.id, message.id, message.wrapped_key, message.header_ct, message.body_ct
        )
        return header + (body or b"")

    async def settle(
        self,
        message_id: uuid.UUID,
        recipients: Sequence[str],
        *,
        state: str,
        reply: str,
        retry_at: datetime | None = None,
    ) -> None:
        """Record an attempt's outcome: delivered, failed, or queued again at `retry_at`.

        When no recipient of a message is left queued, the message itself (its ciphertext
        and data key) is deleted.
        """
        if state not in ("delivered", "failed", "queued"):
            raise ValueError(f"unknown queue state {state!r}")
        if state == "queued" and retry_at is None:
            raise ValueError("a retry needs a time")
        now = utcnow()
        values: dict[str, object] = {"state": state, "last_reply": reply[:1024], "updated_at": now}
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        async with self.database.write() as session, session.begin():
            await session.execute(
                update(OutboundRecipient)
                .where(
                    OutboundRecipient.message_id == message_id,
                    OutboundRecipient.recipient.in_(list(recipients)),
                )
                .values(**values)
            )
            waiting = await session.scalar(
                select(func.count()).where(
                    OutboundRecipient.message_id == message_id,
                    OutboundRecipient.state == "queued",
                )
            )
            if not waiting:
                await session.execute(
                    delete(OutboundRecipient).where(OutboundRecipient.message_id == message_id)
                )
                await session.execute(
                    delete(OutboundMessage).where(OutboundMessage.id == message_id)
                )

    async def entries(self, *, state: str | None = None) -> list[QueueEntry]:
        query = select(OutboundRecipient, OutboundMessage).join(
            OutboundMessage, OutboundMessage.id == OutboundRecipient.message_id
        )
        if state is not None:
            query = query.where(OutboundRecipient.state == state)
        async with self.database.read() as session:
            rows = (await session.execute(query.order_by(OutboundMessage.created_at))).all()
        return [
            QueueEntry(
                message_id=message.id,
                mail_from=message.mail_from,
                recipient=recipient.recipient,
                state=recipient.state,
                attempts=recipient.attempts,
                next_attempt_at=recipient.next_attempt_at,
                last_reply=recipient.last_reply,
                created_at=message.created_at,
                expires_at=message.expires_at,
                size=message.size,
            )
            for recipient, message in rows
        ]

    async def retry_now(self, message_id: uuid.UUID | None = None) -> int:
        """Make queued recipients (of one message, or all) due at once."""
        query = update(OutboundRecipient).where(OutboundRecipient.state == "queued")
        if message_id is not None:
            query = query.where(OutboundRecipient.message_id == message_id)
        async with self.database.write() as session, session.begin():
            result = await session.execute(query.values(next_attempt_at=utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete(self, message_id: uuid.UUID) -> None:
        """Drop a queued message without sending it (and without a DSN)."""
        async with self.database.write() as session, session.begin():
            result = await session.execute(
                delete(OutboundMessage).where(OutboundMessage.id == message_id)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no queued message {message_id}")
            await session.execute(
                delete(OutboundRecipient).where(OutboundRecipient.message_id == message_id)
            )
