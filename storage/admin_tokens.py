"""Bearer tokens of the admin API, each bound to one role.

A token is shown once, when it is created; the database keeps only its SHA-256, so a
copy of the database lets no one call the API. Tokens are 32 random bytes: hashing them
without a salt is safe, and lets a request find its token by an indexed lookup.
Creating and revoking a token are written to the audit trail in the same transaction.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from storage import audit
from storage.db import Database
from storage.messages import Conflict, NotFound, StoreError
from storage.models import AdminToken, utcnow

DIRECTORY_ADMIN = "directory-admin"
OPERATOR_ADMIN = "operator-admin"
AUDITOR = "auditor"
ROLES = (DIRECTORY_ADMIN, OPERATOR_ADMIN, AUDITOR)

TOKEN_PREFIX = "hya_"  # noqa: S105 - a prefix that makes leaked tokens easy to spot
TOKEN_BYTES = 32
# A name becomes part of the audit actor (`admin:<name>`): keep it plain.
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Recording every use would make each API call a write; a minute is precise enough.
LAST_USED_PRECISION = dt.timedelta(minutes=1)


class AdminTokenError(StoreError):
    """A token request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class AdminTokenInfo:
    name: str
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @property
    def actor(self) -> str:
        """Who acts, for the audit trail."""
        return f"admin:{self.name}"

    def usable(self, at: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or at < self.expires_at)

    @classmethod
    def of(cls, row: AdminToken) -> AdminTokenInfo:
        return cls(
            row.name, row.role, row.created_at, row.expires_at, row.revoked_at, row.last_used_at
        )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    return TOKEN_PREFIX + raw


class AdminTokenStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(
        self, name: str, role: str, expires_at: dt.datetime | None = None, *, actor: str
    ) -> tuple[AdminTokenInfo, str]:
        """A new token for `role`; the token itself is returned here and never again."""
        if not TOKEN_NAME.fullmatch(name):
            raise AdminTokenError(
                f"token name {name!r} is not allowed: use 1 to 128 letters, digits, '.', '_' "
                "or '-', starting with a letter or a digit"
            )
        if role not in ROLES:
            raise AdminTokenError(f"role {role!r} does not exist: use one of {', '.join(ROLES)}")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise AdminTokenError("the expiry needs a time zone (use UTC)")
            if expires_at <= utcnow():
                raise AdminTokenError("the expiry is in the past")
        token = new_token()
        row = AdminToken(
            name=name, role=role, token_sha256=token_digest(token), expires_at=expires_at
        )
        try:
            async with self.database.write() as session, session.begin():
                taken = await session.scalar(select(AdminToken.id).where(AdminToken.name == name))
                if taken is not None:
                    raise Conflict(f"an admin token named {name!r} already exists")
                session.add(row)
                await session.flush()
                await audit.record(
                    session,
                    actor=actor,
                    action="admin-token.create",
                    target=name,
                    details={"role": role, "expires_at": expires_at},
                )
        except IntegrityError:
            # Another node created the same name between our check and our insert.
            raise Conflict(f"an admin token named {name!r} already exists") from None
        return AdminTokenInfo.of(row), token

    async def authenticate(self, token: str) -> AdminTokenInfo | None:
        """The token's holder, or None if it is unknown, revoked or expired."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_digest(token)
        async with self.database.read() as session:
            row = await session.scalar(select(AdminToken).where(AdminToken.token_sha256 == digest))
        now = utcnow()
        if row is None or not AdminTokenInfo.of(row).usable(now):
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
            async with self.database.write() as session, session.begin():
                await session.execute(
                    update(AdminToken).where(AdminToken.id == row.id).values(last_used_at=now)
                )
            row.last_used_at = now
        return AdminTokenInfo.of(row)

    async def list(self) -> list[AdminTokenInfo]:
        async with self.database.read() as session:
            rows = await session.scalars(select(AdminToken).order_by(AdminToken.name))
            return [AdminTokenInfo.of(row) for row in rows]

    async def revoke(self, name: str, *, actor: str) -> AdminTokenInfo:
        """Stop a token from working, at once and for good."""
        async with self.database.write() as session, session.begin():
            row = await session.scalar(select(AdminToken).where(AdminToken.name == name))
            if row is None:
                raise NotFound(f"no admin token named {name!r}")
            if row.revoked_at is not None:
                when = f"{row.revoked_at:%Y-%m-%d %H:%M} UTC"
                raise Conflict(f"admin token {name!r} was already revoked on {when}")
            row.revoked_at = utcnow()
            await audit.record(
                session,
                actor=actor,
                action="admin-token.revoke",
                target=name,
                details={"role": row.role},
            )
            return AdminTokenInfo.of(row)
