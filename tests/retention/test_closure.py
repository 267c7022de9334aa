"""Account closure: a closed mailbox refuses mail and logins; its data is deleted after
three months on a deletion request, or after the archive period otherwise; the closure
can be cancelled within that delay. Deletion is crypto-shredding, under legal hold too."""

from __future__ import annotations

import json

import pytest

from directory.policy import Connection, decide
from directory.trust import Directory
from mailserver.auth.core import Authenticator
from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle, LifecycleError
from retention.policy import add_months
from storage import audit
from storage.crypto import DecryptionError
from storage.messages import Conflict, MessageStore
from tests.retention.conftest import (
    PASSWORD,
    T0,
    audit_actions,
    deliver,
    login,
    mailbox_row,
    message_exists,
    professional,
    set_mailbox,
)


async def test_a_closed_mailbox_refuses_new_mail_and_logins(
    store: MessageStore, directory: Directory, lifecycle: Lifecycle, auth: Authenticator
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    bob = await professional(directory, "bob", "10000000002")
    await auth.set_password(alice.id, PASSWORD)
    await auth.set_password(bob.id, PASSWORD)
    assert (await login(auth, alice.address)).ok
    from_bob = Connection("submission", authenticated=bob)
    assert (await decide(directory, bob.address, alice.address, from_bob)).allowed

    closed = await lifecycle.close(alice.address, "archive", actor="cli:admin", now=T0)

    assert closed.state == "closed" and closed.closure_kind == "archive"
    assert closed.deletion_due_at == add_months(T0, 12)
    refused = await decide(directory, bob.address, alice.address, from_bob)
    assert (refused.allowed, refused.code, refused.status) == (False, 550, "5.2.1")
    assert "closed" in refused.reason
    assert (await login(auth, alice.address)).reason == "mailbox-closed"
    # nor can it send
    sent = await decide(directory, alice.address, bob.address, Connection("submission", alice))
    assert (sent.allowed, sent.code) == (False, 553)


async def test_a_deletion_request_deletes_the_data_three_months_later_not_before(
    store: MessageStore, directory: Directory, lifecycle: Lifecycle, jobs: RetentionJobs
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    bob = await professional(directory, "bob", "10000000002")
    kept = await deliver(store, bob, "for bob", T0)
    appended = await deliver(store, alice, "for alice", T0)
    await lifecycle.close(alice.address, "deletion", actor="cli:admin", now=T0)
    three_months = add_months(T0, 3)

    report = await jobs.run(three_months.replace(day=14))
    assert report.deleted == [] and await mailbox_row(store, alice.address) is not None
    assert b"for alice" in await store.read(appended.folder_id, appended.uid)

    report = await jobs.run(three_months)

    assert report.deleted == [alice.address]
    assert await mailbox_row(store, alice.address) is None
    assert not await message_exists(store, appended.message_id)
    with pytest.raises(DecryptionError):  # the mailbox key is gone: crypto-shredded
        await store.keys.get(alice.key_id)
    assert await message_exists(store, kept.message_id)
    assert b"for bob" in await store.read(kept.folder_id, kept.uid)
    # the address stays in the directory, without a mailbox: mail to it is refused
    refused = await decide(
        directory, bob.address, alice.address, Connection("submission", authenticated=bob)
    )
    assert (refused.allowed, refused.status) == (False, "5.1.1")
    [(target, details)] = await audit_actions(store, "mailbox.delete")
    assert target == alice.address
    assert json.loads(details)["reason"] == "deletion"
    assert json.loads(details)["messages"] == 1
    assert (await audit.verify(store.database)).ok


async def test_an_archive_closure_keeps_the_data_for_the_archive_period(
    store: MessageStore, directory: Directory, lifecycle: Lifecycle, jobs: RetentionJobs
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    appended = await deliver(store, alice, "archived", T0)
    await lifecycle.close(alice.address, "archive", actor="cli:admin", now=T0)

    for months in (3, 6, 11):
        assert (await jobs.run(add_months(T0, months).replace(day=16))).deleted == []
        assert b"archived" in await store.read(appended.folder_id, appended.uid)

    assert (await jobs.run(add_months(T0, 12))).deleted == [alice.address]
    assert await mailbox_row(store, alice.address) is None


async def test_a_closure_can_be_cancelled_within_the_delay(
    store: MessageStore,
    directory: Directory,
    lifecycle: Lifecycle,
    jobs: RetentionJobs,
    auth: Authenticator,
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    await auth.set_password(alice.id, PASSWORD)
    appended = await deliver(store, alice, "still here", T0)
    await lifecycle.close(alice.address, "deletion", actor="cli:admin", now=T0)

    reopened = await lifecycle.reopen(alice.address, actor="cli:admin", now=add_months(T0, 2))

    assert reopened.state == "active" and reopened.deletion_due_at is None
    assert (await jobs.run(add_months(T0, 4))).deleted == []
    assert b"still here" in await store.read(appended.folder_id, appended.uid)
    assert (await login(auth, alice.address)).ok
    assert [t for t, _d in await audit_actions(store, "mailbox.reopen")] == [alice.address]


async def test_a_closure_cannot_be_cancelled_once_the_delay_is_over(
    directory: Directory, lifecycle: Lifecycle
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    await lifecycle.close(alice.address, "deletion", actor="cli:admin", now=T0)

    with pytest.raises(LifecycleError, match="can no longer be reopened"):
        await lifecycle.reopen(alice.address, actor="cli:admin", now=add_months(T0, 3))
    with pytest.raises(Conflict, match="already closed"):
        await lifecycle.close(alice.address, "archive", actor="cli:admin", now=T0)


async def test_a_deletion_request_shortens_an_archive_closure(
    store: MessageStore, directory: Directory, lifecycle: Lifecycle, jobs: RetentionJobs
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    await lifecycle.close(alice.address, "archive", actor="cli:admin", now=T0)

    later = add_months(T0, 2)
    changed = await lifecycle.close(alice.address, "deletion", actor="cli:alice", now=later)

    assert changed.closure_kind == "deletion"
    assert changed.deletion_due_at == add_months(later, 3)
    assert (await jobs.run(add_months(later, 3))).deleted == [alice.address]


async def test_a_legal_hold_postpones_the_deletion_of_a_closed_mailbox(
    store: MessageStore, directory: Directory, lifecycle: Lifecycle, jobs: RetentionJobs
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    appended = await deliver(store, alice, "evidence", T0)
    await lifecycle.close(alice.address, "deletion", actor="cli:admin", now=T0)
    await lifecycle.hold(alice.address, actor="cli:judge", now=add_months(T0, 1))

    report = await jobs.run(add_months(T0, 24))

    assert report.deleted == [] and report.deletion_held == [alice.address]
    assert b"evidence" in await store.read(appended.folder_id, appended.uid)
    with pytest.raises(LifecycleError):  # the delay is over: it stays closed
        await lifecycle.reopen(alice.address, actor="cli:admin", now=add_months(T0, 24))

    await lifecycle.release(alice.address, actor="cli:judge", now=add_months(T0, 25))
    assert (await jobs.run(add_months(T0, 25))).deleted == [alice.address]
    assert await mailbox_row(store, alice.address) is None
    actions = [
        action
        for action in ("mailbox.close", "mailbox.hold", "mailbox.release", "mailbox.delete")
        if await audit_actions(store, action)
    ]
    assert actions == ["mailbox.close", "mailbox.hold", "mailbox.release", "mailbox.delete"]
    assert (await audit.verify(store.database)).ok


async def test_a_mailbox_closed_without_a_deletion_date_gets_the_archive_period(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    """Closed by other means than `Lifecycle` (state only): the jobs date the deletion."""
    alice = await professional(directory, "alice", "10000000001")
    await set_mailbox(store, alice, state="closed", closed_at=T0)

    report = await jobs.run(add_months(T0, 1))

    assert report.scheduled == [alice.address] and report.deleted == []
    row = await mailbox_row(store, alice.address)
    assert row is not None and row.closure_kind == "archive"
    assert row.deletion_due_at == add_months(T0, 12)
    assert (await jobs.plan(add_months(T0, 12))).deleted == [alice.address]
    assert (await jobs.run(add_months(T0, 12))).deleted == [alice.address]
