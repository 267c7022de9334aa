"""Argon2id password hashing with the `[auth]` parameters, and application passwords.

Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) carrying their own
parameters, so a hash made under older settings still verifies; `needs_rehash` tells when
it should be replaced after the next successful login. These calls are CPU-bound and slow
on purpose: async callers run them in a thread.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from mailserver.config import AuthSection

# 32 symbols without the look-alikes 0/o and 1/l: 5 bits each, 16 symbols = 80 bits.
APP_PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # noqa: S105 (not a secret)
APP_PASSWORD_GROUPS = 4
APP_PASSWORD_GROUP_SIZE = 4


def _utf8(secret: str) -> bytes:
    # surrogatepass: a secret decoded with errors never makes hashing or verifying raise.
    return secret.encode("utf-8", "surrogatepass")


def password_hasher(settings: AuthSection) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


class Passwords:
    """Hash, verify and check hashes against the configured argon2id parameters."""

    def __init__(self, settings: AuthSection) -> None:
        self.hasher = password_hasher(settings)

    def hash(self, secret: str) -> str:
        return self.hasher.hash(_utf8(secret))

    def verify(self, secret_hash: str, secret: str) -> bool:
        """True if `secret` matches; a wrong secret or an unreadable hash gives False."""
        try:
            return self.hasher.verify(secret_hash, _utf8(secret))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, secret_hash: str) -> bool:
        """True if the hash was not made with the configured type and parameters."""
        try:
            return self.hasher.check_needs_rehash(secret_hash)
        except (InvalidHashError, ValueError):
            return True


def generate_app_password() -> str:
    """A random application password such as `k7mq-x2dn-pa9w-etc4` (80 bits)."""
    groups = (
        "".join(secrets.choice(APP_PASSWORD_ALPHABET) for _ in range(APP_PASSWORD_GROUP_SIZE))
        for _ in range(APP_PASSWORD_GROUPS)
    )
    return "-".join(groups)
