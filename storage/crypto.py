"""The one place that encrypts: master key → mailbox key → message data key.

Every layer is AES-256-GCM (NIST SP 800-38D) from `cryptography`, with a fresh 96-bit
random nonce per encryption and associated data that binds each ciphertext to where it
belongs, so a ciphertext moved to another message or mailbox fails to decrypt:

- a mailbox key is wrapped by the master key with AD `hygie/mailbox-key/v1|<key id>`;
- a message data key is wrapped by the mailbox key with AD naming the mailbox and message;
- header and body are encrypted by the data key with AD naming mailbox, message and part.

The master key never enters a database: it lives in a key file (mode 0600) outside it, or
in the `HYGIE_MASTER_KEY` environment variable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = 1
ENV_MASTER_KEY = "HYGIE_MASTER_KEY"


class DecryptionError(Exception):
    """A ciphertext did not authenticate: tampered, moved, or its key is gone."""


class MasterKeyError(Exception):
    """The master key file is missing, unreadable, or not a Hygie key file."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise DecryptionError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise DecryptionError("ciphertext does not authenticate") from exc


def kek_id_of(key: bytes) -> str:
    """A public identifier of a master key: a hash that reveals nothing of it."""
    return hashlib.sha256(b"hygie/kek-id/v1|" + key).hexdigest()[:16]


@dataclass
class MasterKeyring:
    """The active master key, plus older ones still needed during a rotation."""

    active_id: str
    keys: dict[str, bytes] = field(repr=False)

    @classmethod
    def generate(cls) -> MasterKeyring:
        key = new_key()
        return cls(active_id=kek_id_of(key), keys={kek_id_of(key): key})

    @classmethod
    def from_environment_value(cls, value: str) -> MasterKeyring:
        key = base64.b64decode(value, validate=True)
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"{ENV_MASTER_KEY} must be {KEY_BYTES} bytes in base64")
        return cls(active_id=kek_id_of(key), keys={kek_id_of(key): key})

    @classmethod
    def load(cls, path: Path) -> MasterKeyring:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            keys = {kid: base64.b64decode(k, validate=True) for kid, k in document["keys"].items()}
            ring = cls(active_id=document["active"], keys=keys)
        except FileNotFoundError as exc:
            raise MasterKeyError(f"master key file {path} does not exist") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MasterKeyError(f"master key file {path} is not a Hygie key file") from exc
        if ring.active_id not in ring.keys or any(
            len(k) != KEY_BYTES or kek_id_of(k) != kid for kid, k in ring.keys.items()
        ):
            raise MasterKeyError(f"master key file {path} is inconsistent")
        return ring

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600: a crash leaves the old file or the new one."""
        document = {
            "version": FORMAT_VERSION,
            "active": self.active_id,
            "keys": {kid: base64.b64encode(k).decode() for kid, k in self.keys.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]

    def wrap_mailbox_key(self, key_id: uuid.UUID, mailbox_key: bytes) -> tuple[str, bytes]:
        return self.active_id, _seal(self.active_key, mailbox_key, _mailbox_key_aad(key_id))

    def unwrap_mailbox_key(self, key_id: uuid.UUID, kek_id: str, wrapped: bytes) -> bytes:
        try:
            kek = self.keys[kek_id]
        except KeyError as exc:
            raise DecryptionError(f"master key {kek_id} is not in the keyring") from exc
        return _open(kek, wrapped, _mailbox_key_aad(key_id))


def _mailbox_key_aad(key_id: uuid.UUID) -> bytes:
    return b"hygie/mailbox-key/v1|" + key_id.bytes


def _message_aad(part: bytes, mailbox_id: int, message_id: uuid.UUID) -> bytes:
    return b"hygie/" + part + b"/v1|" + str(mailbox_id).encode() + b"|" + message_id.bytes


@dataclass(frozen=True)
class SealedMessage:
    wrapped_key: bytes
    header_ct: bytes
    body_ct: bytes


def seal_message(
    mailbox_key: bytes, mailbox_id: int, message_id: uuid.UUID, header: bytes, body: bytes
) -> SealedMessage:
    """Encrypt one message for one mailbox under a fresh data key."""
    data_key = new_key()
    return SealedMessage(
        wrapped_key=_seal(mailbox_key, data_key, _message_aad(b"data-key", mailbox_id, message_id)),
        header_ct=_seal(data_key, header, _message_aad(b"header", mailbox_id, message_id)),
        body_ct=_seal(data_key, body, _message_aad(b"body", mailbox_id, message_id)),
    )


def unwrap_data_key(
    mailbox_key: bytes, mailbox_id: int, message_id: uuid.UUID, wrapped_key: bytes
) -> bytes:
    return _open(mailbox_key, wrapped_key, _message_aad(b"data-key", mailbox_id, message_id))


def open_message(
    mailbox_key: bytes,
    mailbox_id: int,
    message_id: uuid.UUID,
    wrapped_key: bytes,
    header_ct: bytes,
    body_ct: bytes | None,
) -> tuple[bytes, bytes | None]:
    """Header and body (None when `body_ct` is None: headers only) of a sealed message."""
    data_key = unwrap_data_key(mailbox_key, mailbox_id, message_id, wrapped_key)
    header = open_part(data_key, mailbox_id, message_id, "header", header_ct)
    body = None if body_ct is None else open_part(data_key, mailbox_id, message_id, "body", body_ct)
    return header, body


def open_part(
    data_key: bytes, mailbox_id: int, message_id: uuid.UUID, part: str, sealed: bytes
) -> bytes:
    if part not in ("header", "body"):
        raise ValueError(f"unknown message part {part!r}")
    return _open(data_key, sealed, _message_aad(part.encode(), mailbox_id, message_id))
