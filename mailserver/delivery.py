"""One delivery pipeline for every accepted message, from another operator or a client.

Steps (ARCHITECTURE, "One message, end to end"): verify DKIM (inbound), stamp
`Authentication-Results` (RFC 8601) and `Received` (RFC 5321 §4.4, RFC 3848), encrypt and
store the message in every local recipient's mailbox in one transaction, and only then
answer. Concurrent deliveries share commits (group commit): while one commit is being
made durable, the next deliveries gather and go together in the following one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import SQLAlchemyError

from mailserver.smtp.dkim import DkimResult, KnownKeys, verify
from mailserver.smtp.protocol import NULL_SENDER, TlsInfo
from storage.messages import (
    Appended,
    AppendTarget,
    MessageStore,
    OutboundRequest,
    StoreError,
    StoreRequest,
    StoreResult,
)
from storage.models import utcnow

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.delivery")

MAX_GROUP = 64
FIN_SUBJECT = re.compile(r"^\s*\[FIN\]", re.IGNORECASE)


class DeliveryError(Exception):
    """Delivery refused or failed; `reply` is the SMTP reply to give the client."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Arrival:
    """A message as received, with what the trace headers and policy need to know."""

    channel: Literal["submission", "inbound"]
    mail_from: str
    recipients: Sequence[str]
    content: bytes
    helo: str
    peer_ip: str
    tls: TlsInfo
    authenticated: str | None = None


@dataclass(frozen=True)
class Delivered:
    queue_id: str
    stored: list[Appended]
    queued: uuid.UUID | None = None


class GroupCommit:
    """Gathers concurrent deliveries into shared transactions (one fsync for many)."""

    def __init__(self, store: MessageStore, max_group: int = MAX_GROUP) -> None:
        self.message_store = store
        self.max_group = max_group
        self._pending: list[tuple[StoreRequest, asyncio.Future[StoreResult]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def store(self, request: StoreRequest) -> StoreResult:
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="hygie-group-commit")
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            group = self._pending[: self.max_group]
            del self._pending[: self.max_group]
            try:
                results = await self.message_store.store_batch([r for r, _f in group])
            except StoreError:
                # Refused inside the transaction (a mailbox closed meanwhile…), so nothing
                # was committed: one bad message must not fail the others.
                await self._one_by_one(group)
                continue
            except Exception as exc:
                # Anything else (the database went away, perhaps while committing) may or
                # may not have committed: retrying could store twice, so every delivery
                # of the group fails and its client will try again.
                for _request, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_request, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(
        self, group: list[tuple[StoreRequest, asyncio.Future[StoreResult]]]
    ) -> None:
        for request, future in group:
            try:
                (result,) = await self.message_store.store_batch([request])
            except Exception as exc:  # handed to the waiting delivery
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)


def _header_values(content: bytes, name: str) -> list[str]:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
    return [str(value) for value in headers.get_all(name, [])]


def closes_conversation(content: bytes) -> bool:
    """`X-MSS-MES: FIN`, or the older `[FIN]` subject (MISSION, patient messaging rules)."""
    if any(v.strip().upper() == "FIN" for v in _header_values(content, "X-MSS-MES")):
        return True
    return any(FIN_SUBJECT.match(v) for v in _header_values(content, "Subject"))


def strip_our_authentication_results(content: bytes, authserv_id: str) -> bytes:
    """RFC 8601 §5: remove incoming Authentication-Results that claim to be ours."""
    separator = content.find(b"\r\n\r\n")
    if separator < 0:
        return content
    header, rest = content[: separator + 2], content[separator + 2 :]
    kept: list[bytes] = []
    dropping = False
    for line in header.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, _, value = line.partition(b":")
        dropping = (
            name.strip().lower() == b"authentication-results"
            and value.strip().lower().startswith(authserv_id.lower().encode())
        )
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n" + rest


