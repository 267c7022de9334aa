"""Delivery status notifications (RFC 3464) for mail the relay could not deliver.

When another operator refuses a recipient for good (5xx), or the queue gives up at the
end of `[queue] expire_days`, the sender gets a report in their own INBOX: a
`multipart/report; report-type=delivery-status` message (RFC 6522) with

1. a human-readable explanation, in French and in English;
2. a `message/delivery-status` part: the per-message fields (Reporting-MTA,
   Arrival-Date) and, for each recipient, Final-Recipient, Action: failed, Status,
   Remote-MTA and Diagnostic-Code when a server answered;
3. the header section of the original message as `text/rfc822-headers`. The body is
   never copied into a report.

The report comes from `MAILER-DAEMON@<operator domain>` with the null envelope sender
(RFC 5321 §4.5.5, RFC 3464 §2). The sender is always a local mailbox (only our own users
relay), so the report is stored straight into that mailbox, encrypted like any message.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import Message, MIMEPart
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from storage.messages import AppendTarget, StoreError, StoreRequest, split_message
from storage.models import utcnow

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.dsn")

POLICY = email_policy.SMTP  # CRLF line endings, RFC 2047 for non-ASCII header text
EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired
DAEMON = "MAILER-DAEMON"


@dataclass(frozen=True)
class Failure:
    """One recipient the relay gave up on, and why."""

    recipient: str
    status: str  # RFC 3463 enhanced status code, e.g. 5.1.1 (or 4.4.7 on expiry)
    reason: str  # what happened, one line: the server's reply or the local error
    reply: str = ""  # the remote SMTP reply ("550 5.1.1 ..."), "" when no server answered
    remote_mta: str = ""  # the server that answered (or was tried last)


def _mta_name(host: str) -> str:
    """`dns; <name>` for RFC 3464 §2.3.5, with an IP address as an address literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"dns; {host}"
    return f"dns; [{host}]"


def _one_line(text: str, limit: int = 900) -> str:
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _fields(*pairs: tuple[str, str]) -> Message:
    """One block of delivery-status fields (RFC 3464 §2.2, §2.3)."""
    block = Message(policy=POLICY)
    for name, value in pairs:
        if value:
            block[name] = value
    return block


def _human_text(
    hostname: str, failures: Sequence[Failure], expired_days: float | None, subject: str
) -> str:
    def describe(failure: Failure, french: bool) -> str:
        server = failure.remote_mta or hostname
        if failure.reply:
            label = f"réponse de {server} :" if french else f"{server} answered:"
            return f"    {label} {_one_line(failure.reply)}"
        label = "erreur :" if french else "error:"
        return f"    {label} {_one_line(failure.reason)}"

    days = f"{expired_days:g}" if expired_days is not None else ""
    fr_why = (
        f"n'a pas pu être remis dans le délai de {days} jour(s) aux destinataires suivants"
        if expired_days is not None
        else "n'a pas pu être remis aux destinataires suivants"
    )
    en_why = (
        f"could not be delivered within {days} day(s) to the following recipients"
        if expired_days is not None
        else "could not be delivered to the following recipients"
    )
    about = f" ({_one_line(subject, 200)})" if subject else ""
    lines = [
        f"Ceci est un message automatique du serveur de messagerie {hostname}.",
        "",
        f"Votre message{about} {fr_why} :",
        "",
    ]
    for failure in failures:
        lines += [f"  {failure.recipient}", describe(failure, True)]
    lines += [
        "",
        "Les en-têtes du message sont joints ; son contenu ne l'est pas.",
        "",
        "-- ",
        "",
        f"This is an automatic message from the mail server {hostname}.",
        "",
        f"Your message{about} {en_why}:",
        "",
    ]
    for failure in failures:
        lines += [f"  {failure.recipient}", describe(failure, False)]
    lines += ["", "The message headers are attached; its content is not.", ""]
    return "\n".join(lines)


def build_report(
    *,
    hostname: str,
    domain: str,
    mail_from: str,
    original: bytes,
    arrival_date: datetime,
    failures: Sequence[Failure],
    expired_days: float | None = None,
    now: datetime | None = None,
) -> bytes:
    """The RFC 3464 report for `failures` of the message `original` sent by `mail_from`.

    Only the header section of `original` is used. `expired_days` says the queue gave up
    after that many days (the wording changes; the statuses come from `failures`).
    """
    if not failures:
        raise ValueError("a delivery report needs at least one failed recipient")
    now = now or utcnow()
    header_bytes, _body = split_message(original)
    original_headers = BytesHeaderParser(policy=POLICY).parsebytes(header_bytes)
    subject = str(original_headers.get("Subject", "") or "")
    original_id = str(original_headers.get("Message-ID", "") or "").strip()

    report = MIMEMultipart("report", policy=POLICY, report_type="delivery-status")
    report["From"] = str(Address("Mail Delivery System", DAEMON, domain))
    report["To"] = mail_from
    report["Subject"] = (
        f"Non remis / Undelivered: {_one_line(subject, 200)}"
        if subject
        else "Non remis / Undelivered mail"
    )
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid("dsn", domain=hostname)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id

    human = MIMEPart(policy=POLICY)
    text = _human_text(hostname, failures, expired_days, subject)
    human.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    human["Content-Language"] = "fr, en"
    report.attach(human)

    status = MIMEBase("message", "delivery-status", policy=POLICY)
    del status["MIME-Version"]
    blocks: list[Message | str] = [
        _fields(
            ("Reporting-MTA", f"dns; {hostname}"),
            ("Arrival-Date", format_datetime(arrival_date)),
        )
    ]
    for failure in failures:
        blocks.append(
            _fields(
                ("Final-Recipient", f"rfc822; {failure.recipient}"),
                ("Action", "failed"),
                ("Status", failure.status),
                ("Remote-MTA", _mta_name(failure.remote_mta) if failure.remote_mta else ""),
                ("Diagnostic-Code", f"smtp; {_one_line(failure.reply)}" if failure.reply else ""),
                ("Last-Attempt-Date", format_datetime(now)),
            )
        )
    status.set_payload(blocks)
    report.attach(status)

    headers_part = MIMEPart(policy=POLICY)
    header_text = header_bytes.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n") + "\n"
    ascii_only = header_text.isascii()
    headers_part.set_content(
        header_text,
        subtype="rfc822-headers",
        charset="us-ascii" if ascii_only else "utf-8",
        cte="7bit" if ascii_only else "quoted-printable",
    )
    report.attach(headers_part)
    return report.as_bytes(policy=POLICY)


async def deliver_report(runtime: Runtime, mail_from: str, report: bytes) -> bool:
    """Store the report in the (local) sender's INBOX; False when there is no such mailbox."""
    mailbox = await runtime.store.mailbox_by_address(mail_from)
    if mailbox is None or mailbox.state != "active":
        log.warning("no active mailbox %s for a delivery report; none stored", mail_from)
        return False
    try:
        # Return-Path records the null envelope sender at final delivery (RFC 5321 §4.4).
        stored = b"Return-Path: <>\r\n" + report
        await runtime.store.store_batch([StoreRequest(stored, [AppendTarget(mailbox.id)])])
    except StoreError as exc:
        log.warning("delivery report for %s not stored: %s", mail_from, exc)
        return False
    return True
