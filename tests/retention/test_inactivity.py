"""A mailbox with no login for twelve months is warned (a message from postmaster in the
mailbox; for a patient, a notice owed to the notification address), then closed after
the grace period unless someone logs in meanwhile."""

from __future__ import annotations

import datetime as dt
import json
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from sqlalchemy import select, update

from directory.trust import Directory
from mailserver.auth.core import Authenticator
from retention.jobs import RetentionJobs
from retention.lifecycle import Lifecycle
from retention.policy import RetentionPolicy, add_months
from storage.messages import MailboxInfo, MessageStore
from storage.models import LifecycleNotice, Patient
from tests.retention.conftest import (
    DOMAIN,
    PASSWORD,
    T0,
    Clock,
    audit_actions,
    login,
    mailbox_row,
    professional,
    set_mailbox,
)

PATIENT_INS = "279035121518989"


@pytest.fixture
def policy() -> RetentionPolicy:
    return RetentionPolicy(batch_size=2)


@pytest.fixture
def jobs(store: MessageStore, policy: RetentionPolicy) -> RetentionJobs:
    return RetentionJobs(store, policy, domain=DOMAIN)


async def created_at_t0(store: MessageStore, box: MailboxInfo) -> MailboxInfo:
    await set_mailbox(store, box, created_at=T0)
    return box


