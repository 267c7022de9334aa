"""What a copy of the message database (a backup, a dump) taken before a purge can still
give back afterwards. The key store is a separate database, not part of that copy.

- Whole-mailbox deletion (closure) deletes the mailbox key first: every message of the
  copy is then unreadable. That is crypto-shredding, and it holds against any copy.
- A ten-year purge deletes single messages. Each message's data key exists only wrapped
  in the message's own row, so the live database can never read it again; but a copy
  taken before the purge still holds that row, and its wrapped data key opens with the
  mailbox key for as long as the mailbox key exists. A copy is therefore only defeated
  for single messages once it is itself discarded (backups of the message store must be
  kept for less time than the purge granularity matters to you) or once the whole
  mailbox is deleted. Both facts are tested here, exactly as they are.
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
from storage import crypto
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
    assert b"for bob" in await backup.read(for_bob.folder_id, for_bob.uid)


async def test_a_purged_message_stays_in_an_earlier_copy_only_while_its_mailbox_key_exists(
    live: Live, databases: DatabasePair, tmp_path: Path, copy_of: list[MessageStore]
) -> None:
    alice = await live.store.create_mailbox(f"alice@{DOMAIN}", "PER")
    old = await deliver(live.store, alice, "ten years old", T0)
    backup = await take_copy(live, databases, tmp_path, copy_of)
    jobs = RetentionJobs(live.store, POLICY, domain=DOMAIN)
    after_ten_years = add_months(T0, 120).replace(day=16)

    assert (await jobs.run(after_ten_years)).messages == 1

    # The live database no longer holds the row, so neither the message nor its data key.
    async with live.database.read() as session:
        assert await session.get(Message, old.message_id) is None
    # The copy still holds the row with its wrapped data key, and while the mailbox key
    # exists that data key unwraps and the message reads: a single-message purge does
    # not reach into copies taken before it.
    async with backup.database.read() as session:
        row = await session.scalar(select(Message).where(Message.id == old.message_id))
    assert row is not None
    mailbox_key = await live.keystore.get(alice.key_id)
    crypto.unwrap_data_key(mailbox_key, alice.id, old.message_id, row.wrapped_key)
    assert b"ten years old" in await backup.read(old.folder_id, old.uid)

    # Once the mailbox key is gone (the mailbox closed and deleted), the copy's row is
    # ciphertext for good.
    await Lifecycle(live.database, POLICY).close(
        alice.address, "deletion", actor="t", now=after_ten_years
    )
    assert (await jobs.run(add_months(after_ten_years, 3))).deleted == [alice.address]
    with pytest.raises(DecryptionError):
        await live.keystore.get(alice.key_id)
    with pytest.raises(DecryptionError):
        await backup.read(old.folder_id, old.uid)
