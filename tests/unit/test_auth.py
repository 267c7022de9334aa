"""Authentication: passwords, application passwords, lockouts, the success cache, argon2id.

Every test runs on each configured backend (SQLite, and PostgreSQL when
HYGIE_TEST_DATABASE_URL is set). Time is an injected clock; argon2 work is counted by a
`Passwords` subclass handed to the Authenticator, never by replacing the database.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import Type, extract_parameters
from sqlalchemy import update

from mailserver.auth.core import Authenticator, AuthResult
from mailserver.auth.passwords import APP_PASSWORD_ALPHABET, Passwords, generate_app_password
from mailserver.config import AuthSection
from storage.credentials import CredentialStore, FailurePolicy
from storage.messages import Conflict, MailboxInfo, MessageStore
from storage.models import Mailbox

FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}
SETTINGS = AuthSection(
    failures_per_account=3,
    failures_per_remote=5,
    failure_window_seconds=600,
    lockout_seconds=300,
    cache_seconds=60,
    **FAST,
)
ALICE = "alice@mssante.example"
BOB = "bob@mssante.example"
PASSWORD = "correct horse battery staple"
REMOTE = "192.0.2.10"


class Clock:
    def __init__(self) -> None:
        self.current = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class CountingPasswords(Passwords):
    """Real argon2id, with the number of verifications counted."""

    def __init__(self, settings: AuthSection) -> None:
        super().__init__(settings)
        self.verifications = 0

    def verify(self, secret_hash: str, secret: str) -> bool:
        self.verifications += 1
        return super().verify(secret_hash, secret)


@dataclass
class World:
    store: MessageStore
    credentials: CredentialStore
    auth: Authenticator
    passwords: CountingPasswords
    clock: Clock

    def authenticator(self, settings: AuthSection) -> Authenticator:
        """Another process's Authenticator on the same database and clock."""
        return Authenticator(self.store, self.credentials, settings, now=self.clock)

    async def login(
        self, address: str = ALICE, secret: str = PASSWORD, *, remote: str = REMOTE
    ) -> AuthResult:
        return await self.auth.authenticate(address, secret, remote=remote, protocol="imap")

    async def mailbox(self, address: str = ALICE, password: str | None = PASSWORD) -> MailboxInfo:
        mailbox = await self.store.create_mailbox(address, "PER")
        if password is not None:
            await self.auth.set_password(mailbox.id, password)
        return mailbox


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(store: MessageStore, clock: Clock) -> World:
    credentials = CredentialStore(store.database, now=clock)
    passwords = CountingPasswords(SETTINGS)
    auth = Authenticator(store, credentials, SETTINGS, now=clock, passwords=passwords)
    return World(store, credentials, auth, passwords, clock)


async def close_mailbox(store: MessageStore, mailbox_id: int) -> None:
    # The store has no "close" operation yet; the test sets the state the admin would.
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(Mailbox).where(Mailbox.id == mailbox_id).values(state="closed")
        )


# --- passwords ---------------------------------------------------------------------------


async def test_right_password_is_accepted_and_the_login_recorded(world: World) -> None:
    mailbox = await world.mailbox()

    result = await world.login(" Alice@MSSante.example ")

    assert result.ok and result.reason == "ok" and result.retry_after is None
    assert result.mailbox is not None and result.mailbox.id == mailbox.id
    assert (await world.store.mailbox(mailbox.id)).last_login_at == world.clock()
    (password,) = await world.credentials.list_credentials(mailbox.id)
    assert password.id == result.credential_id and password.last_used_at == world.clock()


async def test_wrong_password_is_refused_as_bad_credentials(world: World) -> None:
    await world.mailbox()

    result = await world.login(secret="correct horse battery stapler")

    assert result == AuthResult(False, None, "bad-credentials")
    assert (await world.credentials.lock_state("account", ALICE)).failures == 1


async def test_unknown_address_is_refused_like_a_wrong_password_after_one_argon2_run(
    world: World,
) -> None:
    await world.mailbox()
    world.passwords.verifications = 0

    unknown = await world.login("nobody@mssante.example")
    wrong = await world.login(secret="nope")

    assert unknown == wrong == AuthResult(False, None, "bad-credentials")
    assert world.passwords.verifications == 2
    state = await world.credentials.lock_state("account", "nobody@mssante.example")
    assert state.failures == 1
    assert (await world.credentials.lock_state("remote", REMOTE)).failures == 2