async def inbox_messages(store: MessageStore, box: MailboxInfo) -> list[EmailMessage]:
    inbox = await store.folder(box.id, "INBOX")
    found = []
    for entry in await store.entries(inbox.id):
        raw = await store.read(inbox.id, entry.uid)
        parsed = message_from_bytes(raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


async def test_twelve_months_without_login_bring_a_warning_from_postmaster(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    alice = await created_at_t0(store, await professional(directory, "alice", "10000000001"))
    year = add_months(T0, 12)

    assert (await jobs.run(year - timedelta(days=1))).warned == []
    report = await jobs.run(year + timedelta(days=1))

    assert report.warned == [alice.address] and report.closed == []
    [warning] = await inbox_messages(store, alice)
    assert warning["From"].addresses[0].addr_spec == f"postmaster@{DOMAIN}"
    assert warning["To"] == alice.address
    assert warning["Auto-Submitted"] == "auto-generated"
    assert "fermée" in warning["Subject"] and "closed" in warning["Subject"]
    assert warning["Message-ID"] and warning["Date"]
    body = warning.get_content()
    assert "Aucune connexion" in body and "Nobody has logged in" in body
    closes_on = year + timedelta(days=1) + timedelta(days=30)
    assert closes_on.strftime("%d/%m/%Y") in body and T0.strftime("%d/%m/%Y") in body
    row = await mailbox_row(store, alice.address)
    assert row is not None and row.inactivity_warned_at == year + timedelta(days=1)
    # warned once, not at every run
    assert (await jobs.run(year + timedelta(days=2))).warned == []
    assert len(await inbox_messages(store, alice)) == 1


async def test_an_unused_mailbox_is_closed_after_the_grace_period(
    store: MessageStore, directory: Directory, jobs: RetentionJobs, auth: Authenticator
) -> None:
    alice = await created_at_t0(store, await professional(directory, "alice", "10000000001"))
    await auth.set_password(alice.id, PASSWORD)
    warned_at = add_months(T0, 12) + timedelta(days=1)
    await jobs.run(warned_at)

    assert (await jobs.run(warned_at + timedelta(days=29))).closed == []
    report = await jobs.run(warned_at + timedelta(days=30))

    assert report.closed == [alice.address]
    row = await mailbox_row(store, alice.address)
    assert row is not None and row.state == "closed" and row.closure_kind == "inactivity"
    assert row.deletion_due_at == add_months(warned_at + timedelta(days=30), 12)
    assert (await login(auth, alice.address)).reason == "mailbox-closed"
    [(target, details)] = await audit_actions(store, "mailbox.close")
    assert target == alice.address and json.loads(details)["reason"] == "inactivity"
    assert [t for t, _d in await audit_actions(store, "mailbox.inactivity_warning")] == [
        alice.address
    ]


async def test_a_login_during_the_grace_period_cancels_the_closure(
    store: MessageStore,
    directory: Directory,
    jobs: RetentionJobs,
    auth: Authenticator,
    clock: Clock,
) -> None:
    alice = await created_at_t0(store, await professional(directory, "alice", "10000000001"))
    await auth.set_password(alice.id, PASSWORD)
    warned_at = add_months(T0, 12) + timedelta(days=1)
    await jobs.run(warned_at)

    clock.now = warned_at + timedelta(days=10)
    assert (await login(auth, alice.address)).ok

    report = await jobs.run(warned_at + timedelta(days=31))
    assert report.closed == [] and report.warnings_cancelled == [alice.address]
    row = await mailbox_row(store, alice.address)
    assert row is not None and row.state == "active" and row.inactivity_warned_at is None
    # a year after that login, a new warning
    assert (await jobs.run(add_months(clock.now, 12) - timedelta(days=1))).warned == []
    assert (await jobs.run(add_months(clock.now, 12) + timedelta(days=1))).warned == [alice.address]


async def test_a_patient_warning_leaves_a_notice_for_the_notification_address(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    patient, _ins = await directory.create_patient_mailbox(
        actor="test:admin",
        ins=PATIENT_INS,
        family_name="Dupont",
        given_names="Marie",
        birth_date=dt.date(1979, 3, 14),
        sex="F",
    )
    await created_at_t0(store, patient)
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(Patient)
            .where(Patient.mailbox_id == patient.id)
            .values(notification_address="marie.dupont@example.org")
        )
    when = add_months(T0, 13)
    assert (await jobs.plan(when)).notices == 1

    report = await jobs.run(when)

    assert report.warned == [patient.address] and report.notices == 1
    assert len(await inbox_messages(store, patient)) == 1
    async with store.database.read() as session:
        [notice] = list(await session.scalars(select(LifecycleNotice)))
    assert (notice.address, notice.kind, notice.sent_at) == (
        "marie.dupont@example.org",
        "inactivity-warning",
        None,
    )
    [(_target, details)] = await audit_actions(store, "mailbox.inactivity_warning")
    assert json.loads(details)["notification_address"] is True  # the address is not logged


async def test_a_shared_mailbox_used_by_its_members_is_not_inactive(
    store: MessageStore, directory: Directory, jobs: RetentionJobs
) -> None:
    alice = await created_at_t0(store, await professional(directory, "alice", "10000000001"))
    cardio = await directory.create_structure_mailbox(
        actor="test:admin",
        address=f"cardio@{DOMAIN}",
        kind="ORG",
        structure_id_type="1",
        structure_id="750000001",
        name="Cardiologie",
    )
    await created_at_t0(store, cardio)
    await directory.add_member(actor="test:admin", shared=cardio.address, member=alice.address)
    await store.record_login(alice.id, add_months(T0, 11))

    report = await jobs.run(add_months(T0, 13))

    assert report.warned == []
    assert (await jobs.run(add_months(T0, 23) + timedelta(days=1))).warned == sorted(
        [alice.address, cardio.address]
    )


async def test_a_reopened_mailbox_starts_a_new_year(
    store: MessageStore, directory: Directory, jobs: RetentionJobs, policy: RetentionPolicy
) -> None:
    alice = await created_at_t0(store, await professional(directory, "alice", "10000000001"))
    warned_at = add_months(T0, 12) + timedelta(days=1)
    await jobs.run(warned_at)
    await jobs.run(warned_at + timedelta(days=30))
    reopen_at = warned_at + timedelta(days=40)
    await Lifecycle(store.database, policy).reopen(alice.address, actor="cli:a", now=reopen_at)

    assert (await jobs.run(reopen_at + timedelta(days=1))).warned == []
    assert (await jobs.run(add_months(reopen_at, 12) + timedelta(days=1))).warned == [alice.address]
