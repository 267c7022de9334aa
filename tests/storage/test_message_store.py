"""The message store, on every configured backend: what a protocol session relies on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from storage.db import open_database
from storage.messages import AppendTarget, Conflict, MessageStore, NotFound, StoreError
from storage.notify import ChangeHub

MESSAGE = (
    b"From: Dr Alice Martin <alice.martin@hygie.test>\r\n"
    b"To: bob@hygie.test\r\n"
    b"Subject: =?utf-8?q?Compte-rendu_op=C3=A9ratoire?=\r\n"
    b"Message-ID: <1@hygie.test>\r\n"
    b"\r\n"
    b"Bonjour,\r\n\xc3\xa9t\xc3\xa9 8bit body\r\n\r\n"
)


async def test_appended_message_round_trips_byte_for_byte(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    raw = MESSAGE + bytes(range(256)) + b"\r\nno final newline"
    (appended,) = await store.append(raw, [AppendTarget(box.id)])
    assert await store.read(appended.folder_id, appended.uid) == raw


async def test_message_without_body_round_trips(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    raw = b"Subject: headers only\r\n"
    (appended,) = await store.append(raw, [AppendTarget(box.id)])
    assert await store.read(appended.folder_id, appended.uid) == raw


async def test_append_to_several_mailboxes_is_one_transaction(store: MessageStore) -> None:
    alice = await store.create_mailbox("alice@hygie.test", "PER")
    bob = await store.create_mailbox("bob@hygie.test", "PER")
    with pytest.raises(NotFound):
        await store.append(
            MESSAGE, [AppendTarget(alice.id), AppendTarget(bob.id, folder="No such folder")]
        )
    for box in (alice, bob):
        inbox = await store.folder(box.id, "INBOX")
        assert (await store.status(inbox.id)).messages == 0
        assert inbox.uidnext == 1
    appended = await store.append(MESSAGE, [AppendTarget(alice.id), AppendTarget(bob.id)])
    assert [(a.mailbox_id, a.uid) for a in appended] == [(alice.id, 1), (bob.id, 1)]
    # each mailbox holds its own encrypted copy
    assert appended[0].message_id != appended[1].message_id


async def test_every_mailbox_gets_the_special_use_folders(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    folders = {f.name: f.special_use for f in await store.list_folders(box.id)}
    assert folders == {
        "INBOX": None,
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Trash": "\\Trash",
        "Archive": "\\Archive",
        "Junk": "\\Junk",
    }


async def test_addresses_are_unique_and_kinds_are_checked(store: MessageStore) -> None:
    await store.create_mailbox("Alice@Hygie.test", "PER")
    with pytest.raises(Conflict):
        await store.create_mailbox("alice@hygie.test", "ORG")
    with pytest.raises(StoreError, match="kind"):
        await store.create_mailbox("robot@hygie.test", "BOT")


async def test_uids_increase_and_uidnext_follows(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    uids = [(await store.append(MESSAGE, [AppendTarget(box.id)]))[0].uid for _ in range(3)]
    assert uids == [1, 2, 3]
    inbox = await store.folder(box.id, "inbox")
    status = await store.status(inbox.id)
    assert (status.uidnext, status.messages, status.unseen) == (4, 3, 3)
    assert status.size == 3 * len(MESSAGE)


async def test_concurrent_appends_never_share_a_uid(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    results = await asyncio.gather(
        *(store.append(MESSAGE, [AppendTarget(box.id)]) for _ in range(20))
    )
    assert sorted(r[0].uid for r in results) == list(range(1, 21))


async def test_flags_and_modseq(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    date = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    (a,) = await store.append(
        MESSAGE, [AppendTarget(box.id, flags=frozenset({"\\Flagged"}), internal_date=date)]
    )
    before = (await store.status(a.folder_id)).highestmodseq
    update = await store.store_flags(a.folder_id, [a.uid], "add", ["\\Seen", "$Urgent"])
    (entry,) = update.updated
    assert entry.flags == {"\\Flagged", "\\Seen", "$Urgent"}
    assert entry.modseq > before
    assert entry.internal_date == date
    assert (await store.status(a.folder_id)).unseen == 0
    # a STORE that changes nothing creates no new MODSEQ
    assert (await store.store_flags(a.folder_id, [a.uid], "add", ["\\Seen"])).updated == []
    replaced = await store.store_flags(a.folder_id, [a.uid], "replace", ["\\Answered"])
    assert replaced.updated[0].flags == {"\\Answered"}
    removed = await store.store_flags(a.folder_id, [a.uid], "remove", ["\\Answered"])
    assert removed.updated[0].flags == frozenset()
    changed = await store.entries(a.folder_id, changed_since=entry.modseq)
    assert [e.uid for e in changed] == [a.uid]


async def test_unchangedsince_refuses_concurrent_flag_changes(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(MESSAGE, [AppendTarget(box.id)])
    (b,) = await store.append(MESSAGE, [AppendTarget(box.id)])
    seen = (await store.status(a.folder_id)).highestmodseq
    await store.store_flags(a.folder_id, [b.uid], "add", ["\\Flagged"])
    update = await store.store_flags(
        a.folder_id, [a.uid, b.uid], "add", ["\\Seen"], unchanged_since=seen
    )
    assert [e.uid for e in update.updated] == [a.uid]
    assert update.modified == [b.uid]


async def test_copy_within_a_mailbox_shares_the_encrypted_copy(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(MESSAGE, [AppendTarget(box.id, flags=frozenset({"\\Seen"}))])
    archive = await store.folder(box.id, "Archive")
    assert await store.copy(a.folder_id, [a.uid, 999], archive.id) == [(a.uid, 1)]
    (entry,) = await store.entries(archive.id)
    assert entry.message_id == a.message_id and entry.flags == {"\\Seen"}
    assert await store.read(archive.id, 1) == MESSAGE
    assert (await store.counts())[1] == 1


async def test_copy_to_another_mailbox_reencrypts_for_it(store: MessageStore) -> None:
    alice = await store.create_mailbox("alice@hygie.test", "PER")
    team = await store.create_mailbox("cardiologie@hygie.test", "ORG")
    (a,) = await store.append(MESSAGE, [AppendTarget(alice.id)])
    shared = await store.folder(team.id, "INBOX")
    await store.copy(a.folder_id, [a.uid], shared.id)
    (entry,) = await store.entries(shared.id)
    assert entry.message_id != a.message_id
    assert await store.read(shared.id, entry.uid) == MESSAGE
    await store.shred_mailbox(alice.id)
    assert await store.read(shared.id, entry.uid) == MESSAGE


async def test_move_copies_then_expunges_atomically(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(MESSAGE, [AppendTarget(box.id)])
    trash = await store.folder(box.id, "Trash")
    assert await store.move(a.folder_id, [a.uid], trash.id) == [(a.uid, 1)]
    assert await store.entries(a.folder_id) == []
    assert await store.expunged_since(a.folder_id, 0) == [a.uid]
    assert await store.read(trash.id, 1) == MESSAGE


async def test_expunge_removes_deleted_messages_and_their_data(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    first, second, third = [
        (await store.append(MESSAGE + bytes([n]), [AppendTarget(box.id)]))[0] for n in range(3)
    ]
    folder = first.folder_id
    await store.store_flags(folder, [first.uid, second.uid], "add", ["\\Deleted"])
    # UID EXPUNGE: only the named UIDs among the \Deleted ones (RFC 4315 §2.1)
    assert await store.expunge(folder, [second.uid, third.uid]) == [second.uid]
    assert await store.expunge(folder) == [first.uid]
    assert [e.uid for e in await store.entries(folder)] == [third.uid]
    assert (await store.counts())[1] == 1  # the expunged copies are gone, with their keys
    with pytest.raises(NotFound):
        await store.read(folder, first.uid)


async def test_folders_create_rename_delete(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    created = await store.create_folder(box.id, "Patients/2026")
    with pytest.raises(Conflict):
        await store.create_folder(box.id, "Patients/2026")
    (a,) = await store.append(MESSAGE, [AppendTarget(box.id, folder="Patients/2026")])
    renamed = await store.rename_folder(created.id, "Patients/Archive 2026")
    assert renamed.uidvalidity == created.uidvalidity
    assert await store.read(renamed.id, a.uid) == MESSAGE
    await store.delete_folder(renamed.id)
    recreated = await store.create_folder(box.id, "Patients/2026")
    # RFC 9051 §2.3.1.1: a recreated name never reuses a UIDVALIDITY
    assert recreated.uidvalidity != created.uidvalidity
    assert (await store.counts())[1] == 0
    inbox = await store.folder(box.id, "INBOX")
    with pytest.raises(Conflict):
        await store.delete_folder(inbox.id)


async def test_changes_are_notified_to_subscribers(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    other = await store.create_mailbox("bob@hygie.test", "PER")
    subscription = store.hub.subscribe(box.id)
    try:
        (a,) = await store.append(MESSAGE, [AppendTarget(box.id)])
        await store.append(MESSAGE, [AppendTarget(other.id)])
        change = await subscription.get(within=5)
        assert change is not None
        assert (change.folder_id, change.kind) == (a.folder_id, "append")
        await store.store_flags(a.folder_id, [a.uid], "add", ["\\Seen"])
        change = await subscription.get(within=5)
        assert change is not None and change.kind == "flags"
        # nothing about bob's mailbox reached alice's subscription
        assert await subscription.get(within=0.3) is None
    finally:
        subscription.close()


async def test_another_node_sees_changes(store: MessageStore, backend: str) -> None:
    """Two nodes on one PostgreSQL: a change on one wakes subscribers on the other."""
    if backend != "postgresql":
        pytest.skip("SQLite deployments are one process; LISTEN/NOTIFY is PostgreSQL's")
    other_node_db = open_database(store.database.url)
    other_node = ChangeHub(other_node_db)
    await other_node.start()
    try:
        box = await store.create_mailbox("alice@hygie.test", "PER")
        subscription = other_node.subscribe(box.id)
        (a,) = await store.append(MESSAGE, [AppendTarget(box.id)])
        change = await subscription.get(within=5)
        assert change is not None and (change.folder_id, change.kind) == (a.folder_id, "append")
        subscription.close()
    finally:
        await other_node.stop()
        await other_node_db.dispose()