async def test_mailbox_without_credentials_refuses_every_secret(world: World) -> None:
    await world.mailbox(password=None)

    assert (await world.login(secret="")).reason == "bad-credentials"
    assert world.passwords.verifications == 1


async def test_new_password_revokes_the_old_one(world: World) -> None:
    mailbox = await world.mailbox()
    world.clock.advance(10)

    await world.auth.set_password(mailbox.id, "a brand new passphrase")

    assert (await world.login()).reason == "bad-credentials"
    assert (await world.login(secret="a brand new passphrase")).ok
    old, new = await world.credentials.list_credentials(mailbox.id)
    assert (old.kind, old.active, old.revoked_at) == ("password", False, world.clock())
    assert (new.kind, new.active) == ("password", True)
    active = await world.credentials.list_credentials(mailbox.id, active_only=True)
    assert active == [new]


async def test_listed_credentials_carry_no_hash(world: World) -> None:
    mailbox = await world.mailbox()
    await world.auth.add_app_password(mailbox.id, "phone")

    listed = await world.credentials.list_credentials(mailbox.id)

    assert [c.kind for c in listed] == ["password", "app"]
    for info in listed:
        assert not any("hash" in name for name in vars(info))
    active = await world.credentials.active(mailbox.id)
    assert all(c.secret_hash not in repr(c) for c in active)


async def test_argon2_hash_is_argon2id_with_the_configured_parameters(world: World) -> None:
    mailbox = await world.mailbox()

    (credential,) = await world.credentials.active(mailbox.id)
    parameters = extract_parameters(credential.secret_hash)

    assert credential.secret_hash.startswith("$argon2id$")
    assert parameters.type is Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (1, 8, 1)


async def test_login_with_outdated_parameters_rehashes_in_place(world: World) -> None:
    mailbox = await world.mailbox()
    (before,) = await world.credentials.active(mailbox.id)
    stronger = SETTINGS.model_copy(update={"argon2_time_cost": 2, "argon2_memory_kib": 16})
    upgraded = world.authenticator(stronger)

    assert upgraded.passwords.needs_rehash(before.secret_hash)
    assert (await upgraded.authenticate(ALICE, PASSWORD, remote=REMOTE, protocol="smtp")).ok

    (after,) = await world.credentials.active(mailbox.id)
    assert after.id == before.id and after.secret_hash != before.secret_hash
    parameters = extract_parameters(after.secret_hash)
    assert (parameters.time_cost, parameters.memory_cost) == (2, 16)
    assert not upgraded.passwords.needs_rehash(after.secret_hash)
    assert (
        await world.authenticator(stronger).authenticate(
            ALICE, PASSWORD, remote=REMOTE, protocol="smtp"
        )
    ).ok


async def test_empty_password_cannot_be_set(world: World) -> None:
    mailbox = await world.mailbox(password=None)

    with pytest.raises(ValueError, match="empty"):
        await world.auth.set_password(mailbox.id, "")


# --- application passwords ----------------------------------------------------------------


async def test_app_password_is_accepted_until_revoked(world: World) -> None:
    mailbox = await world.mailbox()
    issued = await world.auth.add_app_password(mailbox.id, "iPhone")

    assert issued.secret not in repr(issued)
    result = await world.login(secret=issued.secret)
    assert result.ok and result.credential_id == issued.credential.id
    assert (await world.login()).ok  # the password still works beside it

    revoked = await world.auth.revoke(issued.credential.id)

    assert revoked.revoked_at == world.clock()
    assert (await world.login(secret=issued.secret)).reason == "bad-credentials"
    assert (await world.login()).ok


async def test_app_password_labels_are_unique_among_active_ones(world: World) -> None:
    mailbox = await world.mailbox()
    first = await world.auth.add_app_password(mailbox.id, "laptop")

    with pytest.raises(Conflict):
        await world.auth.add_app_password(mailbox.id, " laptop ")
    other = await world.auth.add_app_password(mailbox.id, "tablet")
    await world.auth.revoke(first.credential.id)
    again = await world.auth.add_app_password(mailbox.id, "laptop")

    assert again.credential.label == "laptop"
    assert (await world.login(secret=other.secret)).ok
    assert (await world.login(secret=again.secret)).ok
    assert (await world.login(secret=first.secret)).reason == "bad-credentials"


async def test_app_password_belongs_to_its_own_mailbox_only(world: World) -> None:
    alice = await world.mailbox()
    await world.mailbox(BOB, "bob's own passphrase")
    issued = await world.auth.add_app_password(alice.id, "phone")

    assert (await world.login(BOB, issued.secret)).reason == "bad-credentials"


