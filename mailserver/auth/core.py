"""One authentication decision for SMTP submission, IMAP and the web.

`Authenticator.authenticate` checks, in this order: the remote's lock, the account's lock
(both before any argon2 work), the success cache, then the secret against the mailbox's
password and active application passwords, and last the mailbox state. Unknown addresses
and wrong secrets give the same answer, "bad-credentials", cost one argon2 verification
(against a dummy hash for unknown addresses) and count a failure for the account and the
remote. Only stable reason codes leave this module; secrets are never logged.

The success cache works like Dovecot's auth cache: after a successful verification,
HMAC-SHA256(process key, address NUL secret) maps to the mailbox and credential for
`cache_seconds`, so a client that logs in again and again skips argon2 (locks and the
mailbox state are still checked). The cache is per process: credential changes made
through this Authenticator drop the mailbox's entries at once; changes made on another
node take effect here at the latest when the entries expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mailserver.auth.passwords import Passwords, generate_app_password
from mailserver.config import AuthSection
from storage.credentials import (
    ActiveCredential,
    CredentialInfo,
    CredentialStore,
    FailurePolicy,
    LockState,
)
from storage.messages import MailboxInfo, MessageStore, StoreError
from storage.models import utcnow

log = logging.getLogger("hygie.auth")

Reason = Literal["ok", "bad-credentials", "locked-account", "locked-remote", "mailbox-closed"]
Clock = Callable[[], datetime]

ADDRESS_MAX = 320
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    mailbox: MailboxInfo | None
    reason: Reason
    retry_after: int | None = None  # seconds, with the locked-* reasons
    credential_id: int | None = None  # the credential that matched, when ok


@dataclass(frozen=True)
class IssuedAppPassword:
    """A new application password: shown once to its owner, never stored in clear."""

    credential: CredentialInfo
    secret: str = field(repr=False)


BAD_CREDENTIALS = AuthResult(False, None, "bad-credentials")
MAILBOX_CLOSED = AuthResult(False, None, "mailbox-closed")


def normalize_address(address: str) -> str:
    return address.strip().lower()


@dataclass(frozen=True)
class _Cached:
    mailbox_id: int
    credential_id: int
    expires: datetime


class _SuccessCache:
    """Recent successful logins, keyed by a keyed hash of address and secret."""

    def __init__(self, seconds: int, now: Clock, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.seconds = seconds
        self._now = now
        self._max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, _Cached] = {}
        # Bumped by every invalidation: a verification that began before one does not cache.
        self.epoch = 0

    def _digest(self, address: str, secret: str) -> bytes:
        message = address.encode("utf-8", "surrogatepass") + b"\0"
        message += secret.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, address: str, secret: str) -> _Cached | None:
        if self.seconds <= 0:
            return None
        digest = self._digest(address, secret)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires <= self._now():
            del self._entries[digest]
            return None
        return entry

    def put(self, address: str, secret: str, mailbox_id: int, credential_id: int) -> None:
        if self.seconds <= 0:
            return
        now = self._now()
        if len(self._entries) >= self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v.expires > now}
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]  # oldest first
        expires = now + timedelta(seconds=self.seconds)
        self._entries[self._digest(address, secret)] = _Cached(mailbox_id, credential_id, expires)

    def forget(self, address: str, secret: str) -> None:
        self._entries.pop(self._digest(address, secret), None)

    def forget_mailbox(self, mailbox_id: int) -> None:
        self.epoch += 1
        self._entries = {k: v for k, v in self._entries.items() if v.mailbox_id != mailbox_id}

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    def __init__(
        self,
        store: MessageStore,
        credentials: CredentialStore,
        settings: AuthSection,
        *,
        now: Clock = utcnow,
        passwords: Passwords | None = None,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.settings = settings
        self.passwords = passwords if passwords is not None else Passwords(settings)
        self._now = now
        self.cache = _SuccessCache(settings.cache_seconds, now)
        self.account_policy = FailurePolicy(
            settings.failures_per_account,
            settings.failure_window_seconds,
            settings.lockout_seconds,
        )
        self.remote_policy = FailurePolicy(
            settings.failures_per_remote,
            settings.failure_window_seconds,
            settings.lockout_seconds,
        )
        self._dummy_hash: str | None = None

    # -- authentication ----------------------------------------------------------------

    async def authenticate(
        self, address: str, secret: str, *, remote: str, protocol: str
    ) -> AuthResult:
        address = normalize_address(address)
        result = await self._decide(address, secret, remote)
        if result.ok:
            log.info("auth ok address=%r remote=%r protocol=%r", address, remote, protocol)
        else:
            log.warning(
                "auth refused reason=%s address=%r remote=%r protocol=%r",
                result.reason,
                address,
                remote,
                protocol,
            )
        return result

    async def _decide(self, address: str, secret: str, remote: str) -> AuthResult:
        remote_lock = await self.credentials.lock_state("remote", remote)
        if remote_lock.locked:
            return self._locked("locked-remote", remote_lock)
        account_lock = await self.credentials.lock_state("account", address)
        if account_lock.locked:
            return self._locked("locked-account", account_lock)

        cached = self.cache.get(address, secret)
        if cached is not None:
            mailbox = await self._cached_mailbox(cached, address)
            if mailbox is not None:
                return await self._accept(mailbox, cached.credential_id, address)
            self.cache.forget(address, secret)

        epoch = self.cache.epoch
        mailbox = None
        if len(address) <= ADDRESS_MAX:
            mailbox = await self.store.mailbox_by_address(address)
        candidates = await self.credentials.active(mailbox.id) if mailbox is not None else []
        match = await asyncio.to_thread(self._verify, candidates, secret)
        if mailbox is None or match is None:
            await self.credentials.record_failures(
                [
                    ("account", address, self.account_policy),
                    ("remote", remote, self.remote_policy),
                ]
            )
            return BAD_CREDENTIALS
        if self.passwords.needs_rehash(match.secret_hash):
            new_hash = await asyncio.to_thread(self.passwords.hash, secret)
            await self.credentials.rehash(match.id, match.secret_hash, new_hash)
        result = await self._accept(mailbox, match.id, address)
        if result.ok and self.cache.epoch == epoch:
            self.cache.put(address, secret, mailbox.id, match.id)
        return result

    def _verify(
        self, candidates: Sequence[ActiveCredential], secret: str
    ) -> ActiveCredential | None:
        """Runs in a thread: the first credential `secret` matches, after argon2 work."""
        if not candidates:
            # The same argon2 cost as a wrong password, so timing shows no missing address.
            self.passwords.verify(self._dummy(), secret)
            return None
        for candidate in candidates:
            if self.passwords.verify(candidate.secret_hash, secret):
                return candidate
        return None

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.passwords.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    async def _cached_mailbox(self, cached: _Cached, address: str) -> MailboxInfo | None:
        try:
            mailbox = await self.store.mailbox(cached.mailbox_id)
        except StoreError:
            return None
        return mailbox if mailbox.address == address else None

    async def _accept(self, mailbox: MailboxInfo, credential_id: int, address: str) -> AuthResult:
        if mailbox.state != "active":
            self.cache.forget_mailbox(mailbox.id)
            return MAILBOX_CLOSED
        await self.credentials.record_success(credential_id, address)
        await self.store.record_login(mailbox.id, self._now())
        return AuthResult(True, mailbox, "ok", None, credential_id)

    def _locked(self, reason: Reason, state: LockState) -> AuthResult:
        assert state.locked_until is not None
        remaining = (state.locked_until - self._now()).total_seconds()
        return AuthResult(False, None, reason, max(1, math.ceil(remaining)))

    # -- credential management -----------------------------------------------------------

    async def set_password(self, mailbox_id: int, secret: str) -> CredentialInfo:
        """The mailbox's new password (the old one is revoked); cached logins are dropped."""
        if not secret:
            raise ValueError("a password cannot be empty")
        secret_hash = await asyncio.to_thread(self.passwords.hash, secret)
        try:
            return await self.credentials.add_password(mailbox_id, secret_hash)
        finally:
            self.forget(mailbox_id)

    async def add_app_password(self, mailbox_id: int, label: str) -> IssuedAppPassword:
        """A generated application password for the device `label`; the secret is returned
        once, here, and only its hash is stored."""
        secret = generate_app_password()
        secret_hash = await asyncio.to_thread(self.passwords.hash, secret)
        try:
            info = await self.credentials.add_app_password(mailbox_id, label, secret_hash)
        finally:
            self.forget(mailbox_id)
        return IssuedAppPassword(info, secret)

    async def revoke(self, credential_id: int) -> CredentialInfo:
        info = await self.credentials.revoke(credential_id)
        self.forget(info.mailbox_id)
        return info

    def forget(self, mailbox_id: int) -> None:
        """Drop this process's cached logins of a mailbox (after any credential change)."""
        self.cache.forget_mailbox(mailbox_id)
