"""Functional logs (who, when, action, request summary, result) are kept six months, then
purged by the retention run; the retention jobs log their own actions there."""

from __future__ import annotations

from datetime import timedelta

from directory.trust import Directory
from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle
from retention.policy import add_months
from storage.functional_log import FunctionalLogStore
from storage.messages import MessageStore
from tests.retention.conftest import T0, deliver, professional


async def test_log_entries_are_kept_six_months_then_purged(
    store: MessageStore, jobs: RetentionJobs
) -> None:
    log = FunctionalLogStore(store.database)
    for months in (0, 3, 5, 6, 7, 12):
        await log.record(
            actor="imap:alice@hygie.test",
            action="imap.fetch",
            target="alice@hygie.test",
            request=f"FETCH 1:* FLAGS ({months} months ago)",
            result="OK 12 messages",
            at=add_months(T0, -months),
        )

    assert (await jobs.plan(T0)).logs == 2
    report = await jobs.run(T0 + timedelta(hours=1))

    assert report.logs == 3  # 6 months and one hour ago is past six months too
    kept = await log.entries(action="imap.fetch")
    assert [e.request for e in kept] == [f"FETCH 1:* FLAGS ({m} months ago)" for m in (0, 3, 5)]
    assert all(e.node for e in kept)


async def test_purge_goes_in_batches_and_reports_each(store: MessageStore) -> None:
    log = FunctionalLogStore(store.database)
    for n in range(7):
        await log.record(actor="test", action="smtp.rcpt", at=add_months(T0, -7) + timedelta(n))
    batches: list[int] = []

    purged = await log.purge(add_months(T0, -6), batch_size=3, on_batch=batches.append)

    assert purged == 7 and batches == [3, 3, 1]
    assert await log.entries() == []


async def test_long_requests_are_cut_and_never_need_content(store: MessageStore) -> None:
    log = FunctionalLogStore(store.database)
    await log.record(actor="x" * 400, action="smtp.data", request="y" * 5000, result="z" * 900)
    [entry] = await log.entries()
    assert len(entry.actor) == 320 and len(entry.request) == 2048 and len(entry.result) == 512


async def test_retention_jobs_log_what_they_do(
    store: MessageStore, directory: Directory, jobs: RetentionJobs, lifecycle: Lifecycle
) -> None:
    alice = await professional(directory, "alice", "10000000001")
    await deliver(store, alice, "old", add_months(T0, -121))
    await lifecycle.hold(alice.address, actor="cli:judge", now=T0)
    await lifecycle.release(alice.address, actor="cli:judge", now=T0)

    await jobs.run(T0)

    entries = await FunctionalLogStore(store.database).entries()
    assert [(e.action, e.target) for e in entries] == [
        ("mailbox.hold", alice.address),
        ("mailbox.release", alice.address),
        ("retention.purge", alice.address),
        ("retention.run", ""),
    ]
    assert entries[2].result == "purged: 1"
    assert "Body" not in " ".join(e.request + e.result for e in entries)
