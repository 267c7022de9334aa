"""Credentials and failed-login counters: the SQL side of authentication.

A mailbox has at most one active password (kind `password`) and any number of application
passwords (kind `app`), one per device label. Nothing here hashes or verifies a secret;
`mailserver.auth` does that and hands this store the hashes.

Failed logins are counted in `auth_failures` per account (subject: the address) and per
remote (subject: the client IP), shared by every node. Each update reads the counter row
`FOR UPDATE` inside one write transaction, so concurrent failures on several PostgreSQL
nodes are all counted; a missing row is created with `INSERT … ON CONFLICT DO NOTHING`
first, so two nodes creating it at once both end up updating the same row. On SQLite the
writer session already holds the database write lock from `BEGIN IMMEDIATE`.

Every timestamp comes from the injected clock `now` (timezone-aware UTC), so tests can move
time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.messages import Conflict, NotFound, StoreError
from storage.models import AuthFailure, Credential, Mailbox, utcnow

Clock = Callable[[], datetime]
CredentialKind = Literal["password", "app"]
Scope = Literal["account", "remote"]

CREDENTIAL_KINDS: tuple[CredentialKind, ...] = ("password", "app")
SCOPES: tuple[Scope, ...] = ("account", "remote")
LABEL_MAX = 128
SUBJECT_MAX = 320  # auth_failures.subject is String(320)


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as listed to its owner or an administrator: no hash."""

    id: int
    mailbox_id: int
    kind: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def of(cls, row: Credential) -> CredentialInfo:
        return cls(
            row.id,
            row.mailbox_id,
            row.kind,
            row.label,
            row.created_at,
            row.last_used_at,
            row.revoked_at,
        )


@dataclass(frozen=True)
class ActiveCredential:
    """An active credential with what verification needs (the hash is kept out of repr)."""

    id: int
    mailbox_id: int
    kind: str
    label: str
    secret_hash: str = field(repr=False)


@dataclass(frozen=True)
class FailurePolicy:
    """How many failures within `window_seconds` lock a subject, and for how long."""

    limit: int
    window_seconds: int
    lockout_seconds: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_seconds < 1 or self.lockout_seconds < 1:
            raise ValueError("failure policy values must be positive")


@dataclass(frozen=True)
class LockState:
    """Failures counted in the current window, and the end of the lock if one holds now."""

    failures: int
    locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None


UNLOCKED = LockState(0, None)


def subject_key(subject: str) -> str:
    """The stored form of a counter subject (addresses are case-insensitive)."""
    return subject.strip().lower()[:SUBJECT_MAX]


