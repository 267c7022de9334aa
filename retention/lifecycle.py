"""A mailbox's life after creation: closure, reopening, legal hold.

- Closure (MISSION "Storage and retention"): a closed mailbox refuses new mail and logins
  (state `closed`; the SMTP policy and the authenticator refuse any mailbox that is not
  `active`). Its data is deleted three months after a closure on a deletion request, or
  after the archive period for any other closure (`archive`, or `inactivity` when the
  retention jobs close an unused mailbox). The closure kind and the deletion due date are
  kept on the mailbox; until that date the closure can be cancelled (`reopen`).
- Legal hold: while set, nothing of the mailbox is deleted by the retention jobs, neither
  its expired messages nor the mailbox itself once closed. Messages the user deletes are
  still gone at once (the hold concerns what the operator deletes).

Every change is written to the audit trail and the functional log in its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from retention.policy import CLOSURE_KINDS, ClosureKind, RetentionPolicy
from storage import audit, functional_log
from storage.db import Database
from storage.messages import Conflict, NotFound, StoreError
from storage.models import Mailbox

SYSTEM_ACTOR = "system:retention"


class LifecycleError(StoreError):
    """A closure, reopening or hold that cannot be done; the message says why."""


@dataclass(frozen=True)
class MailboxLifecycle:
    """Where a mailbox stands, as an administrator sees it (never any content)."""

    address: str
    kind: str
    state: str
    created_at: datetime
    last_login_at: datetime | None
    closed_at: datetime | None
    closure_kind: str | None
    deletion_due_at: datetime | None
    inactivity_warned_at: datetime | None
    legal_hold: bool
    legal_hold_by: str | None
    legal_hold_at: datetime | None

    @classmethod
    def of(cls, row: Mailbox) -> MailboxLifecycle:
        return cls(
            row.address,
            row.kind,
            row.state,
            row.created_at,
            row.last_login_at,
            row.closed_at,
            row.closure_kind,
            row.deletion_due_at,
            row.inactivity_warned_at,
            row.legal_hold,
            row.legal_hold_by,
            row.legal_hold_at,
        )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


async def note(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    mailbox: Mailbox,
    details: dict[str, Any],
    now: datetime,
    summary: str,
) -> None:
    """One lifecycle event: an audit record and a functional-log entry, in `session`.

    The audit record carries the wall-clock time it was written, and `as_of` the instant
    the rules were applied for (the same, except when a run is simulated or caught up with
    `--now`); the functional-log entry is dated `now`, like everything the jobs decide.
    """
    await audit.record(
        session,
        actor=actor,
        action=action,
        target=mailbox.address,
        details={**details, "as_of": now.isoformat()},
    )
    await functional_log.record(
        session, actor=actor, action=action, target=mailbox.address, request=summary, at=now
    )


class Lifecycle:
    def __init__(self, database: Database, policy: RetentionPolicy) -> None:
        self.database = database
        self.policy = policy

    @staticmethod
    async def _locked(session: AsyncSession, address: str) -> Mailbox:
        row = await session.scalar(
            select(Mailbox).where(Mailbox.address == address.strip().lower()).with_for_update()
        )
        if row is None:
            raise NotFound(f"no mailbox {address}")
        return row

    async def status(self, address: str) -> MailboxLifecycle:
        async with self.database.read() as session:
            row = await session.scalar(
                select(Mailbox).where(Mailbox.address == address.strip().lower())
            )
            if row is None:
                raise NotFound(f"no mailbox {address}")
            return MailboxLifecycle.of(row)

    async def close(
        self, address: str, kind: ClosureKind, *, actor: str, now: datetime
    ) -> MailboxLifecycle:
        """Close a mailbox: no more mail or logins; data deleted at the due date.

        A deletion request on a mailbox already closed for another reason shortens its
        delay to the deletion delay (counted from now); anything else on a closed mailbox
        is refused.
        """
        if kind not in CLOSURE_KINDS:
            raise LifecycleError(f"closure kind must be one of {', '.join(CLOSURE_KINDS)}")
        async with self.database.write() as session, session.begin():
            row = await self._locked(session, address)
            due = self.policy.deletion_due(kind, now)
            if row.state == "active":
                row.state, row.closed_at = "closed", now
            elif row.state == "closed" and kind == "deletion" and row.closure_kind != "deletion":
                assert row.deletion_due_at is not None
                due = min(due, row.deletion_due_at)
            else:
                raise Conflict(
                    f"{row.address} is already {row.state} ({row.closure_kind or 'no reason'}"
                    f", data deleted on {_day(row.deletion_due_at)})"
                )
            row.closure_kind, row.deletion_due_at = kind, due
            await note(
                session,
                actor=actor,
                action="mailbox.close",
                mailbox=row,
                details={"reason": kind, "deletion_due_at": due.isoformat()},
                now=now,
                summary=f"close ({kind}); data deleted on {_day(due)}",
            )
            return MailboxLifecycle.of(row)

    async def reopen(self, address: str, *, actor: str, now: datetime) -> MailboxLifecycle:
        """Cancel a closure while its deletion delay runs: the mailbox is active again."""
        async with self.database.write() as session, session.begin():
            row = await self._locked(session, address)
            if row.state != "closed":
                raise Conflict(f"{row.address} is {row.state}, not closed: nothing to reopen")
            if row.deletion_due_at is not None and now >= row.deletion_due_at:
                raise LifecycleError(
                    f"the deletion delay of {row.address} ended on {_day(row.deletion_due_at)}: "
                    "it can no longer be reopened"
                )
            previous = {"reason": row.closure_kind, "closed_at": _iso(row.closed_at)}
            row.state, row.closed_at, row.closure_kind, row.deletion_due_at = (
                "active",
                None,
                None,
                None,
            )
            row.reopened_at, row.inactivity_warned_at = now, None
            await note(
                session,
                actor=actor,
                action="mailbox.reopen",
                mailbox=row,
                details=previous,
                now=now,
                summary="closure cancelled",
            )
            return MailboxLifecycle.of(row)

    async def hold(
        self, address: str, *, actor: str, now: datetime, reason: str = ""
    ) -> MailboxLifecycle:
        """Set a legal hold: the retention jobs delete nothing of this mailbox."""
        async with self.database.write() as session, session.begin():
            row = await self._locked(session, address)
            if row.legal_hold:
                raise Conflict(
                    f"{row.address} is already on legal hold (set by {row.legal_hold_by} "
                    f"on {_day(row.legal_hold_at)})"
                )
            row.legal_hold, row.legal_hold_by, row.legal_hold_at = True, actor, now
            await note(
                session,
                actor=actor,
                action="mailbox.hold",
                mailbox=row,
                details={"reason": reason} if reason else {},
                now=now,
                summary="legal hold set",
            )
            return MailboxLifecycle.of(row)

    async def release(self, address: str, *, actor: str, now: datetime) -> MailboxLifecycle:
        """Lift a legal hold: what expired meanwhile is purged at the next run."""
        async with self.database.write() as session, session.begin():
            row = await self._locked(session, address)
            if not row.legal_hold:
                raise Conflict(f"{row.address} is not on legal hold")
            held = {"held_by": row.legal_hold_by, "held_since": _iso(row.legal_hold_at)}
            row.legal_hold, row.legal_hold_by, row.legal_hold_at = False, None, None
            await note(
                session,
                actor=actor,
                action="mailbox.release",
                mailbox=row,
                details=held,
                now=now,
                summary="legal hold lifted",
            )
            return MailboxLifecycle.of(row)


def _day(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d}" if when is not None else "no date"
