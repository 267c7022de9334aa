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
    false,
    text,
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
    # Retention (retention/): why and until when a closed mailbox is kept, legal hold,
    # inactivity warning. A hold keeps every message and the mailbox itself from deletion.
    closure_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    deletion_due_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True, index=True
    )
    reopened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    inactivity_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    legal_hold_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    legal_hold_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Holds are rare: a partial index finds them without scanning every mailbox.
    __table_args__ = (
        Index(
            "ix_mailboxes_legal_hold",
            "id",
            sqlite_where=text("legal_hold"),
            postgresql_where=text("legal_hold"),
        ),
    )


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
    # Only for messages stored before the key store held data keys (until moved there).
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
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


class MessageKey(KeyStoreBase):
    """A message's data key, wrapped by its mailbox key. Deleting the row shreds the
    message in every copy of the message store (which holds only ciphertext)."""

    __tablename__ = "message_keys"

    message_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(BigInteger, index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


# -- the trust space (the `directory` package's tables) -------------------------------


class Professional(MessageBase):
    """A health professional, identified nationally by `8`+RPPS or `0`+ADELI."""

    __tablename__ = "professionals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    national_id: Mapped[str] = mapped_column(String(32), unique=True)
    id_type: Mapped[str] = mapped_column(String(2))  # 8 RPPS, 0 ADELI
    civility: Mapped[str | None] = mapped_column(String(16), nullable=True)
    family_name: Mapped[str] = mapped_column(String(256))
    given_name: Mapped[str] = mapped_column(String(256), default="")
    category_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    category_label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    profession_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    profession_label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    specialty_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    specialty_label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="local")  # local, national
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Organisation(MessageBase):
    """A structure (an establishment, a practice, a lab), e.g. identified by FINESS."""

    __tablename__ = "organisations"
    __table_args__ = (
        Index("uq_organisations_structure", "structure_id_type", "structure_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    structure_id_type: Mapped[str] = mapped_column(String(8))
    structure_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(512), default="")
    trade_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    address_lines: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    postal_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    locality: Mapped[str | None] = mapped_column(String(256), nullable=True)
    department: Mapped[str | None] = mapped_column(String(8), nullable=True)
    country: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="local")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DirectoryEntry(MessageBase):
    """An address of the trust space: one of ours (linked to its Mailbox) or another
    operator's (from the national extraction). Address and type never change."""

    __tablename__ = "directory_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # PER, ORG, APP, CAB, PAT
    is_local: Mapped[bool] = mapped_column(Boolean, default=True)
    mailbox_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    professional_id: Mapped[int | None] = mapped_column(
        ForeignKey("professionals.id", ondelete="SET NULL"), nullable=True, index=True
    )
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    service: Mapped[str | None] = mapped_column(String(256), nullable=True)
    display_name: Mapped[str] = mapped_column(String(512), default="")
    red_list: Mapped[bool] = mapped_column(Boolean, default=False)  # "liste rouge"
    dematerialisation: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="local")  # local, national
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MailboxMember(MessageBase):
    """A professional's mailbox that may use an ORG or CAB mailbox (a shared box)."""

    __tablename__ = "mailbox_members"

    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True
    )
    member_mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Patient(MessageBase):
    """A patient with a mailbox derived from their INS, and their identity traits."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), unique=True
    )
    ins: Mapped[str] = mapped_column(String(15), unique=True)
    ins_oid: Mapped[str] = mapped_column(String(32))
    birth_family_name: Mapped[str] = mapped_column(String(256))
    given_names: Mapped[str] = mapped_column(String(256))
    birth_date: Mapped[str] = mapped_column(String(10))  # ISO 8601 date
    sex: Mapped[str] = mapped_column(String(1))
    birth_place_code: Mapped[str | None] = mapped_column(String(5), nullable=True)
    notification_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LegalRepresentative(MessageBase):
    """A patient mailbox that sees a minor's mailbox (except items hidden from it)."""

    __tablename__ = "legal_representatives"

    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True
    )
    representative_mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TrustedDomain(MessageBase):
    """One line of the operator whitelist: a domain and one certificate DN for it."""

    __tablename__ = "trusted_domains"
    __table_args__ = (
        Index("uq_trusted_domains_domain_dn", "domain", "certificate_dn", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    certificate_dn: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str] = mapped_column(String(1024), default="")
    responsible_contact: Mapped[str] = mapped_column(String(320), default="")
    support_contact: Mapped[str] = mapped_column(String(320), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="national")  # national, manual
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PatientConversation(MessageBase):
    """Whether a professional has written to a patient, and whether they closed it.

    Patients may write only to professionals with an open conversation (MISSION, "Patient
    messaging rules"); `X-MSS-MES: FIN` or a `[FIN]` subject closes it.
    """

    __tablename__ = "patient_conversations"

    patient_mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True
    )
    professional_address: Mapped[str] = mapped_column(String(320), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AdminToken(MessageBase):
    """A bearer token of the admin API; only its SHA-256 is stored."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditRecord(MessageBase):
    """The audit trail: append-only, each record chained to the previous by its hash."""

    __tablename__ = "audit_trail"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512), default="", index=True)
    details: Mapped[str] = mapped_column(String(4096), default="{}")  # JSON, never content
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    previous_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64), unique=True)


class DirectoryImportRow(MessageBase):
    """Addresses seen by a running national-extraction import (to find removals)."""

    __tablename__ = "directory_import_rows"

    import_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)


# -- the outbound queue ------------------------------------------------------------------


class OutboundMessage(MessageBase):
    """A message waiting to be relayed to other operators, encrypted under the key of
    the local mailbox that sent it (the queue holds no plaintext either)."""

    __tablename__ = "outbound_messages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    mail_from: Mapped[str] = mapped_column(String(320))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    header_ct: Mapped[bytes] = mapped_column(LargeBinary)
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboundRecipient(MessageBase):
    """One recipient of a queued message and where its delivery stands."""

    __tablename__ = "outbound_recipients"
    __table_args__ = (Index("ix_outbound_recipients_due", "state", "next_attempt_at"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("outbound_messages.id", ondelete="CASCADE"), primary_key=True
    )
    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_reply: Mapped[str] = mapped_column(String(1024), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# -- retention -----------------------------------------------------------------------------


class FunctionalLog(MessageBase):
    """Functional logs: who did what, when, with a summary of the request and its result
    (never content). Kept six months by default (`storage.functional_log`)."""

    __tablename__ = "functional_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512), default="")
    request: Mapped[str] = mapped_column(String(2048), default="")
    result: Mapped[str] = mapped_column(String(512), default="ok")
    node: Mapped[str] = mapped_column(String(128), default="")


class RetentionRun(MessageBase):
    """One run of the retention jobs, whichever node ran it (the scheduler skips a run
    when another node finished one recently)."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(128))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="running")  # running, ok, failed
    summary: Mapped[str] = mapped_column(String(4096), default="{}")  # JSON counts


class LifecycleNotice(MessageBase):
    """A notice owed to an address outside the trust space (a patient's notification
    address), e.g. an inactivity warning. It carries no health content; whoever sends
    it sets `sent_at`."""

    __tablename__ = "lifecycle_notices"
    __table_args__ = (Index("ix_lifecycle_notices_pending", "sent_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))  # inactivity-warning
    address: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