class DeliveryPipeline:
    def __init__(self, runtime: Runtime, known_keys: KnownKeys) -> None:
        self.runtime = runtime
        self.known_keys = known_keys
        self.hostname = runtime.settings.server.announced_hostname
        self.group = GroupCommit(runtime.store)
        # Called when a message was queued for other operators (wakes the relay).
        self.on_queued: Callable[[], None] | None = None

    def trace_headers(
        self, arrival: Arrival, queue_id: str, dkim_results: list[DkimResult]
    ) -> bytes:
        parts = [result.header_part() for result in dkim_results]
        if arrival.channel == "submission" and arrival.authenticated:
            mail_from = "" if arrival.mail_from == NULL_SENDER else arrival.mail_from
            parts.insert(
                0, f"auth=pass smtp.auth={arrival.authenticated} smtp.mailfrom={mail_from}"
            )
        value = ";\r\n\t".join(parts) if parts else "none"
        auth_results = f"Authentication-Results: {self.hostname};\r\n\t{value}"
        protocol = "ESMTPS" if arrival.tls.active else "ESMTP"
        if arrival.authenticated:
            protocol += "A"
        tls = (
            f"\r\n\t(using {arrival.tls.version} with cipher {arrival.tls.cipher}"
            f" ({arrival.tls.bits} bits))"
            if arrival.tls.active
            else ""
        )
        received = (
            f"Received: from {arrival.helo} ([{arrival.peer_ip}])\r\n\tby {self.hostname}"
            f" with {protocol} id {queue_id}{tls};\r\n\t{email.utils.formatdate(localtime=False)}"
        )
        return (received + "\r\n" + auth_results + "\r\n").encode("utf-8")

    async def deliver(self, arrival: Arrival) -> Delivered:
        queue_id = secrets.token_hex(8)
        directory = self.runtime.directory
        targets: list[AppendTarget] = []
        patients: list[int] = []
        remote: list[str] = []
        for address in dict.fromkeys(r.lower() for r in arrival.recipients):
            if not directory.is_local_domain(address.rpartition("@")[2]):
                remote.append(address)
                continue
            entry = await directory.lookup(address)
            if entry is None or entry.mailbox_id is None:
                raise DeliveryError(
                    f"451 4.3.0 {address} cannot be delivered here; nothing was stored"
                )
            targets.append(AppendTarget(entry.mailbox_id))
            if entry.kind == "PAT":
                patients.append(entry.mailbox_id)
        outbound = await self._outbound(arrival, remote) if remote else None
        dkim_results = (
            await verify(arrival.content, self.known_keys) if arrival.channel == "inbound" else []
        )
        content = strip_our_authentication_results(arrival.content, self.hostname)
        raw = self.trace_headers(arrival, queue_id, dkim_results) + content
        try:
            result = await self.runtime.track(
                self.group.store(StoreRequest(raw, targets, outbound))
            )
        except StoreError as exc:
            log.warning("delivery %s not stored: %s", queue_id, exc)
            raise DeliveryError(
                "451 4.3.0 the message could not be stored; nothing was kept, try again later"
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            log.error("delivery %s failed in the database: %s", queue_id, type(exc).__name__)
            raise DeliveryError(
                "451 4.3.0 the message store is unavailable; try again later"
            ) from exc
        if patients and arrival.mail_from != NULL_SENDER:
            await self._record_conversations(arrival, patients, content)
        if result.queued is not None and self.on_queued is not None:
            self.on_queued()
        log.info(
            "delivered %s from %s to %d mailboxes, %d queued for other operators (%s)",
            queue_id,
            arrival.mail_from,
            len(result.appended),
            len(remote),
            arrival.channel,
        )
        return Delivered(queue_id, result.appended, result.queued)

    async def _outbound(self, arrival: Arrival, remote: list[str]) -> OutboundRequest:
        """Only our own users relay (submission); the queued copy uses the sender's key."""
        sender = await self.runtime.store.mailbox_by_address(arrival.mail_from)
        if arrival.channel != "submission" or sender is None:
            raise DeliveryError("550 5.7.1 Relaying to other operators is refused")
        expiry = timedelta(days=self.runtime.settings.queue.expire_days)
        return OutboundRequest(sender.id, sender.address, tuple(remote), utcnow() + expiry)

    async def _record_conversations(
        self, arrival: Arrival, patient_mailboxes: list[int], content: bytes
    ) -> None:
        """A professional's message opens (or with FIN closes) the patient's conversation."""
        sender = await self.runtime.directory.lookup(arrival.mail_from)
        if sender is not None and sender.kind == "PAT":
            return
        if arrival.mail_from.lower().endswith("@" + self.runtime.directory.patient_domain):
            return
        closes = closes_conversation(content)
        for mailbox_id in patient_mailboxes:
            await self.runtime.directory.record_professional_message(
                mailbox_id, arrival.mail_from, closes=closes
            )
