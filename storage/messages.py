"""The message store API every protocol uses: mailboxes, folders, messages, flags.

Every write is one transaction; a message appended to several mailboxes is in all of them
or in none. Each mailbox gets its own encrypted copy (its own data key); folders of one
mailbox share that copy. Changes are published through `storage.notify`.

Data keys live in the key store, not in the message rows: they are written there before
the message store commits (an orphan key, whose message never committed, opens nothing and
is swept), and deleted when the last folder entry of their message goes, so that a copy of
the message store taken earlier cannot open a purged or expunged message. Messages stored
by earlier versions keep their key in their row until `move_data_keys` moves it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import crypto
from storage.db import Database
from storage.keystore import KeyStore
from storage.models import (
    Expunged,
    Folder,
    FolderEntry,
    Mailbox,
    Message,
    OutboundMessage,
    OutboundRecipient,
    utcnow,
)
from storage.notify import Change, ChangeHub

MAILBOX_KINDS = ("PER", "ORG", "APP", "CAB", "PAT")

# RFC 6154 special-use folders every mailbox gets, beside INBOX.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
)

FlagMode = Literal["add", "remove", "replace"]

# Data keys to write to the key store before a message-store commit:
# (mailbox id, message id, wrapped data key).
PendingKeys = list[tuple[int, uuid.UUID, bytes]]
# A data key younger than this may belong to a group whose commit is still under way.
ORPHAN_KEY_GRACE = timedelta(hours=1)
KEY_MOVE_BATCH = 500


def _data_key(
    message_id: uuid.UUID, in_row: bytes | None, in_key_store: Mapping[uuid.UUID, bytes]
) -> bytes:
    """A message's wrapped data key: in its row (stored by an earlier version, not yet
    moved) or in the key store; neither means the message has been shredded."""
    wrapped = in_row if in_row is not None else in_key_store.get(message_id)
    if wrapped is None:
        raise crypto.DecryptionError("this message's data key has been deleted (shredded)")
    return wrapped


class StoreError(Exception):
    """A request the store refuses; the message says why."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


@dataclass(frozen=True)
class MailboxInfo:
    id: int
    address: str
    kind: str
    display_name: str
    state: str
    key_id: uuid.UUID
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, row: Mailbox) -> MailboxInfo:
        return cls(
            row.id,
            row.address,
            row.kind,
            row.display_name,
            row.state,
            row.key_id,
            row.created_at,
            row.last_login_at,
        )


@dataclass(frozen=True)
class FolderInfo:
    id: int
    mailbox_id: int
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int

    @classmethod
    def of(cls, row: Folder) -> FolderInfo:
        return cls(
            row.id,
            row.mailbox_id,
            row.name,
            row.special_use,
            row.subscribed,
            row.uidvalidity,
            row.uidnext,
            row.highestmodseq,
        )


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True)
class StorageUsage:
    """What a mailbox holds over all its folders, and its quota (None: no limit)."""

    used_bytes: int
    quota_bytes: int | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A message's place in a folder: what IMAP reads without decrypting anything."""

    uid: int
    message_id: uuid.UUID
    flags: frozenset[str]
    modseq: int
    internal_date: datetime
    size: int


@dataclass(frozen=True)
class AppendTarget:
    mailbox_id: int
    folder: str = "INBOX"
    flags: frozenset[str] = frozenset()
    internal_date: datetime | None = None


@dataclass(frozen=True)
class Appended:
    mailbox_id: int
    folder_id: int
    uidvalidity: int
    uid: int
    message_id: uuid.UUID


@dataclass(frozen=True)
class OutboundRequest:
    """Recipients at other operators; the queued copy is sealed with `mailbox_id`'s key
    (the local mailbox that sends it)."""

    mailbox_id: int
    mail_from: str
    recipients: tuple[str, ...]
    expires_at: datetime


@dataclass(frozen=True)
class StoreRequest:
    raw: bytes
    targets: Sequence[AppendTarget] = ()
    outbound: OutboundRequest | None = None


@dataclass(frozen=True)
class StoreResult:
    appended: list[Appended]
    queued: uuid.UUID | None = None


