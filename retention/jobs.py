"""The retention jobs: what is due at a given instant, and doing it in small batches.

One run, in this order (each step sees what the previous one did):

1. mailboxes closed by other means, without a deletion date, get one (archive period);
2. inactivity warnings whose mailbox was used since (a login, a member's login on a
   shared box, a reopening) are cancelled;
3. mailboxes warned more than the grace period ago, and still unused, are closed
   (`inactivity` closure: kept for the archive period);
4. mailboxes unused for the inactivity period are warned: a message from postmaster in
   the mailbox and, for a patient with a notification address, a notice owed to it
   (`lifecycle_notices`);
5. closed mailboxes past their deletion date, and not on legal hold, are deleted by
   crypto-shredding: the mailbox key goes first (from then on no copy of any of its
   messages, backups included, can be read), then its rows, a batch at a time;
6. messages older than the retention period, in mailboxes not on legal hold, are purged:
   folder entries (recorded as expunged for IMAP's QRESYNC), then the message row, which
   holds the message's wrapped data key;
7. functional-log entries older than their retention period are purged.

Every job takes the instant `now` it decides for (an injected clock); each batch is one
short transaction, so deliveries never wait long; every deletion and closure is written
to the audit trail. `plan(now)` computes the same without changing anything (dry run).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from retention.lifecycle import SYSTEM_ACTOR, note
from retention.policy import ClosureKind, RetentionPolicy
from retention.warning import inactivity_warning
from storage import audit, functional_log
from storage.functional_log import FunctionalLogStore
from storage.messages import AppendTarget, MessageStore, NotFound, StoreRequest
from storage.models import (
    Expunged,
    Folder,
    FolderEntry,
    LifecycleNotice,
    Mailbox,
    MailboxMember,
    Message,
    Patient,
)
from storage.notify import CHANNEL, Change

log = logging.getLogger("hygie.retention")

Progress = Callable[[int], None]
T = TypeVar("T")
SHOWN_MAILBOXES = 100
MAILBOX_BATCH = 100
# PostgreSQL deadlock_detected, serialization_failure: the batch is simply tried again.
RETRYABLE = ("40P01", "40001")
RETRIES = 5
# On SQLite, after each batch, a pause of this share of the batch's own duration.
SQLITE_PAUSE_RATIO = 0.5


@dataclass
class Report:
    """What a run did, or in a dry run would do."""

    as_of: datetime
    dry_run: bool
    messages: int = 0
    message_mailboxes: int = 0
    messages_by_mailbox: list[tuple[str, int]] = field(default_factory=list)
    held_messages: int = 0
    held_mailboxes: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deletion_held: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    notices: int = 0
    warnings_cancelled: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)
    logs: int = 0
    # Data keys in the key store whose message is gone (a crash between two commits).
    orphan_keys: int = 0
    stopped: bool = False

    @property
    def work(self) -> int:
        """Units of work, for a progress bar: messages, mailboxes, log entries."""
        return (
            self.messages
            + len(self.deleted)
            + len(self.closed)
            + len(self.warned)
            + len(self.warnings_cancelled)
            + len(self.scheduled)
            + self.logs
        )

    def counts(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "messages": self.messages,
            "held_messages": self.held_messages,
            "mailboxes_deleted": len(self.deleted),
            "deletions_held": len(self.deletion_held),
            "mailboxes_closed": len(self.closed),
            "mailboxes_warned": len(self.warned),
            "notices": self.notices,
            "warnings_cancelled": len(self.warnings_cancelled),
            "deletions_scheduled": len(self.scheduled),
            "functional_logs": self.logs,
            "stopped": self.stopped,
        }

    def lines(self) -> list[str]:
        """A summary for people, one fact per line (long lists are cut)."""
        verb = "would be" if self.dry_run else "were"
        out = [f"retention as of {self.as_of:%Y-%m-%d %H:%M:%S} UTC"]
        out.append(
            f"messages past retention: {self.messages} {verb} purged"
            + (f" from {self.message_mailboxes} mailboxes" if self.message_mailboxes else "")
        )
        shown = [f"{address}: {count}" for address, count in self.messages_by_mailbox]
        out.extend(_listed(shown, self.message_mailboxes))
        if self.held_messages:
            out.append(f"kept by a legal hold: {self.held_messages} messages in")
            out.extend(_listed(self.held_mailboxes))
        if self.scheduled:
            out.append(
                f"closed without a deletion date: {len(self.scheduled)} {verb} given one "
                "(archive period from their closure)"
            )
        out.append(f"closed mailboxes past their deletion date: {len(self.deleted)} {verb} deleted")
        out.extend(_listed(self.deleted))
        if self.deletion_held:
            out.append("deletion postponed by a legal hold:")
            out.extend(_listed(self.deletion_held))
        out.append(f"inactive mailboxes: {len(self.closed)} {verb} closed")
        out.extend(_listed(self.closed))
        out.append(f"inactive mailboxes: {len(self.warned)} {verb} warned")
        out.extend(_listed(self.warned))
        if self.notices:
            out.append(f"notices owed to notification addresses: {self.notices}")
        if self.warnings_cancelled:
            out.append(f"warnings cancelled by a login: {len(self.warnings_cancelled)}")
            out.extend(_listed(self.warnings_cancelled))
        out.append(f"functional log entries past retention: {self.logs} {verb} purged")
        if self.stopped:
            out.append("stopped before the end (the next run continues)")
        return out


def _listed(items: Sequence[str], total: int | None = None) -> list[str]:
    """Indented lines for the first SHOWN_MAILBOXES items, and how many more there are."""
    lines = [f"  {item}" for item in items[:SHOWN_MAILBOXES]]
    more = (len(items) if total is None else total) - len(lines)
    if more > 0:
        lines.append(f"  … and {more} more")
    return lines


def _since(column: Any, when: Any) -> ColumnElement[bool]:
    """`column >= when`, false (not NULL) when the column is NULL."""
    return and_(column.is_not(None), column >= when)


def _used_since(when: Any) -> ColumnElement[bool]:
    """The mailbox was used at or after `when`: its own login, a reopening, or (for a
    shared ORG/CAB box, used through its members' own logins) a member's login."""
    member = aliased(Mailbox)
    member_login = exists().where(
        MailboxMember.mailbox_id == Mailbox.id,
        MailboxMember.member_mailbox_id == member.id,
        _since(member.last_login_at, when),
    )
    return or_(_since(Mailbox.last_login_at, when), _since(Mailbox.reopened_at, when), member_login)


def _retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in RETRYABLE


async def _with_retries(work: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(RETRIES):
        try:
            return await work()
        except DBAPIError as exc:
            if not _retryable(exc) or attempt == RETRIES - 1:
                raise
            log.info("retention batch conflicted with another writer; trying again")
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class RetentionJobs:
    def __init__(
        self,
        store: MessageStore,
        policy: RetentionPolicy,
        *,
        domain: str,
        actor: str = SYSTEM_ACTOR,
    ) -> None:
        self.store = store
        self.database = store.database
        self.policy = policy
        self.domain = domain
        self.actor = actor
        self.functional_log = FunctionalLogStore(store.database)
        # SQLite has one writer at a time, and a waiting writer polls for the lock: a
        # pause after each batch, in proportion to it, lets deliveries in. PostgreSQL
        # locks rows, so deliveries go on beside a batch: no pause there.
        self.pause_ratio = SQLITE_PAUSE_RATIO if store.database.is_sqlite else 0.0

    async def _stage(self, session: AsyncSession, changes: Sequence[Change]) -> None:
        """`ChangeHub.stage`, but in one statement on PostgreSQL: a purge batch touches
        hundreds of folders, and one NOTIFY round trip each took most of its time."""
        if not changes or not self.store.hub.distributed:
            await self.store.hub.stage(session, changes)
            return
        await session.execute(
            text(
                "SELECT pg_notify(:channel, payload) "
                "FROM unnest(CAST(:payloads AS text[])) AS payload"
            ),
            {"channel": CHANNEL, "payloads": [change.encode() for change in changes]},
        )

    async def _breathe(self, began: float) -> None:
        """Between two batches: a pause in proportion to the batch that began at `began`."""
        await asyncio.sleep(self.pause_ratio * (time.monotonic() - began))

    # -- selections shared by plan and run ------------------------------------------------

    def _warned_and_used(self) -> ColumnElement[bool]:
        return and_(
            Mailbox.state == "active",
            Mailbox.inactivity_warned_at.is_not(None),
            _used_since(Mailbox.inactivity_warned_at),
        )

    def _to_close(self, now: datetime) -> ColumnElement[bool]:
        return and_(
            Mailbox.state == "active",
            Mailbox.inactivity_warned_at.is_not(None),
            Mailbox.inactivity_warned_at <= self.policy.grace_cutoff(now),
            not_(_used_since(Mailbox.inactivity_warned_at)),
        )

    def _to_warn(self, now: datetime) -> ColumnElement[bool]:
        cutoff = self.policy.inactivity_cutoff(now)
        return and_(
            Mailbox.state == "active",
            Mailbox.inactivity_warned_at.is_(None),
            Mailbox.kind.in_(sorted(self.policy.inactivity_kinds)),
            Mailbox.created_at < cutoff,
            not_(_used_since(cutoff)),
        )

    @staticmethod
    def _undated_closure() -> ColumnElement[bool]:
        return and_(Mailbox.state == "closed", Mailbox.deletion_due_at.is_(None))

    def _undated_due(self, row: Mailbox, now: datetime) -> tuple[ClosureKind, datetime]:
        kind: ClosureKind = "deletion" if row.closure_kind == "deletion" else "archive"
        return kind, self.policy.deletion_due(kind, row.closed_at or now)

    @staticmethod
    def _due_for_deletion(now: datetime) -> ColumnElement[bool]:
        return and_(
            Mailbox.state == "closed",
            Mailbox.deletion_due_at.is_not(None),
            Mailbox.deletion_due_at <= now,
        )

    @staticmethod
    def _held_mailboxes() -> Any:
        # Written `WHERE legal_hold`: the one form SQLite matches to the partial index.
        return select(Mailbox.id).where(Mailbox.legal_hold)

    async def _addresses(self, condition: ColumnElement[bool]) -> list[str]:
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Mailbox.address).where(condition).order_by(Mailbox.address)
            )
            return list(rows)

    # -- dry run ------------------------------------------------------------------------

    async def plan(self, now: datetime) -> Report:
        """What `run(now)` would do, computed without changing anything."""
        report = Report(as_of=now, dry_run=True)
        async with self.database.read() as session:
            undated = list(await session.scalars(select(Mailbox).where(self._undated_closure())))
        report.scheduled = sorted(row.address for row in undated)
        report.warnings_cancelled = await self._addresses(self._warned_and_used())
        report.closed = await self._addresses(self._to_close(now))
        report.warned = await self._addresses(self._to_warn(now))
        due = self._due_for_deletion(now)
        report.deleted = await self._addresses(and_(due, Mailbox.legal_hold.is_(False)))
        report.deletion_held = await self._addresses(and_(due, Mailbox.legal_hold))
        for row in undated:  # dated by this run, and possibly due at once
            if self._undated_due(row, now)[1] <= now:
                (report.deletion_held if row.legal_hold else report.deleted).append(row.address)
        cutoff = self.policy.message_cutoff(now)
        async with self.database.read() as session:
            if report.warned:
                report.notices = int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Patient)
                        .join(Mailbox, Mailbox.id == Patient.mailbox_id)
                        .where(self._to_warn(now), Patient.notification_address.is_not(None))
                    )
                    or 0
                )
            per_mailbox = (
                await session.execute(
                    select(Mailbox.address, Mailbox.legal_hold, func.count(Message.id))
                    .join(Mailbox, Mailbox.id == Message.mailbox_id)
                    .where(
                        Message.received_at < cutoff,
                        # mailboxes deleted whole in this run are not counted twice
                        Mailbox.address.not_in(report.deleted),
                    )
                    .group_by(Mailbox.address, Mailbox.legal_hold)
                    .order_by(func.count(Message.id).desc(), Mailbox.address)
                )
            ).all()
        purgeable = [(address, int(n)) for address, held, n in per_mailbox if not held]
        report.messages = sum(n for _address, n in purgeable)
        report.message_mailboxes = len(purgeable)
        report.messages_by_mailbox = purgeable[:SHOWN_MAILBOXES]
        held = [(address, int(n)) for address, is_held, n in per_mailbox if is_held]
        report.held_messages = sum(n for _address, n in held)
        report.held_mailboxes = sorted(address for address, _n in held)
        report.logs = await self.functional_log.count_older_than(self.policy.log_cutoff(now))
        return report

    # -- the run ------------------------------------------------------------------------

    async def run(
        self,
        now: datetime,
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Report:
        """Apply every rule due at `now`; stops early (between batches) on `should_stop`."""
        report = Report(as_of=now, dry_run=False)
        advance = progress or (lambda _n: None)
        stop = should_stop or (lambda: False)
        steps: Sequence[Callable[[], Awaitable[None]]] = (
            lambda: self._schedule_undated(now, report, advance, stop),
            lambda: self._cancel_warnings(now, report, advance, stop),
            lambda: self._close_inactive(now, report, advance, stop),
            lambda: self._warn_inactive(now, report, advance, stop),
            lambda: self._delete_due(now, report, advance, stop),
            lambda: self._purge_messages(now, report, advance, stop),
            lambda: self._sweep_orphan_keys(report),
        )
        for step in steps:
            if stop():
                report.stopped = True
                return report
            await step()
        if stop():
            report.stopped = True
            return report
        report.logs = await self.functional_log.purge(
            self.policy.log_cutoff(now), batch_size=self.policy.batch_size, on_batch=advance
        )
        await self.functional_log.record(
            actor=self.actor,
            action="retention.run",
            at=now,
            request=f"as of {now.isoformat()}",
            result=", ".join(f"{k}={v}" for k, v in report.counts().items() if k != "as_of"),
        )
        return report

    async def _mailbox_batches(
        self, condition: ColumnElement[bool], stop: Callable[[], bool], report: Report
    ) -> AsyncIterator[list[Mailbox]]:
        """Mailboxes matching `condition`, a batch at a time, in id order (keyset).

        Each mailbox costs an audit record (and a warning, a message delivery): batches of
        mailboxes are smaller than batches of messages, to keep transactions short.
        """
        last_id = 0
        while True:
            if stop():
                report.stopped = True
                return
            async with self.database.read() as session:
                rows = list(
                    await session.scalars(
                        select(Mailbox)
                        .where(condition, Mailbox.id > last_id)
                        .order_by(Mailbox.id)
                        .limit(min(self.policy.batch_size, MAILBOX_BATCH))
                    )
                )
            if not rows:
                return
            began = time.monotonic()
            yield rows
            last_id = rows[-1].id
            await self._breathe(began)

    async def _recheck(
        self, session: AsyncSession, mailbox_id: int, condition: ColumnElement[bool]
    ) -> Mailbox | None:
        """The mailbox, locked, if it still matches `condition` inside this transaction."""
        return await session.scalar(
            select(Mailbox).where(Mailbox.id == mailbox_id, condition).with_for_update()
        )

    async def _schedule_undated(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        """Mailboxes closed without a deletion date (by other means than `Lifecycle`) get
        one: an archive closure counted from when they were closed."""
        condition = self._undated_closure()
        async for batch in self._mailbox_batches(condition, stop, report):
            async with self.database.write() as session, session.begin():
                for candidate in batch:
                    row = await self._recheck(session, candidate.id, condition)
                    if row is None:
                        continue
                    kind, due = self._undated_due(row, now)
                    row.closure_kind, row.deletion_due_at = kind, due
                    await note(
                        session,
                        actor=self.actor,
                        action="mailbox.deletion_scheduled",
                        mailbox=row,
                        details={"reason": kind, "deletion_due_at": due.isoformat()},
                        now=now,
                        summary=f"closed without a deletion date; data deleted on {due:%Y-%m-%d}",
                    )
                    report.scheduled.append(row.address)
            advance(len(batch))

    async def _cancel_warnings(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        condition = self._warned_and_used()
        async for batch in self._mailbox_batches(condition, stop, report):
            async with self.database.write() as session, session.begin():
                for candidate in batch:
                    row = await self._recheck(session, candidate.id, condition)
                    if row is None:
                        continue
                    warned_at = row.inactivity_warned_at
                    row.inactivity_warned_at = None
                    await note(
                        session,
                        actor=self.actor,
                        action="mailbox.inactivity_cleared",
                        mailbox=row,
                        details={"warned_at": warned_at.isoformat() if warned_at else None},
                        now=now,
                        summary="used again after the inactivity warning",
                    )
                    report.warnings_cancelled.append(row.address)
            advance(len(batch))

    async def _close_inactive(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        condition = self._to_close(now)
        due = self.policy.deletion_due("inactivity", now)
        async for batch in self._mailbox_batches(condition, stop, report):
            async with self.database.write() as session, session.begin():
                for candidate in batch:
                    row = await self._recheck(session, candidate.id, condition)
                    if row is None:
                        continue
                    row.state, row.closed_at = "closed", now
                    row.closure_kind, row.deletion_due_at = "inactivity", due
                    warned = row.inactivity_warned_at
                    await note(
                        session,
                        actor=self.actor,
                        action="mailbox.close",
                        mailbox=row,
                        details={
                            "reason": "inactivity",
                            "warned_at": warned.isoformat() if warned else None,
                            "deletion_due_at": due.isoformat(),
                        },
                        now=now,
                        summary=f"close (inactivity); data deleted on {due:%Y-%m-%d}",
                    )
                    report.closed.append(row.address)
            advance(len(batch))

    async def _warn_inactive(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        condition = self._to_warn(now)
        closes_on = self.policy.closure_after_warning(now)
        async for batch in self._mailbox_batches(condition, stop, report):
            delivered: list[int] = []
            for box in batch:
                last = max(
                    d for d in (box.created_at, box.last_login_at, box.reopened_at) if d is not None
                )
                raw = inactivity_warning(
                    address=box.address,
                    domain=self.domain,
                    last_activity=last,
                    closes_on=closes_on,
                    now=now,
                )
                try:
                    await self.store.store_batch([StoreRequest(raw, [AppendTarget(box.id)])])
                except NotFound:  # closed or deleted meanwhile: nothing to warn
                    continue
                delivered.append(box.id)
            async with self.database.write() as session, session.begin():
                notify = dict(
                    (
                        await session.execute(
                            select(Patient.mailbox_id, Patient.notification_address).where(
                                Patient.mailbox_id.in_(delivered),
                                Patient.notification_address.is_not(None),
                            )
                        )
                    ).all()
                )
                for mailbox_id in delivered:
                    row = await self._recheck(session, mailbox_id, Mailbox.state == "active")
                    if row is None:
                        continue
                    row.inactivity_warned_at = now
                    address = notify.get(mailbox_id)
                    if address:
                        session.add(
                            LifecycleNotice(
                                mailbox_id=mailbox_id,
                                kind="inactivity-warning",
                                address=address,
                                created_at=now,
                            )
                        )
                        report.notices += 1
                    await note(
                        session,
                        actor=self.actor,
                        action="mailbox.inactivity_warning",
                        mailbox=row,
                        details={
                            "closes_on": closes_on.isoformat(),
                            "notification_address": bool(address),
                        },
                        now=now,
                        summary=(
                            f"warned in the mailbox; closure on {closes_on:%Y-%m-%d}"
                            + ("; notice owed to the notification address" if address else "")
                        ),
                    )
                    report.warned.append(row.address)
            advance(len(batch))

    async def _delete_due(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        due = self._due_for_deletion(now)
        report.deletion_held = await self._addresses(and_(due, Mailbox.legal_hold))
        condition = and_(due, Mailbox.legal_hold.is_(False))
        async for batch in self._mailbox_batches(condition, stop, report):
            for candidate in batch:
                if stop():
                    report.stopped = True
                    return
                if await self._delete_mailbox(candidate.id, condition, now):
                    report.deleted.append(candidate.address)
                advance(1)

    async def _delete_mailbox(
        self, mailbox_id: int, condition: ColumnElement[bool], now: datetime
    ) -> bool:
        """Crypto-shred one closed mailbox: audit, key, rows in batches, the mailbox."""
        async with self.database.write() as session, session.begin():
            row = await self._recheck(session, mailbox_id, condition)
            if row is None:
                return False
            messages = await session.scalar(
                select(func.count()).where(Message.mailbox_id == mailbox_id)
            )
            key_id = row.key_id
            # Written before the key goes: a deletion is never missing from the trail
            # (if the run stops half-way, the next one finishes it and writes it again).
            await note(
                session,
                actor=self.actor,
                action="mailbox.delete",
                mailbox=row,
                details={
                    "reason": row.closure_kind,
                    "closed_at": row.closed_at.isoformat() if row.closed_at else None,
                    "deletion_due_at": (
                        row.deletion_due_at.isoformat() if row.deletion_due_at else None
                    ),
                    "messages": int(messages or 0),
                    "method": "crypto-shredding",
                },
                now=now,
                summary=f"deleted ({row.closure_kind}): {int(messages or 0)} messages",
            )
        await self.store.keys.delete(key_id)
        await self.store.keys.delete_mailbox_data_keys(mailbox_id)
        while True:
            began = time.monotonic()
            async with self.database.write() as session, session.begin():
                ids = list(
                    await session.scalars(
                        select(Message.id)
                        .where(Message.mailbox_id == mailbox_id)
                        .limit(self.policy.batch_size)
                    )
                )
                if ids:
                    await session.execute(
                        delete(FolderEntry).where(FolderEntry.message_id.in_(ids))
                    )
                    await session.execute(delete(Message).where(Message.id.in_(ids)))
            if len(ids) < self.policy.batch_size:
                break
            await self._breathe(began)
        try:
            await self.store.shred_mailbox(mailbox_id)
        except NotFound:
            pass
        return True

    async def _purge_messages(
        self, now: datetime, report: Report, advance: Progress, stop: Callable[[], bool]
    ) -> None:
        cutoff = self.policy.message_cutoff(now)
        cursor: datetime | None = None
        mailboxes: set[int] = set()
        while True:
            if stop():
                report.stopped = True
                break
            began = time.monotonic()
            batch = await _with_retries(partial(self._purge_batch, cutoff, cursor, now))
            if batch is None:
                break
            self.store.hub.committed(batch.changes)
            report.messages += batch.purged
            mailboxes.update(batch.mailboxes)
            cursor = batch.last_received
            advance(batch.purged)
            await self._breathe(began)
        report.message_mailboxes = len(mailboxes)
        async with self.database.read() as session:
            held = (
                await session.execute(
                    select(Mailbox.address, func.count(Message.id))
                    .join(Mailbox, Mailbox.id == Message.mailbox_id)
                    .where(Message.received_at < cutoff, Mailbox.legal_hold)
                    .group_by(Mailbox.address)
                    .order_by(Mailbox.address)
                )
            ).all()
        report.held_messages = sum(int(n) for _address, n in held)
        report.held_mailboxes = [address for address, _n in held]

    async def _sweep_orphan_keys(self, report: Report) -> None:
        # By the clock, not the run's `now`: the grace protects commits under way.
        report.orphan_keys = await self.store.sweep_orphan_keys()
        if report.orphan_keys:
            log.info("deleted %d orphan data keys", report.orphan_keys)

    async def _purge_batch(
        self, cutoff: datetime, cursor: datetime | None, now: datetime
    ) -> _PurgedBatch | None:
        """Purge up to one batch of expired messages in one transaction.

        Candidates are taken oldest first from `cursor` on (so that messages kept by a
        legal hold are not scanned again by every batch). Their mailboxes are locked FOR
        SHARE, so that a legal hold set meanwhile is seen, and their folders in id order
        before the entries are re-read and removed. Every statement handles the whole
        batch: the transaction stays short however many mailboxes it touches.
        """
        async with self.database.write() as session, session.begin():
            query = select(Message.id, Message.mailbox_id, Message.received_at).where(
                Message.received_at < cutoff,
                Message.mailbox_id.not_in(self._held_mailboxes()),
            )
            if cursor is not None:
                query = query.where(Message.received_at >= cursor)
            candidates = (
                await session.execute(
                    query.order_by(Message.received_at).limit(self.policy.batch_size)
                )
            ).all()
            if not candidates:
                return None
            boxes = dict(
                (
                    await session.execute(
                        select(Mailbox.id, Mailbox.address)
                        .where(
                            Mailbox.id.in_({c.mailbox_id for c in candidates}),
                            Mailbox.legal_hold.is_(False),
                        )
                        .with_for_update(read=True)
                    )
                ).all()
            )
            chosen = [c for c in candidates if c.mailbox_id in boxes]
            ids: list[uuid.UUID] = [c.id for c in chosen]
            # Crypto-shred first, in the key store: every copy of the message store loses
            # these messages. Should this transaction then fail, the rows stay, unreadable
            # and still expired: the next batch or run removes them.
            await self.store.keys.delete_data_keys(ids)
            folder_ids = list(
                await session.scalars(
                    select(Folder.id)
                    .where(
                        Folder.id.in_(
                            select(FolderEntry.folder_id).where(FolderEntry.message_id.in_(ids))
                        )
                    )
                    .order_by(Folder.id)
                    .with_for_update()
                )
            )
            bumped = (
                await session.execute(
                    update(Folder)
                    .where(Folder.id.in_(folder_ids))
                    .values(highestmodseq=Folder.highestmodseq + 1)
                    .returning(Folder.id, Folder.mailbox_id, Folder.highestmodseq)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            modseqs = {int(folder_id): int(modseq) for folder_id, _box, modseq in bumped}
            changes = [
                Change(int(box), int(folder_id), int(modseq), "expunge")
                for folder_id, box, modseq in bumped
            ]
            entries = (
                await session.execute(
                    select(FolderEntry.folder_id, FolderEntry.uid)
                    .where(FolderEntry.message_id.in_(ids))
                    .with_for_update()
                )
            ).all()
            if entries:
                # RFC 7162 §3.2.10: a QRESYNC client learns these UIDs vanished.
                await session.execute(
                    insert(Expunged),
                    [
                        {"folder_id": e.folder_id, "uid": e.uid, "modseq": modseqs[e.folder_id]}
                        for e in entries
                    ],
                )
            await session.execute(
                delete(FolderEntry)
                .where(FolderEntry.message_id.in_(ids))
                .execution_options(synchronize_session=False)
            )
            await session.execute(
                delete(Message)
                .where(Message.id.in_(ids))
                .execution_options(synchronize_session=False)
            )
            by_mailbox = Counter(c.mailbox_id for c in chosen)
            # One chained audit record per batch: the rule is the same for everyone, and a
            # digest of the purged message ids ties the record to exactly those rows.
            digest = hashlib.sha256(b"".join(sorted(i.bytes for i in ids))).hexdigest()
            await audit.record(
                session,
                actor=self.actor,
                action="retention.purge",
                details={
                    "rule": f"{self.policy.message_years} years",
                    "received_before": cutoff.isoformat(),
                    "messages": len(ids),
                    "mailboxes": len(by_mailbox),
                    "message_ids_sha256": digest,
                    "as_of": now.isoformat(),
                },
            )
            # Per mailbox, for the functional log (and so for a patient's access history).
            await functional_log.record_many(
                session,
                actor=self.actor,
                action="retention.purge",
                at=now,
                entries=[
                    (
                        boxes[mailbox_id],
                        f"messages received before {cutoff:%Y-%m-%d %H:%M:%S}",
                        f"purged: {count}",
                    )
                    for mailbox_id, count in sorted(by_mailbox.items())
                ],
            )
            await self._stage(session, changes)
        return _PurgedBatch(len(ids), candidates[-1].received_at, set(by_mailbox), changes)


@dataclass(frozen=True)
class _PurgedBatch:
    purged: int
    last_received: datetime
    mailboxes: set[int]
    changes: list[Change]
