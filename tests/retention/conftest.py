"""Shared pieces of the retention tests: a clock origin, jobs on the `store` fixture's
database, and helpers that place messages and mailboxes at chosen instants."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from directory.trust import Directory
from mailserver import init
from mailserver.auth.core import Authenticator, AuthResult
from mailserver.config import AuthSection, Settings
from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle
from retention.policy import RetentionPolicy
from storage.credentials import CredentialStore
from storage.messages import Appended, AppendTarget, MailboxInfo, MessageStore
from storage.models import AuditRecord, Mailbox, Message
from tests.databases import DatabasePair

DOMAIN = "hygie.test"
# The origin of every walk through time: all instants are T0 plus calendar durations.
T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def note(subject: str) -> bytes:
    return (
        f"From: dr.house@{DOMAIN}\r\nTo: someone@{DOMAIN}\r\nSubject: {subject}\r\n\r\n"
        f"Body of {subject}.\r\n"
    ).encode()


@pytest.fixture
def policy() -> RetentionPolicy:
    """The default rules with tiny batches (so that batching is exercised), and no
    inactivity rule: walks of ten years would otherwise also warn and close the
    mailboxes under test (the inactivity tests use their own policy)."""
    return RetentionPolicy(batch_size=2, inactivity_kinds=frozenset())


@pytest.fixture
def jobs(store: MessageStore, policy: RetentionPolicy) -> RetentionJobs:
    return RetentionJobs(store, policy, domain=DOMAIN)


@pytest.fixture
def lifecycle(store: MessageStore, policy: RetentionPolicy) -> Lifecycle:
    return Lifecycle(store.database, policy)


async def professional(directory: Directory, local: str, rpps: str) -> MailboxInfo:
    return await directory.create_professional_mailbox(
        actor="test:admin",
        address=f"{local}@{DOMAIN}",
        id_type="8",
        identifier=rpps,
        family_name=local.upper(),
        given_name="Test",
        profession_code="10",
    )


async def deliver(
    store: MessageStore, mailbox: MailboxInfo, subject: str, received_at: datetime
) -> Appended:
    """A message in `mailbox`'s INBOX, as if it had arrived at `received_at`."""
    (appended,) = await store.append(note(subject), [AppendTarget(mailbox.id)])
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(Message).where(Message.id == appended.message_id).values(received_at=received_at)
        )
    return appended


async def set_mailbox(store: MessageStore, mailbox: MailboxInfo, **values: object) -> None:
    async with store.database.write() as session, session.begin():
        await session.execute(update(Mailbox).where(Mailbox.id == mailbox.id).values(**values))


async def message_exists(store: MessageStore, message_id: uuid.UUID) -> bool:
    async with store.database.read() as session:
        return await session.get(Message, message_id) is not None


async def mailbox_row(store: MessageStore, address: str) -> Mailbox | None:
    async with store.database.read() as session:
        return await session.scalar(select(Mailbox).where(Mailbox.address == address))


async def audit_actions(store: MessageStore, action: str) -> list[tuple[str, str]]:
    """(target, details) of every audit record with `action`, in order."""
    async with store.database.read() as session:
        rows = await session.execute(
            select(AuditRecord.target, AuditRecord.details)
            .where(AuditRecord.action == action)
            .order_by(AuditRecord.id)
        )
        return [(target, details) for target, details in rows.all()]


async def message_count(store: MessageStore) -> int:
    async with store.database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


class Clock:
    """An injected clock the tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


FAST_AUTH = AuthSection(
    argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1, cache_seconds=0
)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: MessageStore, clock: Clock) -> Authenticator:
    return Authenticator(store, CredentialStore(store.database, now=clock), FAST_AUTH, now=clock)


async def login(auth: Authenticator, address: str) -> AuthResult:
    return await auth.authenticate(address, PASSWORD, remote="192.0.2.1", protocol="imap")


@pytest.fixture
async def settings(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """A node's data directory (`hygie init`) on the test's databases."""
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    result, _report = await asyncio.to_thread(init.initialise, tmp_path / "data", DOMAIN)
    return result
