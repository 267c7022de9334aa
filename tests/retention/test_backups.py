"""What a copy of the message database (a backup, a dump) taken before a deletion can
still give back afterwards. The key store is a separate database, not part of that copy.

- Whole-mailbox deletion (closure) deletes the mailbox key first: every message of the
  copy is then unreadable.
- A ten-year purge and a user's expunge delete single messages. Each message's data key
  lives in the key store (`message_keys`), not in the message row, and goes with the
  message: the copy still holds the ciphertext, but nothing that opens it, while the
  mailbox key lives on for the mailbox's other messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle
from retention.policy import RetentionPolicy, add_months
from storage.crypto import DecryptionError
from storage.db import Database, open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import MessageStore
from storage.models import Message
from storage.notify import ChangeHub
from tests.databases import DatabasePair
from tests.retention.conftest import DOMAIN, T0, deliver
from tests.storage.test_encryption_at_rest import _copy_database, _drop_copy

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
POLICY = RetentionPolicy(inactivity_kinds=frozenset())


@dataclass
class Live:
    store: MessageStore
    keystore: KeyStore
    database: Database


@pytest.fixture
async def live(databases: DatabasePair, master_key_file: Path) -> AsyncIterator[Live]:
    """A store of our own (the `store` fixture listens on PostgreSQL, which would stop
    the database from being copied)."""
    keys_db = open_database(databases.keystore_url)
    keystore = KeyStore(keys_db, MasterKeySource(master_key_file), cache_seconds=0)
    database = open_database(databases.messages_url)
    try:
        yield Live(MessageStore(database, keystore, ChangeHub(database)), keystore, database)
    finally:
        await database.dispose()
        await keys_db.dispose()


@pytest.fixture
async def copy_of(
    databases: DatabasePair, tmp_path: Path, live: Live
) -> AsyncIterator[list[MessageStore]]:
    """The copies `take_copy` makes during a test, dropped after it."""
    copies: list[MessageStore] = []
    yield copies
    for backup in copies:
        await backup.database.dispose()
        await _drop_copy(backup.database.url, databases.backend)


async def take_copy(
    live: Live, databases: DatabasePair, tmp_path: Path, copies: list[MessageStore]
) -> MessageStore:
    await live.database.dispose()  # PostgreSQL copies a database only while nobody is connected
    url = await _copy_database(databases.messages_url, databases.backend, tmp_path)
    database = open_database(url)
    backup = MessageStore(database, live.keystore, ChangeHub(database))
    copies.append(backup)
    return backup


async def test_a_deleted_mailbox_cannot_be_read_from_a_copy_taken_before(
    live: Live, databases: DatabasePair, tmp_path: Path, copy_of: list[MessageStore]
) -> None:
    alice = await live.store.create_mailbox(f"alice@{DOMAIN}", "PER")
    bob = await live.store.create_mailbox(f"bob@{DOMAIN}", "PER")
    for_alice = await deliver(live.store, alice, "for alice", T0)
    for_bob = await deliver(live.store, bob, "for bob", T0)
    await Lifecycle(live.database, POLICY).close(alice.address, "deletion", actor="t", now=T0)
    backup = await take_copy(live, databases, tmp_path, copy_of)
    assert b"for alice" in await backup.read(for_alice.folder_id, for_alice.uid)

    report = await RetentionJobs(live.store, POLICY, domain=DOMAIN).run(add_months(T0, 3))

    assert report.deleted == [alice.address]
    with pytest.raises(DecryptionError):
        await backup.read(for_alice.folder_id, for_alice.uid)
    async with backup.database.read() as session:  # the rows are in the copy…
        assert await session.get(Message, for_alice.message_id) is not None
    with pytest.raises(DecryptionError):  # …but no key opens them any more
        await live.keystore.get(alice.key_id)
    assert await live.keystore.data_keys([for_alice.message_id]) == {}
    assert b"for bob" in await backup.read(for_bob.folder_id, for_bob.uid)


async def test_a_purged_message_cannot_be_read_from_a_copy_taken_before(
    live: Live, databases: DatabasePair, tmp_path: Path, copy_of: list[MessageStore]
) -> None:
    alice = await live.store.create_mailbox(f"alice@{DOMAIN}", "PER")
    old = await deliver(live.store, alice, "ten years old", T0)
    recent = await deliver(live.store, alice, "still kept", add_months(T0, 60))
    backup = await take_copy(live, databases, tmp_path, copy_of)
    assert b"ten years old" in await backup.read(old.folder_id, old.uid)
    jobs = RetentionJobs(live.store, POLICY, domain=DOMAIN)

    assert (await jobs.run(add_months(T0, 120).replace(day=16))).messages == 1

    # The copy still holds the row, but the row holds no key: the data key was in the
    # key store, and is gone from it while the mailbox key lives on.
    async with backup.database.read() as session:
        row = await session.scalar(select(Message).where(Message.id == old.message_id))
    assert row is not None and row.wrapped_key is None
    assert await live.keystore.data_keys([old.message_id]) == {}
    await live.keystore.get(alice.key_id)
    with pytest.raises(DecryptionError):
        await backup.read(old.folder_id, old.uid)
    assert b"still kept" in await backup.read(recent.folder_id, recent.uid)


async def test_an_expunged_message_cannot_be_read_from_a_copy_taken_before(
    live: Live, databases: DatabasePair, tmp_path: Path, copy_of: list[MessageStore]
) -> None:
    alice = await live.store.create_mailbox(f"alice@{DOMAIN}", "PER")
    gone = await deliver(live.store, alice, "to be expunged", T0)
    kept = await deliver(live.store, alice, "kept", T0)
    await live.store.store_flags(gone.folder_id, [gone.uid], "add", ["\\Deleted"])
    backup = await take_copy(live, databases, tmp_path, copy_of)

    assert await live.store.expunge(gone.folder_id) == [gone.uid]

    assert await live.keystore.data_keys([gone.message_id]) == {}
    with pytest.raises(DecryptionError):
        await backup.read(gone.folder_id, gone.uid)
    assert b"kept" in await backup.read(kept.folder_id, kept.uid)


async def test_a_message_copied_within_its_mailbox_keeps_its_key_until_its_last_entry_goes(
    live: Live, databases: DatabasePair, tmp_path: Path, copy_of: list[MessageStore]
) -> None:
    alice = await live.store.create_mailbox(f"alice@{DOMAIN}", "PER")
    message = await deliver(live.store, alice, "filed twice", T0)
    archive = await live.store.folder(alice.id, "Archive")
    ((_source, archived_uid),) = await live.store.copy(message.folder_id, [message.uid], archive.id)
    await live.store.store_flags(message.folder_id, [message.uid], "add", ["\\Deleted"])
    await live.store.expunge(message.folder_id)
    # One ciphertext, one key, shared by both folders: the Archive entry still reads.
    assert list(await live.keystore.data_keys([message.message_id])) == [message.message_id]
    assert b"filed twice" in await live.store.read(archive.id, archived_uid)
    backup = await take_copy(live, databases, tmp_path, copy_of)

    await live.store.store_flags(archive.id, [archived_uid], "add", ["\\Deleted"])
    await live.store.expunge(archive.id)

    assert await live.keystore.data_keys([message.message_id]) == {}
    with pytest.raises(DecryptionError):
        await backup.read(archive.id, archived_uid)
