"""Messages are kept ten years after they arrived, then purged for good; a legal hold
keeps them; a message the user deletes is gone at once. Walked with an injected clock."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from directory.trust import Directory
from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle
from retention.policy import add_months
from storage import audit
from storage.functional_log import FunctionalLogStore
from storage.messages import MessageStore
from storage.models import Message
from tests.retention.conftest import (
    T0,
    audit_actions,
    deliver,
    message_exists,
    professional,
)


def years(n: int) -> int:
    return 12 * n


async def test_messages_are_purged_ten_years_and_a_day_after_they_arrived_not_before(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    ages = {"oldest": T0, "one-year-later": add_months(T0, 12), "recent": add_months(T0, 108)}
    sent = {name: await deliver(store, alice, name, when) for name, when in ages.items()}
    inbox = await store.folder(alice.id, "INBOX")
    archive = await store.folder(alice.id, "Archive")
    # the oldest is also filed in Archive: one message, two folder entries
    [(_source, archived_uid)] = await store.copy(inbox.id, [sent["oldest"].uid], archive.id)
    ten_years = add_months(T0, years(10))

    for instant in (add_months(T0, years(5)), ten_years.replace(day=14), ten_years):
        report = await jobs.run(instant)
        assert report.messages == 0
        assert all([await message_exists(store, a.message_id) for a in sent.values()])

    report = await jobs.run(ten_years.replace(day=16))
    assert report.messages == 1 and report.message_mailboxes == 1
    assert not await message_exists(store, sent["oldest"].message_id)
    assert await message_exists(store, sent["one-year-later"].message_id)
    # gone from both folders, and reported to IMAP clients as expunged (QRESYNC)
    assert [e.uid for e in await store.entries(inbox.id)] == [
        sent["one-year-later"].uid,
        sent["recent"].uid,
    ]
    assert await store.entries(archive.id) == []
    assert await store.expunged_since(inbox.id, 0) == [sent["oldest"].uid]
    assert await store.expunged_since(archive.id, 0) == [archived_uid]
    logged = await FunctionalLogStore(store.database).entries(action="retention.purge")
    assert [(e.target, e.result) for e in logged] == [(alice.address, "purged: 1")]
    assert (await store.folder(alice.id, "INBOX")).highestmodseq > inbox.highestmodseq

    report = await jobs.run(add_months(T0, years(11)).replace(day=16))
    assert report.messages == 1
    assert not await message_exists(store, sent["one-year-later"].message_id)
    report = await jobs.run(add_months(T0, years(19)).replace(day=14))
    assert report.messages == 0 and await message_exists(store, sent["recent"].message_id)
    report = await jobs.run(add_months(T0, years(19)).replace(day=16))
    assert report.messages == 1 and not await message_exists(store, sent["recent"].message_id)

    purges = [
        json.loads(details) for _target, details in await audit_actions(store, "retention.purge")
    ]
    assert [(p["messages"], p["mailboxes"]) for p in purges] == [(1, 1)] * 3
    assert purges[0]["received_before"] == T0.replace(day=16).isoformat()
    assert (
        purges[0]["message_ids_sha256"]
        == hashlib.sha256(sent["oldest"].message_id.bytes).hexdigest()
    )
    assert (await audit.verify(store.database)).ok


async def test_purge_works_in_batches_across_mailboxes(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    boxes = [await professional(directory, f"user{n}", f"1000000001{n}") for n in range(3)]
    for n in range(7):
        await deliver(store, boxes[n % 3], f"old {n}", add_months(T0, n))
    kept = await deliver(store, boxes[0], "young", add_months(T0, years(5)))
    steps: list[int] = []

    report = await jobs.run(add_months(T0, years(11)), progress=steps.append)

    assert report.messages == 7 and report.message_mailboxes == 3
    # batch_size=2: one transaction per batch (then the functional log's own batches)
    assert steps[:4] == [2, 2, 2, 1] and sum(steps) == report.work
    assert await message_exists(store, kept.message_id)
    async with store.database.read() as session:
        assert list(await session.scalars(select(Message.id))) == [kept.message_id]
    # one audit record per batch; per mailbox, an entry in the functional log
    purged = [json.loads(details) for _t, details in await audit_actions(store, "retention.purge")]
    assert [p["messages"] for p in purged] == [2, 2, 2, 1]
    logged = await FunctionalLogStore(store.database).entries(action="retention.purge")
    assert sum(int(e.result.removeprefix("purged: ")) for e in logged) == 7
    assert {e.target for e in logged} == {b.address for b in boxes}


async def test_a_legal_hold_keeps_expired_messages_until_it_is_released(
    store: MessageStore, directory: Directory, jobs: RetentionJobs, lifecycle: Lifecycle
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    bob = await professional(directory, "bob", "10000000002")
    held = await deliver(store, alice, "evidence", T0)
    free = await deliver(store, bob, "ordinary", T0)
    await lifecycle.hold(alice.address, actor="cli:judge", now=add_months(T0, 60), reason="RG 1")
    later = add_months(T0, years(12))

    report = await jobs.run(later)

    assert report.messages == 1 and not await message_exists(store, free.message_id)
    assert await message_exists(store, held.message_id)
    assert report.held_messages == 1 and report.held_mailboxes == [alice.address]
    assert (await jobs.run(add_months(later, 6))).messages == 0  # still held
    assert await message_exists(store, held.message_id)

    await lifecycle.release(alice.address, actor="cli:judge", now=add_months(later, 7))
    report = await jobs.run(add_months(later, 7))
    assert report.messages == 1 and not await message_exists(store, held.message_id)
    holds = await audit_actions(store, "mailbox.hold")
    releases = await audit_actions(store, "mailbox.release")
    assert holds[0][0] == alice.address and json.loads(holds[0][1])["reason"] == "RG 1"
    assert releases[0][0] == alice.address
    assert (await audit.verify(store.database)).ok


async def test_an_expunged_message_loses_its_row_and_data_key_at_once(
    store: MessageStore, directory: Directory
) -> None:
    """User deletion is the store's own `expunge`: verified here, not reimplemented."""
    alice = await professional(directory, "alice", "10000000001")
    appended = await deliver(store, alice, "to delete", T0)
    async with store.database.read() as session:
        row = await session.get(Message, appended.message_id)
        assert row is not None and row.wrapped_key is None  # the data key is in the key store
    assert list(await store.keys.data_keys([appended.message_id])) == [appended.message_id]

    await store.store_flags(appended.folder_id, [appended.uid], "add", ["\\Deleted"])
    assert await store.expunge(appended.folder_id) == [appended.uid]

    assert not await message_exists(store, appended.message_id)
    assert await store.keys.data_keys([appended.message_id]) == {}


async def test_imap_sessions_watching_the_mailbox_learn_of_the_purge(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    """The purge publishes an `expunge` change per folder, as the store's expunge does
    (in process on SQLite, through LISTEN/NOTIFY on PostgreSQL)."""
    alice = await professional(directory, "alice", "10000000001")
    old = await deliver(store, alice, "old", T0)
    subscription = store.hub.subscribe(alice.id)
    try:
        await jobs.run(add_months(T0, years(11)))
        change = await subscription.get(within=10)
    finally:
        subscription.close()
    assert change is not None
    assert (change.folder_id, change.kind) == (old.folder_id, "expunge")
    assert change.modseq == (await store.folder(alice.id, "INBOX")).highestmodseq
