"""Tables of the message store and, apart, of the key store.

Vocabulary: a `Mailbox` is an MSSanté address (a "BAL") with its own key; a `Folder` is
what IMAP calls a mailbox (INBOX, Sent…); a `Message` is one encrypted copy of a message
in one Mailbox; a `FolderEntry` is its place in a folder (UID, flags, MODSEQ).

Only what IMAP needs quickly is plain: UIDs, flags, sizes, dates, MODSEQ. Headers and
body are ciphertext (see `storage.crypto`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MessageBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class KeyStoreBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Mailbox(MessageBase):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    display_name: Mapped[str] = mapped_column(String(256), default="")
    state: Mapped[str] = mapped_column(String(16), default="active")
    key_id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True)
    # Next UIDVALIDITY for a folder of this mailbox: never reused, even for a name that
    # is deleted and created again (RFC 9051 §2.3.1.1).
    next_uidvalidity: Mapped[int] = mapped_column(BigInteger)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Folder(MessageBase):
    __tablename__ = "folders"
    __table_args__ = (Index("uq_folders_mailbox_name", "mailbox_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    special_use: Mapped[str | None] = mapped_column(String(16), nullable=True)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Message(MessageBase):
    __tablename__ = "messages"

    # Chosen by the store before encryption: the id is part of the associated data.
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    header_ct: Mapped[bytes] = mapped_column(LargeBinary)
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class FolderEntry(MessageBase):
    __tablename__ = "folder_entries"
    __table_args__ = (
        Index("ix_folder_entries_folder_modseq", "folder_id", "modseq"),
        Index("ix_folder_entries_message", "message_id"),
    )

    folder_id: Mapped[int] = mapped_column(
        ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True
    )
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    flags: Mapped[str] = mapped_column(String(2048), default="")
    modseq: Mapped[int] = mapped_column(BigInteger)
    internal_date: Mapped[datetime] = mapped_column(UTCDateTime())
    size: Mapped[int] = mapped_column(BigInteger)


class Expunged(MessageBase):
    """UIDs expunged from a folder, with the MODSEQ of their removal (RFC 7162 §3.2.10)."""

    __tablename__ = "expunged"
    __table_args__ = (Index("ix_expunged_folder_modseq", "folder_id", "modseq"),)

    folder_id: Mapped[int] = mapped_column(
        ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True
    )
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)


class Credential(MessageBase):
    """A password (kind `password`) or a per-device application password (kind `app`)."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="")
    secret_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuthFailure(MessageBase):
    """Failed authentication counters, shared by every node (scope: account or remote)."""

    __tablename__ = "auth_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MailboxKey(KeyStoreBase):
    """A mailbox key, wrapped by the master key `kek_id`. Deleting the row shreds the box."""

    __tablename__ = "mailbox_keys"

    key_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    rewrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