@dataclass(frozen=True)
class FlagUpdate:
    updated: list[Entry]
    # UIDs left alone because they changed after UNCHANGEDSINCE (RFC 7162 §3.1.3).
    modified: list[int] = field(default_factory=list)


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Header section (with its blank line) and body, per RFC 5322 §2.1; joined, `raw`."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            cut = end + len(separator)
            return raw[:cut], raw[cut:]
    return raw, b""


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def decode_flags(value: str) -> frozenset[str]:
    return frozenset(value.split()) if value else frozenset()


def _entry(row: FolderEntry) -> Entry:
    return Entry(
        row.uid, row.message_id, decode_flags(row.flags), row.modseq, row.internal_date, row.size
    )


class MessageStore:
    def __init__(self, database: Database, keys: KeyStore, hub: ChangeHub) -> None:
        self.database = database
        self.keys = keys
        self.hub = hub

    # -- mailboxes ---------------------------------------------------------------------

    async def create_mailbox(
        self,
        address: str,
        kind: str,
        *,
        display_name: str = "",
        quota_bytes: int | None = None,
        session: AsyncSession | None = None,
    ) -> MailboxInfo:
        """A mailbox with its own key and the default folders; the address is final.

        With `session`, the mailbox joins the caller's transaction (the directory creates
        a mailbox and its directory entry together).
        """
        address = address.strip().lower()
        if kind not in MAILBOX_KINDS:
            raise StoreError(f"mailbox kind must be one of {', '.join(MAILBOX_KINDS)}")
        if await self.mailbox_by_address(address) is not None:
            raise Conflict(f"mailbox {address} already exists")
        # The key is durable first; if the mailbox insert then fails, an unused key remains.
        key_id = await self.keys.create()
        if session is not None:
            return await self._insert_mailbox(
                session, address, kind, display_name, quota_bytes, key_id
            )
        async with self.database.write() as own, own.begin():
            return await self._insert_mailbox(own, address, kind, display_name, quota_bytes, key_id)

    async def _insert_mailbox(
        self,
        session: AsyncSession,
        address: str,
        kind: str,
        display_name: str,
        quota_bytes: int | None,
        key_id: uuid.UUID,
    ) -> MailboxInfo:
        mailbox = Mailbox(
            address=address,
            kind=kind,
            display_name=display_name,
            key_id=key_id,
            quota_bytes=quota_bytes,
            next_uidvalidity=int(time.time()),
        )
        session.add(mailbox)
        await session.flush()
        for name, special_use in DEFAULT_FOLDERS:
            await self._insert_folder(session, mailbox, name, special_use)
        return MailboxInfo.of(mailbox)

    async def mailbox_by_address(self, address: str) -> MailboxInfo | None:
        async with self.database.read() as session:
            row = await session.scalar(
                select(Mailbox).where(Mailbox.address == address.strip().lower())
            )
            return MailboxInfo.of(row) if row is not None else None

    async def mailbox(self, mailbox_id: int) -> MailboxInfo:
        async with self.database.read() as session:
            row = await session.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            return MailboxInfo.of(row)

    async def counts(self) -> tuple[dict[str, int], int]:
        """Mailboxes by state and stored message copies, for metrics."""
        async with self.database.read() as session:
            states = await session.execute(
                select(Mailbox.state, func.count()).group_by(Mailbox.state)
            )
            messages = await session.scalar(select(func.count()).select_from(Message))
            return {state: int(n) for state, n in states.all()}, int(messages or 0)

    async def record_login(self, mailbox_id: int, when: datetime | None = None) -> None:
        async with self.database.write() as session, session.begin():
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox_id)
                .values(last_login_at=when or utcnow())
            )

    async def shred_mailbox(self, mailbox_id: int) -> None:
        """Delete the mailbox key, then its rows: every copy of its messages is unreadable."""
        info = await self.mailbox(mailbox_id)
        await self.keys.delete(info.key_id)
        await self.keys.delete_mailbox_data_keys(mailbox_id)
        async with self.database.write() as session, session.begin():
            await session.execute(delete(Message).where(Message.mailbox_id == mailbox_id))
            await session.execute(delete(Mailbox).where(Mailbox.id == mailbox_id))
            changes = [Change(mailbox_id, 0, 0, "shred")]
            await self.hub.stage(session, changes)
        self.hub.committed(changes)

    # -- folders -----------------------------------------------------------------------

    async def _insert_folder(
        self, session: AsyncSession, mailbox: Mailbox, name: str, special_use: str | None
    ) -> Folder:
        uidvalidity = mailbox.next_uidvalidity
        mailbox.next_uidvalidity = uidvalidity + 1
        folder = Folder(
            mailbox_id=mailbox.id,
            name=name,
            special_use=special_use,
            subscribed=True,
            uidvalidity=uidvalidity,
            uidnext=1,
            highestmodseq=1,
        )
        session.add(folder)
        await session.flush()
        return folder

    async def list_folders(self, mailbox_id: int) -> list[FolderInfo]:
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Folder).where(Folder.mailbox_id == mailbox_id).order_by(Folder.name)
            )
            return [FolderInfo.of(row) for row in rows]

    async def folder(self, mailbox_id: int, name: str) -> FolderInfo:
        async with self.database.read() as session:
            row = await self._folder_named(session, mailbox_id, name)
            return FolderInfo.of(row)

    async def folder_by_id(self, folder_id: int) -> FolderInfo:
        async with self.database.read() as session:
            row = await session.get(Folder, folder_id)
            if row is None:
                raise NotFound(f"no folder with id {folder_id}")
            return FolderInfo.of(row)

    @staticmethod
    async def _folder_named(session: AsyncSession, mailbox_id: int, name: str) -> Folder:
        if name.upper() == "INBOX":
            name = "INBOX"  # RFC 9051 §5.1: INBOX is case-insensitive
        row = await session.scalar(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == name)
        )
        if row is None:
            raise NotFound(f"no folder {name!r}")
        return row

    async def create_folder(
        self, mailbox_id: int, name: str, special_use: str | None = None
    ) -> FolderInfo:
        if name.upper() == "INBOX":
            raise Conflict("INBOX always exists")
        async with self.database.write() as session, session.begin():
            mailbox = await session.get(Mailbox, mailbox_id)
            if mailbox is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            exists = await session.scalar(
                select(Folder.id).where(Folder.mailbox_id == mailbox_id, Folder.name == name)
            )
            if exists is not None:
                raise Conflict(f"folder {name!r} already exists")
            folder = await self._insert_folder(session, mailbox, name, special_use)
            changes = [Change(mailbox_id, folder.id, 0, "folders")]
            await self.hub.stage(session, changes)
            info = FolderInfo.of(folder)
        self.hub.committed(changes)
        return info

    async def rename_folder(self, folder_id: int, new_name: str) -> FolderInfo:
        async with self.database.write() as session, session.begin():
            folder = await session.get(Folder, folder_id)
            if folder is None:
                raise NotFound(f"no folder with id {folder_id}")
            if folder.name == "INBOX" or new_name.upper() == "INBOX":
                raise Conflict("renaming INBOX, or to INBOX, is not supported")
            taken = await session.scalar(
                select(Folder.id).where(
                    Folder.mailbox_id == folder.mailbox_id, Folder.name == new_name
                )
            )
            if taken is not None:
                raise Conflict(f"folder {new_name!r} already exists")
            folder.name = new_name
            changes = [Change(folder.mailbox_id, folder.id, folder.highestmodseq, "folders")]
            await self.hub.stage(session, changes)
            info = FolderInfo.of(folder)
        self.hub.committed(changes)
        return info

    async def delete_folder(self, folder_id: int) -> None:
        async with self.database.write() as session, session.begin():
            folder = await session.get(Folder, folder_id)
            if folder is None:
                raise NotFound(f"no folder with id {folder_id}")
            if folder.name == "INBOX":
                raise Conflict("INBOX cannot be deleted")
            message_ids = list(
                await session.scalars(
                    select(FolderEntry.message_id).where(FolderEntry.folder_id == folder_id)
                )
            )
            await session.execute(delete(FolderEntry).where(FolderEntry.folder_id == folder_id))
            await session.execute(delete(Expunged).where(Expunged.folder_id == folder_id))
            await session.delete(folder)
            orphans = await self._drop_orphans(session, message_ids)
            changes = [Change(folder.mailbox_id, folder_id, 0, "folders")]
            await self.hub.stage(session, changes)
        await self.keys.delete_data_keys(orphans)
        self.hub.committed(changes)

    async def set_subscribed(self, folder_id: int, subscribed: bool) -> None:
        async with self.database.write() as session, session.begin():
            await session.execute(
                update(Folder).where(Folder.id == folder_id).values(subscribed=subscribed)
            )

    async def status(self, folder_id: int) -> FolderStatus:
        async with self.database.read() as session:
            folder = await session.get(Folder, folder_id)
            if folder is None:
                raise NotFound(f"no folder with id {folder_id}")
            count, size = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(FolderEntry.size), 0)).where(
                        FolderEntry.folder_id == folder_id
                    )
                )
            ).one()
            seen = await session.scalar(
                select(func.count()).where(
                    FolderEntry.folder_id == folder_id,
                    FolderEntry.flags.contains("\\Seen", autoescape=True),
                )
            )
            return FolderStatus(
                folder.uidvalidity,
                folder.uidnext,
                folder.highestmodseq,
                int(count),
                int(count) - int(seen or 0),
                int(size),
            )

    async def storage_usage(self, mailbox_id: int) -> StorageUsage:
        async with self.database.read() as session:
            quota = await session.scalar(
                select(Mailbox.quota_bytes).where(Mailbox.id == mailbox_id)
            )
            used = await session.scalar(
                select(func.coalesce(func.sum(FolderEntry.size), 0))
                .join(Folder, Folder.id == FolderEntry.folder_id)
                .where(Folder.mailbox_id == mailbox_id)
            )
            return StorageUsage(int(used or 0), None if quota is None else int(quota))

    # -- appending ---------------------------------------------------------------------

    async def append(self, raw: bytes, targets: Sequence[AppendTarget]) -> list[Appended]:
        """Store one message in every target folder, in one transaction."""
        (appended,) = await self.append_batch([(raw, targets)])
        return appended

    async def append_batch(
        self, items: Sequence[tuple[bytes, Sequence[AppendTarget]]]
    ) -> list[list[Appended]]:
        """Several messages in one durable commit (group commit for busy ingest)."""
        results = await self.store_batch([StoreRequest(raw, targets) for raw, targets in items])
        return [result.appended for result in results]

    async def store_batch(self, requests: Sequence[StoreRequest]) -> list[StoreResult]:
        """Store messages in local folders and queue them for other operators, all in one
        durable commit: a message is delivered and queued entirely, or not at all."""
        if not requests or any(not r.targets and r.outbound is None for r in requests):
            raise StoreError("every message needs a local folder or an outbound recipient")
        mailbox_ids = {t.mailbox_id for r in requests for t in r.targets} | {
            r.outbound.mailbox_id for r in requests if r.outbound is not None
        }
        async with self.database.write() as session, session.begin():
            mailboxes = {
                row.id: row
                for row in await session.scalars(select(Mailbox).where(Mailbox.id.in_(mailbox_ids)))
            }
            for mailbox_id in mailbox_ids:
                state = mailboxes[mailbox_id].state if mailbox_id in mailboxes else None
                if state != "active":
                    raise NotFound(f"mailbox {mailbox_id} does not exist or is not active")
            keys = {mid: await self.keys.get(m.key_id) for mid, m in mailboxes.items()}
            results: list[StoreResult] = []
            changes: dict[int, Change] = {}
            pending: PendingKeys = []
            now = utcnow()
            for request in requests:
                header, body = split_message(request.raw)
                appended = await self._append_copies(
                    session, keys, request, header, body, now, changes, pending
                )
                queued = None
                if request.outbound is not None:
                    queued = self._enqueue(session, keys, request, header, body, now)
                results.append(StoreResult(appended, queued))
            await self.hub.stage(session, changes.values())
            # The keys are durable before the messages: a committed message always has its
            # key (a message that got 250 reads after a crash); the reverse is harmless.
            await self.keys.put_data_keys(pending)
        self.hub.committed(changes.values())
        return results

    async def _append_copies(
        self,
        session: AsyncSession,
        keys: dict[int, bytes],
        request: StoreRequest,
        header: bytes,
        body: bytes,
        now: datetime,
        changes: dict[int, Change],
        pending: PendingKeys,
    ) -> list[Appended]:
        copies: dict[int, uuid.UUID] = {}
        appended: list[Appended] = []
        size = len(request.raw)
        for target in request.targets:
            message_id = copies.get(target.mailbox_id)
            if message_id is None:
                message_id = uuid.uuid4()
                sealed = crypto.seal_message(
                    keys[target.mailbox_id], target.mailbox_id, message_id, header, body
                )
                pending.append((target.mailbox_id, message_id, sealed.wrapped_key))
                session.add(
                    Message(
                        id=message_id,
                        mailbox_id=target.mailbox_id,
                        wrapped_key=None,
                        header_ct=sealed.header_ct,
                        body_ct=sealed.body_ct,
                        size=size,
                        received_at=now,
                    )
                )
                copies[target.mailbox_id] = message_id
            folder = await self._folder_named(session, target.mailbox_id, target.folder)
            uid, modseq = await self._reserve_uids(session, folder.id, 1)
            await session.flush()
            await session.execute(
                insert(FolderEntry).values(
                    folder_id=folder.id,
                    uid=uid,
                    message_id=message_id,
                    flags=encode_flags(target.flags),
                    modseq=modseq,
                    internal_date=target.internal_date or now,
                    size=size,
                )
            )
            appended.append(
                Appended(target.mailbox_id, folder.id, folder.uidvalidity, uid, message_id)
            )
            changes[folder.id] = Change(target.mailbox_id, folder.id, modseq, "append")
        return appended

    @staticmethod
    def _enqueue(
        session: AsyncSession,
        keys: dict[int, bytes],
        request: StoreRequest,
        header: bytes,
        body: bytes,
        now: datetime,
    ) -> uuid.UUID:
        outbound = request.outbound
        assert outbound is not None
        queued_id = uuid.uuid4()
        sealed = crypto.seal_message(
            keys[outbound.mailbox_id], outbound.mailbox_id, queued_id, header, body
        )
        session.add(
            OutboundMessage(
                id=queued_id,
                mailbox_id=outbound.mailbox_id,
                mail_from=outbound.mail_from,
                wrapped_key=sealed.wrapped_key,
                header_ct=sealed.header_ct,
                body_ct=sealed.body_ct,
                size=len(request.raw),
                created_at=now,
                expires_at=outbound.expires_at,
            )
        )
        for recipient in dict.fromkeys(r.lower() for r in outbound.recipients):
            session.add(
                OutboundRecipient(
                    message_id=queued_id,
                    recipient=recipient,
                    domain=recipient.rpartition("@")[2],
                    state="queued",
                    attempts=0,
                    next_attempt_at=now,
                    last_reply="",
                    updated_at=now,
                )
            )
        return queued_id

    @staticmethod
    async def _reserve_uids(session: AsyncSession, folder_id: int, count: int) -> tuple[int, int]:
        """Take `count` UIDs and a new MODSEQ; the row lock orders concurrent writers."""
        uidnext, modseq = (
            await session.execute(
                update(Folder)
                .where(Folder.id == folder_id)
                .values(uidnext=Folder.uidnext + count, highestmodseq=Folder.highestmodseq + 1)
                .returning(Folder.uidnext, Folder.highestmodseq)
                .execution_options(synchronize_session=False)
            )
        ).one()
        return int(uidnext) - count, int(modseq)

    @staticmethod
    async def _bump_modseq(session: AsyncSession, folder_id: int) -> int:
        return int(
            (
                await session.execute(
                    update(Folder)
                    .where(Folder.id == folder_id)
                    .values(highestmodseq=Folder.highestmodseq + 1)
                    .returning(Folder.highestmodseq)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one()
        )

    # -- reading -----------------------------------------------------------------------

    async def entries(
        self, folder_id: int, *, changed_since: int | None = None, uids: Sequence[int] | None = None
    ) -> list[Entry]:
        """Entries in UID order; optionally only those changed after a MODSEQ, or some UIDs.

        Plain column rows, not ORM objects: a SELECT of a large folder reads them all.
        """
        query = select(
            FolderEntry.uid,
            FolderEntry.message_id,
            FolderEntry.flags,
            FolderEntry.modseq,
            FolderEntry.internal_date,
            FolderEntry.size,
        ).where(FolderEntry.folder_id == folder_id)
        if changed_since is not None:
            query = query.where(FolderEntry.modseq > changed_since)
        if uids is not None:
            query = query.where(FolderEntry.uid.in_(list(uids)))
        async with self.database.read() as session:
            rows = (await session.execute(query.order_by(FolderEntry.uid))).all()
        flag_sets: dict[str, frozenset[str]] = {}
        entries = []
        for uid, message_id, flags, modseq, internal_date, size in rows:
            decoded = flag_sets.get(flags)
            if decoded is None:
                decoded = flag_sets[flags] = decode_flags(flags)  # few distinct flag sets
            entries.append(Entry(uid, message_id, decoded, modseq, internal_date, size))
        return entries

    async def expunged_since(self, folder_id: int, modseq: int) -> list[int]:
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Expunged.uid)
                .where(Expunged.folder_id == folder_id, Expunged.modseq > modseq)
                .order_by(Expunged.uid)
            )
            return list(rows)

    async def read(self, folder_id: int, uid: int) -> bytes:
        """The whole message as it arrived, decrypted."""
        (parts,) = (await self.read_many(folder_id, [uid], header_only=False)).values()
        return parts

    async def read_many(
        self, folder_id: int, uids: Sequence[int], *, header_only: bool = False
    ) -> dict[int, bytes]:
        """Decrypt several messages (or only their headers) of one folder, by UID."""
        async with self.database.read() as session:
            folder = await session.get(Folder, folder_id)
            if folder is None:
                raise NotFound(f"no folder with id {folder_id}")
            mailbox = await session.get(Mailbox, folder.mailbox_id)
            assert mailbox is not None
            columns: list[Any] = [
                FolderEntry.uid,
                Message.id,
                Message.mailbox_id,
                Message.wrapped_key,
            ]
            columns.append(Message.header_ct)
            if not header_only:
                columns.append(Message.body_ct)
            rows = (
                await session.execute(
                    select(*columns)
                    .join(Message, Message.id == FolderEntry.message_id)
                    .where(FolderEntry.folder_id == folder_id, FolderEntry.uid.in_(list(uids)))
                )
            ).all()
        if len(rows) != len(set(uids)):
            missing = sorted(set(uids) - {row[0] for row in rows})
            raise NotFound(f"no message with UID {', '.join(map(str, missing))}")
        key = await self.keys.get(mailbox.key_id)
        in_key_store = await self.keys.data_keys(row[1] for row in rows if row[3] is None)
        found: dict[int, bytes] = {}
        for row in rows:
            uid, message_id, owner_id = row[0], row[1], row[2]
            wrapped = _data_key(message_id, row[3], in_key_store)
            header, body = crypto.open_message(
                key, owner_id, message_id, wrapped, row[4], None if header_only else row[5]
            )
            found[uid] = header + (body or b"")
        return found

    # -- flags ---------------------------------------------------------------------------

    async def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        flag_set = frozenset(flags)
        async with self.database.write() as session, session.begin():
            folder = await session.get(Folder, folder_id)
            if folder is None:
                raise NotFound(f"no folder with id {folder_id}")
            rows = list(
                await session.scalars(
                    select(FolderEntry)
                    .where(FolderEntry.folder_id == folder_id, FolderEntry.uid.in_(list(uids)))
                    .order_by(FolderEntry.uid)
                )
            )
            modified = [
                r.uid for r in rows if unchanged_since is not None and r.modseq > unchanged_since
            ]
            changing = []
            for row in rows:
                if row.uid in modified:
                    continue
                current = decode_flags(row.flags)
                if mode == "add":
                    wanted = current | flag_set
                elif mode == "remove":
                    wanted = current - flag_set
                else:
                    wanted = flag_set
                if wanted != current:
                    changing.append((row, wanted))
            if not changing:
                return FlagUpdate(updated=[], modified=modified)
            modseq = await self._bump_modseq(session, folder_id)
            for row, wanted in changing:
                row.flags = encode_flags(wanted)
                row.modseq = modseq
            updated = [_entry(row) for row, _wanted in changing]
            changes = [Change(folder.mailbox_id, folder_id, modseq, "flags")]
            await self.hub.stage(session, changes)
        self.hub.committed(changes)
        return FlagUpdate(updated=updated, modified=modified)

    # -- copy, move, expunge -----------------------------------------------------------

    async def copy(
        self, source_folder_id: int, uids: Sequence[int], target_folder_id: int
    ) -> list[tuple[int, int]]:
        """Copy messages; returns (source UID, new UID) pairs for COPYUID (RFC 4315)."""
        async with self.database.write() as session, session.begin():
            pending: PendingKeys = []
            mapping, changes = await self._copy(
                session, source_folder_id, uids, target_folder_id, pending
            )
            await self.hub.stage(session, changes)
            await self.keys.put_data_keys(pending)
        self.hub.committed(changes)
        return mapping

    async def move(
        self, source_folder_id: int, uids: Sequence[int], target_folder_id: int
    ) -> list[tuple[int, int]]:
        """Copy then expunge the sources, atomically (RFC 6851 §3.1)."""
        async with self.database.write() as session, session.begin():
            pending: PendingKeys = []
            mapping, changes = await self._copy(
                session, source_folder_id, uids, target_folder_id, pending
            )
            moved = [source for source, _new in mapping]
            _expunged, orphans, expunge_changes = await self._expunge(
                session, source_folder_id, moved, None
            )
            changes += expunge_changes
            await self.hub.stage(session, changes)
            await self.keys.put_data_keys(pending)
        await self.keys.delete_data_keys(orphans)
        self.hub.committed(changes)
        return mapping

    async def _copy(
        self,
        session: AsyncSession,
        source_folder_id: int,
        uids: Sequence[int],
        target_folder_id: int,
        pending: PendingKeys,
    ) -> tuple[list[tuple[int, int]], list[Change]]:
        source = await session.get(Folder, source_folder_id)
        target = await session.get(Folder, target_folder_id)
        if source is None or target is None:
            raise NotFound("source or target folder does not exist")
        rows = list(
            await session.scalars(
                select(FolderEntry)
                .where(FolderEntry.folder_id == source_folder_id, FolderEntry.uid.in_(list(uids)))
                .order_by(FolderEntry.uid)
            )
        )
        if not rows:
            return [], []
        first_uid, modseq = await self._reserve_uids(session, target_folder_id, len(rows))
        same_mailbox = source.mailbox_id == target.mailbox_id
        mapping: list[tuple[int, int]] = []
        for offset, row in enumerate(rows):
            message_id = row.message_id
            if not same_mailbox:
                message_id = await self._reencrypt(
                    session, row.message_id, target.mailbox_id, pending
                )
            new_uid = first_uid + offset
            await session.execute(
                insert(FolderEntry).values(
                    folder_id=target_folder_id,
                    uid=new_uid,
                    message_id=message_id,
                    flags=row.flags,
                    modseq=modseq,
                    internal_date=row.internal_date,
                    size=row.size,
                )
            )
            mapping.append((row.uid, new_uid))
        return mapping, [Change(target.mailbox_id, target_folder_id, modseq, "append")]

    async def _reencrypt(
        self,
        session: AsyncSession,
        message_id: uuid.UUID,
        target_mailbox_id: int,
        pending: PendingKeys,
    ) -> uuid.UUID:
        """A copy into another mailbox (an ORG box) is sealed again under that box's key."""
        message = await session.get(Message, message_id)
        owner = await session.get(Mailbox, message.mailbox_id if message else -1)
        target = await session.get(Mailbox, target_mailbox_id)
        if message is None or owner is None or target is None or target.state != "active":
            raise NotFound("message or target mailbox does not exist")
        in_key_store = (
            {} if message.wrapped_key is not None else await self.keys.data_keys([message.id])
        )
        wrapped = _data_key(message.id, message.wrapped_key, in_key_store)
        header, body = crypto.open_message(
            await self.keys.get(owner.key_id),
            owner.id,
            message.id,
            wrapped,
            message.header_ct,
            message.body_ct,
        )
        assert body is not None
        new_id = uuid.uuid4()
        sealed = crypto.seal_message(
            await self.keys.get(target.key_id), target.id, new_id, header, body
        )
        pending.append((target.id, new_id, sealed.wrapped_key))
        session.add(
            Message(
                id=new_id,
                mailbox_id=target.id,
                wrapped_key=None,
                header_ct=sealed.header_ct,
                body_ct=sealed.body_ct,
                size=message.size,
                received_at=message.received_at,
            )
        )
        await session.flush()
        return new_id

    async def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (only among `uids` when given, as UID EXPUNGE).

        A message no longer in any folder loses its row and, right after the commit, its
        data key in the key store: every copy of the message store is then unreadable for it.
        """
        async with self.database.write() as session, session.begin():
            expunged, orphans, changes = await self._expunge(session, folder_id, uids, "\\Deleted")
            await self.hub.stage(session, changes)
        # After the commit: a key deleted before a commit that then failed would leave a
        # message in its folder that nothing opens. A crash between the two leaves an
        # orphan key, which `sweep_orphan_keys` deletes.
        await self.keys.delete_data_keys(orphans)
        self.hub.committed(changes)
        return expunged

    async def _expunge(
        self,
        session: AsyncSession,
        folder_id: int,
        uids: Sequence[int] | None,
        required_flag: str | None,
    ) -> tuple[list[int], list[uuid.UUID], list[Change]]:
        folder = await session.get(Folder, folder_id)
        if folder is None:
            raise NotFound(f"no folder with id {folder_id}")
        query = select(FolderEntry).where(FolderEntry.folder_id == folder_id)
        if uids is not None:
            query = query.where(FolderEntry.uid.in_(list(uids)))
        rows = [
            row
            for row in await session.scalars(query.order_by(FolderEntry.uid))
            if required_flag is None or required_flag in decode_flags(row.flags)
        ]
        if not rows:
            return [], [], []
        modseq = await self._bump_modseq(session, folder_id)
        expunged = [row.uid for row in rows]
        message_ids = [row.message_id for row in rows]
        await session.execute(
            delete(FolderEntry).where(
                FolderEntry.folder_id == folder_id, FolderEntry.uid.in_(expunged)
            )
        )
        session.add_all(Expunged(folder_id=folder_id, uid=uid, modseq=modseq) for uid in expunged)
        orphans = await self._drop_orphans(session, message_ids)
        return expunged, orphans, [Change(folder.mailbox_id, folder_id, modseq, "expunge")]

    @staticmethod
    async def _drop_orphans(
        session: AsyncSession, message_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]:
        """Delete the messages no folder entry refers to any more (a COPY within a mailbox
        shares one message); returns them, for their data keys to be deleted."""
        if not message_ids:
            return []
        await session.flush()
        still_used = set(
            await session.scalars(
                select(FolderEntry.message_id).where(FolderEntry.message_id.in_(message_ids))
            )
        )
        orphans = [m for m in set(message_ids) if m not in still_used]
        if orphans:
            await session.execute(delete(Message).where(Message.id.in_(orphans)))
        return orphans

    # -- data keys: moving them out of old rows, sweeping orphans ----------------------------

    async def move_data_keys(self) -> int:
        """Move the data keys of messages stored by earlier versions from their rows into
        the key store, in batches; safe to interrupt and run again. Returns how many moved.

        A copy of the message store taken before the move still holds those keys: it is
        shredded for a message only by its mailbox's deletion, or when it is discarded.
        """
        moved = 0
        while True:
            async with self.database.read() as session:
                rows = (
                    await session.execute(
                        select(Message.mailbox_id, Message.id, Message.wrapped_key)
                        .where(Message.wrapped_key.is_not(None))
                        .order_by(Message.id)
                        .limit(KEY_MOVE_BATCH)
                    )
                ).all()
            if not rows:
                return moved
            ids = [row.id for row in rows]
            # A run interrupted after the key-store commit already wrote some of these.
            present = await self.keys.data_keys(ids)
            await self.keys.put_data_keys(
                [(r.mailbox_id, r.id, r.wrapped_key) for r in rows if r.id not in present]
            )
            async with self.database.write() as session, session.begin():
                await session.execute(
                    update(Message)
                    .where(Message.id.in_(ids))
                    .values(wrapped_key=None)
                    .execution_options(synchronize_session=False)
                )
            moved += len(rows)

    async def sweep_orphan_keys(self, now: datetime | None = None) -> int:
        """Delete data keys whose message is not in the message store: left by a group
        whose commit failed, or by a crash between an expunge's commit and its key
        deletion. Keys younger than `ORPHAN_KEY_GRACE` may belong to a commit under way
        and are left alone."""
        older_than = (now or utcnow()) - ORPHAN_KEY_GRACE
        after: uuid.UUID | None = None
        swept = 0
        while True:
            page = await self.keys.data_key_page(after, older_than)
            if not page:
                return swept
            async with self.database.read() as session:
                present = set(await session.scalars(select(Message.id).where(Message.id.in_(page))))
            swept += await self.keys.delete_data_keys(m for m in page if m not in present)
            after = page[-1]
