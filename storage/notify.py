"""Change notifications: "this mailbox changed" for IMAP IDLE and open webmail pages.

A notification only wakes a subscriber; what changed is read from the store by MODSEQ, so a
lost or coalesced notification never loses a change. On SQLite (one process) changes are
delivered in process after commit. On PostgreSQL they travel through `NOTIFY`, issued in
the writing transaction so that it is sent only if the transaction commits, and every node
(this one included) receives them on a `LISTEN` connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database

log = logging.getLogger(__name__)

CHANNEL = "hygie_changes"
QUEUE_LIMIT = 256


@dataclass(frozen=True)
class Change:
    mailbox_id: int
    folder_id: int
    modseq: int
    kind: str  # append, flags, expunge, folders, shred

    def encode(self) -> str:
        return f"{self.mailbox_id}:{self.folder_id}:{self.modseq}:{self.kind}"

    @classmethod
    def decode(cls, payload: str) -> Change:
        mailbox_id, folder_id, modseq, kind = payload.split(":", 3)
        return cls(int(mailbox_id), int(folder_id), int(modseq), kind)


class Subscription:
    """Changes to one mailbox, as an async iterator; `overflowed` means "resynchronise"."""

    def __init__(self, hub: ChangeHub, mailbox_id: int) -> None:
        self.hub = hub
        self.mailbox_id = mailbox_id
        self.queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, change: Change) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self, within: float | None = None) -> Change | None:
        """The next change, or None when none came `within` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            return None

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self.hub._unsubscribe(self)


class ChangeHub:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._subscribers: dict[int, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def distributed(self) -> bool:
        return not self.database.is_sqlite

    def subscribe(self, mailbox_id: int) -> Subscription:
        subscription = Subscription(self, mailbox_id)
        self._subscribers.setdefault(mailbox_id, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        group = self._subscribers.get(subscription.mailbox_id)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._subscribers[subscription.mailbox_id]

    def _dispatch(self, change: Change) -> None:
        for subscription in tuple(self._subscribers.get(change.mailbox_id, ())):
            subscription.offer(change)

    async def stage(self, session: AsyncSession, changes: Iterable[Change]) -> None:
        """Inside the writing transaction: queue the NOTIFY that commits with it."""
        if not self.distributed:
            return
        for change in changes:
            await session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": change.encode()},
            )

    def committed(self, changes: Iterable[Change]) -> None:
        """After the commit: deliver in process (PostgreSQL delivers through LISTEN)."""
        if self.distributed:
            return
        for change in changes:
            self._dispatch(change)

    async def start(self) -> None:
        if self.distributed and self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="hygie-listen")
            await asyncio.wait_for(self._listening.wait(), timeout=30)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
            self._listening.clear()

    async def _listen_forever(self) -> None:
        import asyncpg  # only PostgreSQL deployments need it

        dsn = make_url(self.database.url).set(drivername="postgresql")
        delay = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                if self._listening.is_set():
                    self._resynchronise_all()  # notifications may have been missed meanwhile
                self._listening.set()
                delay = 0.5
                await lost.wait()
                log.warning("change notification connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("change notifications unavailable (%s); retrying", type(exc).__name__)
            finally:
                if connection is not None and not connection.is_closed():
                    await connection.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _resynchronise_all(self) -> None:
        for group in tuple(self._subscribers.values()):
            for subscription in tuple(group):
                subscription.overflowed = True
                subscription.offer(Change(subscription.mailbox_id, 0, 0, "resync"))

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            change = Change.decode(payload)
        except ValueError:
            log.warning("ignoring a malformed change notification")
            return
        self._dispatch(change)