def test_generated_app_passwords_are_typable_and_carry_80_bits() -> None:
    generated = {generate_app_password() for _ in range(200)}

    assert len(generated) == 200
    pattern = re.compile(rf"^[{APP_PASSWORD_ALPHABET}]{{4}}(-[{APP_PASSWORD_ALPHABET}]{{4}}){{3}}$")
    assert all(pattern.match(secret) for secret in generated)
    assert len(set(APP_PASSWORD_ALPHABET)) ** 16 >= 2**80


# --- lockouts ----------------------------------------------------------------------------


async def test_account_locks_after_the_limit_and_unlocks_when_the_lockout_ends(
    world: World,
) -> None:
    await world.mailbox()
    for _ in range(SETTINGS.failures_per_account):
        assert (await world.login(secret="guess")).reason == "bad-credentials"

    world.clock.advance(100)
    locked = await world.login()

    assert locked.reason == "locked-account" and not locked.ok
    assert locked.retry_after == SETTINGS.lockout_seconds - 100
    world.clock.advance(SETTINGS.lockout_seconds - 100)
    assert (await world.login()).ok


async def test_failures_outside_the_window_do_not_add_up(world: World) -> None:
    await world.mailbox()
    for _ in range(SETTINGS.failures_per_account - 1):
        await world.login(secret="guess")

    world.clock.advance(SETTINGS.failure_window_seconds)
    await world.login(secret="guess")

    state = await world.credentials.lock_state("account", ALICE)
    assert state.failures == 1 and not state.locked
    assert (await world.login()).ok


async def test_expired_lock_starts_a_fresh_count(world: World) -> None:
    await world.mailbox()
    for _ in range(SETTINGS.failures_per_account):
        await world.login(secret="guess")
    world.clock.advance(SETTINGS.lockout_seconds)

    assert (await world.login(secret="guess")).reason == "bad-credentials"

    assert (await world.credentials.lock_state("account", ALICE)).failures == 1
    assert (await world.login()).ok


async def test_locked_account_refuses_the_right_password_without_running_argon2(
    world: World,
) -> None:
    await world.mailbox()
    for _ in range(SETTINGS.failures_per_account):
        await world.login(secret="guess")
    world.passwords.verifications = 0

    result = await world.login(remote="198.51.100.7")

    assert result.reason == "locked-account" and result.mailbox is None
    assert world.passwords.verifications == 0


async def test_remote_locks_across_accounts(world: World) -> None:
    await world.mailbox()
    await world.mailbox(BOB, "bob's own passphrase")
    targets = [f"user{n}@mssante.example" for n in range(SETTINGS.failures_per_remote)]
    for address in targets:
        assert (await world.login(address, "guess")).reason == "bad-credentials"
    world.passwords.verifications = 0

    from_there = await world.login(BOB, "bob's own passphrase")
    elsewhere = await world.login(BOB, "bob's own passphrase", remote="203.0.113.5")

    assert from_there.reason == "locked-remote"
    assert from_there.retry_after == SETTINGS.lockout_seconds
    assert world.passwords.verifications == 1  # only the login from elsewhere
    assert elsewhere.ok
    world.clock.advance(SETTINGS.lockout_seconds)
    assert (await world.login()).ok


async def test_remote_lock_is_checked_before_the_account_lock(world: World) -> None:
    await world.mailbox()
    policy = FailurePolicy(1, 600, 300)
    await world.credentials.record_failure("account", ALICE, policy)
    await world.credentials.record_failure("remote", REMOTE, policy)

    assert (await world.login()).reason == "locked-remote"
    assert (await world.login(remote="203.0.113.5")).reason == "locked-account"


async def test_success_clears_the_account_counter_but_not_the_remote_one(
    world: World,
) -> None:
    await world.mailbox()
    for _ in range(SETTINGS.failures_per_account - 1):
        await world.login(secret="guess")

    assert (await world.login()).ok

    assert (await world.credentials.lock_state("account", ALICE)).failures == 0
    remote = await world.credentials.lock_state("remote", REMOTE)
    assert remote.failures == SETTINGS.failures_per_account - 1
    for _ in range(SETTINGS.failures_per_account - 1):
        await world.login(secret="guess")
    assert (await world.login()).ok  # the count started again after the success


