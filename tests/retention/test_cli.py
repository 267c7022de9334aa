"""`hygie retention run [--dry-run] [--now DATE]` and `hygie mailbox close|reopen|hold|
release`, run as an administrator would, on every configured backend."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from mailserver.config import Settings
from mailserver.service import Runtime
from retention.lifecycle import Lifecycle
from retention.policy import RetentionPolicy
from storage.functional_log import FunctionalLogStore
from storage.models import AuditRecord, FunctionalLog, Mailbox, Message, RetentionRun
from tests.retention.conftest import T0, deliver

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    opened = Runtime.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


def hygie(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailserver", *args, "--data-dir", str(settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


async def snapshot(runtime: Runtime) -> dict[str, int]:
    counts = {}
    async with runtime.messages_db.read() as session:
        for name, table in (
            ("messages", Message),
            ("mailboxes", Mailbox),
            ("audit", AuditRecord),
            ("logs", FunctionalLog),
            ("runs", RetentionRun),
        ):
            counts[name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
    return counts


async def test_dry_run_prints_what_is_due_and_changes_nothing(runtime: Runtime) -> None:
    store = runtime.store
    alice = await store.create_mailbox("alice@hygie.test", "PER")
    bob = await store.create_mailbox("bob@hygie.test", "PER")
    for n in range(3):
        await deliver(store, alice, f"old {n}", datetime(2015, 6, 1, tzinfo=UTC))
    await deliver(store, alice, "recent", datetime(2025, 1, 1, tzinfo=UTC))
    await deliver(store, bob, "for bob", datetime(2025, 1, 1, tzinfo=UTC))
    await Lifecycle(runtime.messages_db, RetentionPolicy()).close(
        bob.address, "deletion", actor="test", now=T0
    )
    await FunctionalLogStore(runtime.messages_db).record(
        actor="test", action="imap.login", at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    await store.record_login(alice.id, datetime(2026, 10, 1, tzinfo=UTC))
    before = await snapshot(runtime)

    result = hygie(runtime.settings, "retention", "run", "--dry-run", "--now", "2026-11-01")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "retention as of 2026-11-01 00:00:00 UTC" in lines
    assert "messages past retention: 3 would be purged from 1 mailboxes" in lines
    assert "  alice@hygie.test: 3" in lines
    assert "closed mailboxes past their deletion date: 1 would be deleted" in lines
    assert "  bob@hygie.test" in lines
    # the login above and the closure's own entry
    assert "functional log entries past retention: 2 would be purged" in lines
    assert await snapshot(runtime) == before

    # ten years on, as a simulation: everything is due, and still nothing changes
    future = hygie(runtime.settings, "retention", "run", "--dry-run", "--now", "2036-02-01")
    assert future.returncode == 0, future.stderr
    assert "messages past retention: 4 would be purged from 1 mailboxes" in future.stdout
    assert "inactive mailboxes: 1 would be warned" in future.stdout
    assert await snapshot(runtime) == before
    refused = hygie(runtime.settings, "retention", "run", "--now", "2036-02-01")
    assert refused.returncode == 2 and "--now is in the future" in refused.stderr
    assert await snapshot(runtime) == before

    done = hygie(runtime.settings, "retention", "run", "--now", "2026-11-01")

    assert done.returncode == 0, done.stderr
    assert "messages past retention: 3 were purged from 1 mailboxes" in done.stdout
    assert "retention" in done.stderr  # the progress bar
    after = await snapshot(runtime)
    assert after["messages"] == 1  # alice's recent one: her old ones and bob's box are gone
    assert after["mailboxes"] == before["mailboxes"] - 1
    assert after["runs"] == 1 and after["audit"] > before["audit"]
    assert hygie(runtime.settings, "audit", "verify").returncode == 0


async def test_lifecycle_commands_close_reopen_hold_and_release(runtime: Runtime) -> None:
    await runtime.store.create_mailbox("alice@hygie.test", "PER")

    closed = hygie(runtime.settings, "mailbox", "close", "alice@hygie.test", "--reason", "deletion")
    assert closed.returncode == 0, closed.stderr
    assert "alice@hygie.test: closed" in closed.stdout and "data deleted on" in closed.stdout
    again = hygie(runtime.settings, "mailbox", "close", "alice@hygie.test", "--reason", "archive")
    assert again.returncode == 1 and "already closed" in again.stderr

    reopened = hygie(runtime.settings, "mailbox", "reopen", "alice@hygie.test")
    assert reopened.returncode == 0 and "alice@hygie.test: active" in reopened.stdout

    held = hygie(runtime.settings, "mailbox", "hold", "alice@hygie.test", "--reason", "case 42")
    assert held.returncode == 0 and "legal hold since" in held.stdout
    status = hygie(runtime.settings, "retention", "status")
    assert status.returncode == 0 and "on legal hold: alice@hygie.test" in status.stdout
    released = hygie(runtime.settings, "mailbox", "release", "alice@hygie.test")
    assert released.returncode == 0 and "legal hold" not in released.stdout

    unknown = hygie(runtime.settings, "mailbox", "hold", "nobody@hygie.test")
    assert unknown.returncode == 1 and "no mailbox nobody@hygie.test" in unknown.stderr
    async with runtime.messages_db.read() as session:
        actions = list(
            await session.scalars(
                select(AuditRecord.action)
                .where(AuditRecord.target == "alice@hygie.test")
                .order_by(AuditRecord.id)
            )
        )
    assert actions == ["mailbox.close", "mailbox.reopen", "mailbox.hold", "mailbox.release"]