class CredentialStore:
    def __init__(self, database: Database, *, now: Clock = utcnow) -> None:
        self.database = database
        self._now = now

    def now(self) -> datetime:
        value = self._now()
        if value.tzinfo is None:
            raise ValueError("the credential store clock must return timezone-aware datetimes")
        return value

    # -- credentials -------------------------------------------------------------------

    async def add_password(self, mailbox_id: int, secret_hash: str) -> CredentialInfo:
        """The mailbox's new password; the previous active one is revoked in the same commit."""
        return await self.add(mailbox_id, "password", secret_hash)

    async def add_app_password(
        self, mailbox_id: int, label: str, secret_hash: str
    ) -> CredentialInfo:
        """An application password for one device; labels are unique among active ones."""
        return await self.add(mailbox_id, "app", secret_hash, label=label)

    async def add(
        self, mailbox_id: int, kind: str, secret_hash: str, *, label: str = ""
    ) -> CredentialInfo:
        if kind not in CREDENTIAL_KINDS:
            raise StoreError(f"credential kind must be one of {', '.join(CREDENTIAL_KINDS)}")
        if not secret_hash:
            raise StoreError("a credential needs a hash")
        label = label.strip()
        if kind == "app" and not label:
            raise StoreError("an application password needs a device label")
        if kind == "password" and label:
            raise StoreError("a password has no label")
        if len(label) > LABEL_MAX:
            raise StoreError(f"a device label has at most {LABEL_MAX} characters")
        now = self.now()
        async with self.database.write() as session, session.begin():
            # The mailbox row lock orders concurrent credential changes of one mailbox, so
            # the "one password" and "unique label" rules hold across PostgreSQL nodes.
            await self._lock_mailbox(session, mailbox_id)
            active = Credential.revoked_at.is_(None)
            if kind == "password":
                await session.execute(
                    update(Credential)
                    .where(
                        Credential.mailbox_id == mailbox_id,
                        Credential.kind == "password",
                        active,
                    )
                    .values(revoked_at=now)
                    .execution_options(synchronize_session=False)
                )
            else:
                taken = await session.scalar(
                    select(Credential.id).where(
                        Credential.mailbox_id == mailbox_id,
                        Credential.kind == "app",
                        Credential.label == label,
                        active,
                    )
                )
                if taken is not None:
                    raise Conflict(f"an active application password is already named {label!r}")
            row = Credential(
                mailbox_id=mailbox_id,
                kind=kind,
                label=label,
                secret_hash=secret_hash,
                created_at=now,
            )
            session.add(row)
            await session.flush()
            return CredentialInfo.of(row)

    @staticmethod
    async def _lock_mailbox(session: AsyncSession, mailbox_id: int) -> None:
        found = await session.scalar(
            select(Mailbox.id).where(Mailbox.id == mailbox_id).with_for_update()
        )
        if found is None:
            raise NotFound(f"no mailbox with id {mailbox_id}")

    async def list_credentials(
        self, mailbox_id: int, *, active_only: bool = False
    ) -> list[CredentialInfo]:
        """The mailbox's credentials, oldest first, revoked ones included unless asked."""
        query = select(Credential).where(Credential.mailbox_id == mailbox_id)
        if active_only:
            query = query.where(Credential.revoked_at.is_(None))
        async with self.database.read() as session:
            rows = await session.scalars(query.order_by(Credential.id))
            return [CredentialInfo.of(row) for row in rows]

    async def get(self, credential_id: int) -> CredentialInfo:
        async with self.database.read() as session:
            row = await session.get(Credential, credential_id)
            if row is None:
                raise NotFound(f"no credential with id {credential_id}")
            return CredentialInfo.of(row)

    async def revoke(self, credential_id: int) -> CredentialInfo:
        """Revoke a credential; revoking one already revoked keeps its first revocation."""
        now = self.now()
        async with self.database.write() as session, session.begin():
            row = await session.scalar(
                select(Credential).where(Credential.id == credential_id).with_for_update()
            )
            if row is None:
                raise NotFound(f"no credential with id {credential_id}")
            if row.revoked_at is None:
                row.revoked_at = now
            return CredentialInfo.of(row)

    async def active(self, mailbox_id: int) -> list[ActiveCredential]:
        """Active credentials with their hashes: the password first, then newest apps."""
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Credential)
                .where(Credential.mailbox_id == mailbox_id, Credential.revoked_at.is_(None))
                .order_by(Credential.id.desc())
            )
            found = [
                ActiveCredential(row.id, row.mailbox_id, row.kind, row.label, row.secret_hash)
                for row in rows
            ]
        return sorted(found, key=lambda c: c.kind != "password")

    async def mark_used(self, credential_id: int) -> None:
        async with self.database.write() as session, session.begin():
            await session.execute(
                update(Credential)
                .where(Credential.id == credential_id)
                .values(last_used_at=self.now())
                .execution_options(synchronize_session=False)
            )

    async def rehash(self, credential_id: int, old_hash: str, new_hash: str) -> bool:
        """Replace a hash in place, only if it is still `old_hash` and not revoked."""
        async with self.database.write() as session, session.begin():
            result = await session.execute(
                update(Credential)
                .where(
                    Credential.id == credential_id,
                    Credential.secret_hash == old_hash,
                    Credential.revoked_at.is_(None),
                )
                .values(secret_hash=new_hash)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    # -- failed logins -----------------------------------------------------------------

    async def lock_state(
        self, scope: Scope, subject: str, *, window_seconds: int | None = None
    ) -> LockState:
        """The lock end if a lock holds now (store clock), and the failures counted.

        With `window_seconds`, failures of a window that has ended count as none.
        """
        _check_scope(scope)
        now = self.now()
        async with self.database.read() as session:
            row = await session.get(AuthFailure, (scope, subject_key(subject)))
            if row is None:
                return UNLOCKED
            return _state(row, now, window_seconds)

    async def record_failure(self, scope: Scope, subject: str, policy: FailurePolicy) -> LockState:
        """Count one failure; lock the subject when the policy's limit is reached."""
        (state,) = await self.record_failures([(scope, subject, policy)])
        return state

    async def record_failures(
        self, failures: list[tuple[Scope, str, FailurePolicy]]
    ) -> list[LockState]:
        """Count one failure for each subject, in one transaction (rows locked in key order)."""
        for scope, _subject, _policy in failures:
            _check_scope(scope)
        now = self.now()
        keyed = [(scope, subject_key(subject), policy) for scope, subject, policy in failures]
        order = sorted(range(len(keyed)), key=lambda i: (keyed[i][0], keyed[i][1]))
        states: dict[int, LockState] = {}
        async with self.database.write() as session, session.begin():
            for i in order:
                scope, subject, policy = keyed[i]
                states[i] = await self._count_failure(session, scope, subject, policy, now)
        return [states[i] for i in range(len(keyed))]

    async def _count_failure(
        self,
        session: AsyncSession,
        scope: str,
        subject: str,
        policy: FailurePolicy,
        now: datetime,
    ) -> LockState:
        query = (
            select(AuthFailure)
            .where(AuthFailure.scope == scope, AuthFailure.subject == subject)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = await session.scalar(query)
        if row is None:
            dialect_insert = sqlite.insert if self.database.is_sqlite else postgresql.insert
            await session.execute(
                dialect_insert(AuthFailure)
                .values(
                    scope=scope,
                    subject=subject,
                    failures=0,
                    window_started_at=now,
                    locked_until=None,
                )
                .on_conflict_do_nothing(index_elements=["scope", "subject"])
            )
            row = await session.scalar(query)
            assert row is not None
        locked_now = row.locked_until is not None and row.locked_until > now
        lock_over = row.locked_until is not None and row.locked_until <= now
        window_over = now >= row.window_started_at + timedelta(seconds=policy.window_seconds)
        if locked_now:
            row.failures += 1  # the lock holds; its end does not move
        elif row.failures == 0 or window_over or lock_over:
            row.failures = 1
            row.window_started_at = now
            row.locked_until = None
        else:
            row.failures += 1
        if not locked_now and row.failures >= policy.limit:
            row.locked_until = now + timedelta(seconds=policy.lockout_seconds)
        await session.flush()
        return _state(row, now, policy.window_seconds)

    async def clear_account_failures(self, address: str) -> None:
        """Forget an account's failures (after a successful login); remote counters stay."""
        async with self.database.write() as session, session.begin():
            await self._clear_account(session, address)

    async def record_success(self, credential_id: int, address: str) -> None:
        """Mark the credential used and clear the account's failures, in one commit."""
        now = self.now()
        async with self.database.write() as session, session.begin():
            await session.execute(
                update(Credential)
                .where(Credential.id == credential_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            await self._clear_account(session, address)

    @staticmethod
    async def _clear_account(session: AsyncSession, address: str) -> None:
        await session.execute(
            delete(AuthFailure)
            .where(AuthFailure.scope == "account", AuthFailure.subject == subject_key(address))
            .execution_options(synchronize_session=False)
        )

    async def purge_failures(self, older_than_seconds: int) -> int:
        """Delete counters whose window started long ago and that hold no lock; how many."""
        now = self.now()
        cutoff = now - timedelta(seconds=older_than_seconds)
        async with self.database.write() as session, session.begin():
            result = await session.execute(
                delete(AuthFailure)
                .where(
                    AuthFailure.window_started_at < cutoff,
                    (AuthFailure.locked_until.is_(None)) | (AuthFailure.locked_until <= now),
                )
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise StoreError(f"failure scope must be one of {', '.join(SCOPES)}")


def _state(row: AuthFailure, now: datetime, window_seconds: int | None = None) -> LockState:
    locked_until = row.locked_until if row.locked_until and row.locked_until > now else None
    failures = row.failures
    if locked_until is None and row.locked_until is not None:
        failures = 0  # a lock that ended starts a fresh window at the next failure
    elif (
        locked_until is None
        and window_seconds is not None
        and now >= row.window_started_at + timedelta(seconds=window_seconds)
    ):
        failures = 0
    return LockState(failures, locked_until)
