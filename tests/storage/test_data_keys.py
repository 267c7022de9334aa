"""Message data keys in the key store: messages stored by earlier versions (key in the
row) keep reading and are moved, and orphan keys are swept."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete, update

from storage.messages import AppendTarget, MessageStore
from storage.models import Message, MessageKey, utcnow

RAW = b"Subject: legacy\r\n\r\nstored by an earlier version\r\n"


async def _as_an_earlier_version_stored_it(store: MessageStore, message_id: uuid.UUID) -> None:
    """Put the data key back in the message row and out of the key store."""
    wrapped = (await store.keys.data_keys([message_id]))[message_id]
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(Message).where(Message.id == message_id).values(wrapped_key=wrapped)
        )
    async with store.keys.database.write() as session, session.begin():
        await session.execute(delete(MessageKey).where(MessageKey.message_id == message_id))


async def test_a_message_with_its_key_in_its_row_reads_and_its_key_moves_to_the_key_store(
    store: MessageStore,
) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (old,) = await store.append(RAW, [AppendTarget(box.id)])
    (new,) = await store.append(b"Subject: new\r\n\r\nnew\r\n", [AppendTarget(box.id)])
    await _as_an_earlier_version_stored_it(store, old.message_id)
    assert await store.read(old.folder_id, old.uid) == RAW

    assert await store.move_data_keys() == 1
    assert await store.move_data_keys() == 0  # nothing left: running it again is harmless

    async with store.database.read() as session:
        row = await session.get(Message, old.message_id)
    assert row is not None and row.wrapped_key is None
    assert set(await store.keys.data_keys([old.message_id, new.message_id])) == {
        old.message_id,
        new.message_id,
    }
    assert await store.read(old.folder_id, old.uid) == RAW


async def test_a_legacy_message_copied_to_another_mailbox_is_sealed_with_a_key_store_key(
    store: MessageStore,
) -> None:
    alice = await store.create_mailbox("alice@hygie.test", "PER")
    team = await store.create_mailbox("team@hygie.test", "ORG")
    (old,) = await store.append(RAW, [AppendTarget(alice.id)])
    await _as_an_earlier_version_stored_it(store, old.message_id)
    inbox = await store.folder(team.id, "INBOX")

    ((_source, uid),) = await store.copy(old.folder_id, [old.uid], inbox.id)

    assert await store.read(inbox.id, uid) == RAW
    (entry,) = await store.entries(inbox.id)
    assert list(await store.keys.data_keys([entry.message_id])) == [entry.message_id]


async def test_orphan_data_keys_are_swept_once_past_the_grace_period(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (kept,) = await store.append(RAW, [AppendTarget(box.id)])
    stale, fresh = uuid.uuid4(), uuid.uuid4()  # keys of groups that never committed
    await store.keys.put_data_keys([(box.id, stale, b"x" * 60), (box.id, fresh, b"y" * 60)])
    async with store.keys.database.write() as session, session.begin():
        await session.execute(
            update(MessageKey)
            .where(MessageKey.message_id.in_([stale, kept.message_id]))
            .values(created_at=utcnow() - timedelta(hours=2))
        )

    assert await store.sweep_orphan_keys() == 1

    left = await store.keys.data_keys([stale, fresh, kept.message_id])
    assert set(left) == {fresh, kept.message_id}
    assert await store.read(kept.folder_id, kept.uid) == RAW