async def test_concurrent_failures_are_all_counted(world: World) -> None:
    policy = FailurePolicy(limit=25, window_seconds=600, lockout_seconds=300)

    await asyncio.gather(
        *(world.credentials.record_failure("remote", "2001:db8::1", policy) for _ in range(20))
    )

    state = await world.credentials.lock_state("remote", "2001:DB8::1")
    assert state.failures == 20 and not state.locked
    await asyncio.gather(
        *(world.credentials.record_failure("remote", "2001:db8::1", policy) for _ in range(5))
    )
    assert (await world.credentials.lock_state("remote", "2001:db8::1")).locked


async def test_old_unlocked_counters_can_be_purged(world: World) -> None:
    policy = FailurePolicy(limit=1, window_seconds=60, lockout_seconds=3600)
    await world.credentials.record_failure("account", "old@mssante.example", policy)
    await world.credentials.record_failure("remote", "192.0.2.99", FailurePolicy(9, 60, 60))
    world.clock.advance(120)

    assert await world.credentials.purge_failures(60) == 1
    assert (await world.credentials.lock_state("account", "old@mssante.example")).locked


# --- mailbox state ------------------------------------------------------------------------


async def test_closed_mailbox_is_refused_even_with_the_right_password(world: World) -> None:
    mailbox = await world.mailbox()
    await close_mailbox(world.store, mailbox.id)

    result = await world.login()

    assert result == AuthResult(False, None, "mailbox-closed")
    assert (await world.login(secret="guess")).reason == "bad-credentials"
    assert (await world.store.mailbox(mailbox.id)).last_login_at is None


# --- success cache ------------------------------------------------------------------------


async def test_cached_login_skips_argon2(world: World) -> None:
    await world.mailbox()
    assert (await world.login()).ok
    world.passwords.verifications = 0

    again = await world.login()

    assert again.ok and again.mailbox is not None and again.mailbox.address == ALICE
    assert world.passwords.verifications == 0
    assert (await world.login(secret="guess")).reason == "bad-credentials"
    assert world.passwords.verifications == 1


async def test_password_change_invalidates_the_cache(world: World) -> None:
    mailbox = await world.mailbox()
    assert (await world.login()).ok

    await world.auth.set_password(mailbox.id, "a brand new passphrase")
    world.passwords.verifications = 0

    assert (await world.login()).reason == "bad-credentials"
    assert world.passwords.verifications == 1


async def test_revoking_an_app_password_invalidates_the_cache(world: World) -> None:
    mailbox = await world.mailbox()
    issued = await world.auth.add_app_password(mailbox.id, "phone")
    assert (await world.login(secret=issued.secret)).ok

    await world.auth.revoke(issued.credential.id)

    assert (await world.login(secret=issued.secret)).reason == "bad-credentials"


async def test_cached_login_expires_after_cache_seconds(world: World) -> None:
    await world.mailbox()
    assert (await world.login()).ok
    world.clock.advance(SETTINGS.cache_seconds)
    world.passwords.verifications = 0

    assert (await world.login()).ok
    assert world.passwords.verifications == 1


async def test_cached_login_still_checks_the_account_lock(world: World) -> None:
    await world.mailbox()
    assert (await world.login()).ok
    policy = FailurePolicy(limit=1, window_seconds=600, lockout_seconds=30)
    await world.credentials.record_failure("account", ALICE, policy)
    world.passwords.verifications = 0

    assert (await world.login()).reason == "locked-account"
    world.clock.advance(30)
    assert (await world.login()).ok
    assert world.passwords.verifications == 0


async def test_cached_login_still_checks_the_mailbox_state(world: World) -> None:
    mailbox = await world.mailbox()
    assert (await world.login()).ok
    await close_mailbox(world.store, mailbox.id)
    world.passwords.verifications = 0

    assert (await world.login()).reason == "mailbox-closed"
    assert world.passwords.verifications == 0


# --- logging ------------------------------------------------------------------------------


async def test_log_names_address_remote_protocol_and_reason_but_never_the_secret(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.mailbox()
    caplog.set_level(logging.INFO, logger="hygie.auth")

    await world.login(secret="wrong-secret-value")
    await world.auth.authenticate(ALICE, PASSWORD, remote=REMOTE, protocol="submission")

    records = [r for r in caplog.records if r.name == "hygie.auth"]
    assert len(records) == 2
    refused, accepted = (r.getMessage() for r in records)
    assert "bad-credentials" in refused and "'imap'" in refused
    assert ALICE in accepted and REMOTE in accepted and "'submission'" in accepted
    assert not any(s in caplog.text for s in ("wrong-secret-value", PASSWORD))
