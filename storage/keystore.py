"""The key store: mailbox keys wrapped by the master key, and message data keys wrapped
by their mailbox key, in a database of their own.

It is kept apart from the message store so that a copy of the message database (a backup,
a dump) holds no key: once a mailbox key is deleted here, every copy of that mailbox's
messages is unreadable, and once a message's data key is deleted here, every copy of that
message is (crypto-shredding).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, insert, select

from storage.crypto import (
    ENV_MASTER_KEY,
    DecryptionError,
    MasterKeyError,
    MasterKeyring,
    kek_id_of,
    new_key,
)
from storage.db import Database
from storage.models import MailboxKey, MessageKey, utcnow

REWRAP_BATCH = 500
# Rows per statement when data keys are read, written or deleted (bound parameters).
DATA_KEY_BATCH = 500


class MasterKeySource:
    """Where the master key comes from: the environment, or a key file re-read on change."""

    def __init__(self, path: Path | None, environ_value: str | None = None) -> None:
        self.path = path
        self._environ_value = environ_value
        self._ring: MasterKeyring | None = None
        self._mtime_ns = -1

    @classmethod
    def from_settings(cls, key_file: Path) -> MasterKeySource:
        value = os.environ.get(ENV_MASTER_KEY)
        return cls(None if value else key_file, value)

    @property
    def rotatable(self) -> bool:
        return self.path is not None

    def ring(self, *, refresh: bool = False) -> MasterKeyring:
        if self._environ_value is not None:
            if self._ring is None:
                self._ring = MasterKeyring.from_environment_value(self._environ_value)
            return self._ring
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise MasterKeyError(f"master key file {self.path} does not exist") from exc
        if self._ring is None or (refresh and mtime != self._mtime_ns):
            self._ring = MasterKeyring.load(self.path)
            self._mtime_ns = mtime
        return self._ring

    def save(self, ring: MasterKeyring) -> None:
        if self.path is None:
            raise MasterKeyError(
                f"the master key comes from {ENV_MASTER_KEY}: rotate it where it is kept"
            )
        ring.save(self.path)
        self._ring = ring
        self._mtime_ns = self.path.stat().st_mtime_ns


@dataclass(frozen=True)
class RotationReport:
    new_kek_id: str
    rewrapped: int
    retired: tuple[str, ...]


class KeyStore:
    """Creates, reads (with a short in-memory cache), deletes and rewraps mailbox keys."""

    def __init__(
        self, database: Database, master: MasterKeySource, *, cache_seconds: float = 60.0
    ) -> None:
        self.database = database
        self.master = master
        self.cache_seconds = cache_seconds
        self._cache: dict[uuid.UUID, tuple[bytes, float]] = {}

    async def create(self) -> uuid.UUID:
        """A new mailbox key, durably stored before its id is returned."""
        key_id = uuid.uuid4()
        kek_id, wrapped = self.master.ring(refresh=True).wrap_mailbox_key(key_id, new_key())
        async with self.database.write() as session, session.begin():
            session.add(MailboxKey(key_id=key_id, kek_id=kek_id, wrapped_key=wrapped))
        return key_id

    async def get(self, key_id: uuid.UUID) -> bytes:
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.database.read() as session:
            row = await session.get(MailboxKey, key_id)
        if row is None:
            self._cache.pop(key_id, None)
            raise DecryptionError("this mailbox's key has been deleted (shredded)")
        ring = self.master.ring()
        if row.kek_id not in ring.keys:
            ring = self.master.ring(refresh=True)
        key = ring.unwrap_mailbox_key(key_id, row.kek_id, row.wrapped_key)
        if self.cache_seconds > 0:
            self._cache[key_id] = (key, now + self.cache_seconds)
        return key

    async def delete(self, key_id: uuid.UUID) -> bool:
        """Shred: the key is gone from the store and from this process's cache."""
        self._cache.pop(key_id, None)
        async with self.database.write() as session, session.begin():
            result = await session.execute(delete(MailboxKey).where(MailboxKey.key_id == key_id))
        return bool(getattr(result, "rowcount", 0))

    # -- message data keys ----------------------------------------------------------------

    async def put_data_keys(self, keys: Sequence[tuple[int, uuid.UUID, bytes]]) -> None:
        """Store wrapped data keys (mailbox id, message id, wrapped key), durably.

        Called before the message store commits the messages: a key whose message then
        never commits is an orphan, harmless (it opens nothing) and swept later.
        """
        if not keys:
            return
        now = utcnow()
        async with self.database.write() as session, session.begin():
            for start in range(0, len(keys), DATA_KEY_BATCH):
                await session.execute(
                    insert(MessageKey),
                    [
                        {
                            "message_id": message_id,
                            "mailbox_id": mailbox_id,
                            "wrapped_key": wrapped,
                            "created_at": now,
                        }
                        for mailbox_id, message_id, wrapped in keys[start : start + DATA_KEY_BATCH]
                    ],
                )

    async def data_keys(self, message_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        """Wrapped data keys by message id; a message without one has been shredded."""
        wanted = list(dict.fromkeys(message_ids))
        found: dict[uuid.UUID, bytes] = {}
        async with self.database.read() as session:
            for start in range(0, len(wanted), DATA_KEY_BATCH):
                rows = await session.execute(
                    select(MessageKey.message_id, MessageKey.wrapped_key).where(
                        MessageKey.message_id.in_(wanted[start : start + DATA_KEY_BATCH])
                    )
                )
                found.update((message_id, wrapped) for message_id, wrapped in rows.all())
        return found

    async def delete_data_keys(self, message_ids: Iterable[uuid.UUID]) -> int:
        """Shred messages: their data keys are gone, in every copy of the message store."""
        doomed = list(dict.fromkeys(message_ids))
        deleted = 0
        for start in range(0, len(doomed), DATA_KEY_BATCH):
            async with self.database.write() as session, session.begin():
                result = await session.execute(
                    delete(MessageKey)
                    .where(MessageKey.message_id.in_(doomed[start : start + DATA_KEY_BATCH]))
                    .execution_options(synchronize_session=False)
                )
            deleted += int(getattr(result, "rowcount", 0) or 0)
        return deleted

    async def delete_mailbox_data_keys(self, mailbox_id: int) -> int:
        """Every data key of one mailbox, in batches (its mailbox key is deleted first)."""
        deleted = 0
        while True:
            async with self.database.write() as session, session.begin():
                ids = list(
                    await session.scalars(
                        select(MessageKey.message_id)
                        .where(MessageKey.mailbox_id == mailbox_id)
                        .limit(DATA_KEY_BATCH)
                    )
                )
                if ids:
                    await session.execute(
                        delete(MessageKey)
                        .where(MessageKey.message_id.in_(ids))
                        .execution_options(synchronize_session=False)
                    )
            deleted += len(ids)
            if len(ids) < DATA_KEY_BATCH:
                return deleted

    async def data_key_page(
        self, after: uuid.UUID | None, older_than: datetime, limit: int = DATA_KEY_BATCH
    ) -> list[uuid.UUID]:
        """Message ids of data keys written before `older_than`, in id order after `after`
        (for the sweep of orphan keys)."""
        query = select(MessageKey.message_id).where(MessageKey.created_at < older_than)
        if after is not None:
            query = query.where(MessageKey.message_id > after)
        async with self.database.read() as session:
            return list(await session.scalars(query.order_by(MessageKey.message_id).limit(limit)))

    async def count_by_kek(self) -> dict[str, int]:
        async with self.database.read() as session:
            rows = await session.execute(
                select(MailboxKey.kek_id, func.count()).group_by(MailboxKey.kek_id)
            )
            return {kek_id: count for kek_id, count in rows.all()}

    async def rotate_master(self) -> RotationReport:
        """Rewrap every mailbox key under a new master key; message bodies are untouched.

        Safe to interrupt: the key file holds the old and the new key until no mailbox key
        needs the old one, and running it again resumes the interrupted rotation.
        """
        ring = self.master.ring(refresh=True)
        if len(ring.keys) == 1:
            fresh = new_key()
            # Old and new key together, the new one active, on disk before anything uses it.
            ring = MasterKeyring(kek_id_of(fresh), {**ring.keys, kek_id_of(fresh): fresh})
            self.master.save(ring)
        # With several keys in the file, a rotation was interrupted: finish it.
        target = ring.active_id
        rewrapped = await self._rewrap_all(ring)
        still_old = sum(n for kek, n in (await self.count_by_kek()).items() if kek != target)
        retired: tuple[str, ...] = ()
        if still_old == 0:
            retired = tuple(k for k in ring.keys if k != target)
            self.master.save(MasterKeyring(active_id=target, keys={target: ring.keys[target]}))
        self._cache.clear()
        return RotationReport(new_kek_id=target, rewrapped=rewrapped, retired=retired)

    async def _rewrap_all(self, ring: MasterKeyring) -> int:
        done = 0
        while True:
            async with self.database.write() as session, session.begin():
                rows = (
                    await session.scalars(
                        select(MailboxKey)
                        .where(MailboxKey.kek_id != ring.active_id)
                        .limit(REWRAP_BATCH)
                    )
                ).all()
                for row in rows:
                    key = ring.unwrap_mailbox_key(row.key_id, row.kek_id, row.wrapped_key)
                    row.kek_id, row.wrapped_key = ring.wrap_mailbox_key(row.key_id, key)
                    row.rewrapped_at = utcnow()
            done += len(rows)
            if len(rows) < REWRAP_BATCH:
                return done
