"""The key store: mailbox keys wrapped by the master key, in a database of their own.

It is kept apart from the message store so that a copy of the message database (a backup,
a dump) holds no key: once a mailbox key is deleted here, every copy of that mailbox's
messages is unreadable (crypto-shredding).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select

from storage.crypto import (
    ENV_MASTER_KEY,
    DecryptionError,
    MasterKeyError,
    MasterKeyring,
    kek_id_of,
    new_key,
)
from storage.db import Database
from storage.models import MailboxKey, utcnow

REWRAP_BATCH = 500


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
