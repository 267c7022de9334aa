"""The outbound relay: queued mail for other operators, sent over mutual TLS, DKIM-signed.

Workers (`[queue] workers` of them, on every node) take due recipients from the durable
queue (`storage.outbound`), one message and one domain at a time, and for each:

1. route the domain: a static route (`[queue] routes`) first, else its MX records, else
   the domain's own address records (RFC 5321 §5.1); a null MX (RFC 7505) or a domain
   that does not exist is a permanent failure;
2. connect, EHLO with our host name, and require STARTTLS: mail is never sent in clear.
   The TLS context (`tls.client_context`) presents our operator certificate and
   verifies the peer's certificate against the CA bundle and its name; TLS 1.2 minimum;
3. sign the message with our DKIM key (`d=` our operator domain) and send it to all the
   claimed recipients in one transaction;
4. settle each recipient: 2xx delivered; 5xx failed for good; 4xx, and any failure to
   reach the peer (DNS, connection, TLS), queued again with exponential backoff
   (`first_retry_seconds` doubling up to `max_retry_seconds`, with jitter) until the
   message expires. Failed and expired recipients get a delivery report (`smtp.dsn`) in
   the sender's INBOX, stored before the queue forgets them.

A worker wakes when a submission queued something (`wake`), when the next retry is due,
and at least every `poll_seconds` (other nodes queue mail too). `stop` lets attempts in
flight finish (for a bounded time); what is left stays queued, and leases run out.
Logs say who, to whom, where and what happened; never what the message says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from mailserver.smtp import dsn
from mailserver.smtp.dkim import sign
from mailserver.tls import client_context
from storage.messages import NotFound
from storage.models import utcnow
from storage.outbound import Claim, OutboundQueue

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.relay")

SMTP_PORT = 25
POLL_SECONDS = 15.0
STOP_SECONDS = 30.0
CLAIM_LIMIT = 100
COMMAND_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2 suggests 5 minutes for MAIL, RCPT and DATA
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_LINE_END = re.compile(rb"\r?\n")


@dataclass(frozen=True)
class Outcome:
    """What became of one recipient in one attempt."""

    status: str  # RFC 3463 enhanced status code; its class decides the recipient's fate
    text: str  # the server's reply text, or what went wrong on our side
    code: int = 0  # the remote SMTP reply code; 0 when no server answered
    host: str = ""  # the server that answered, or the one we tried

    @classmethod
    def reply(cls, code: int, message: str, host: str) -> Outcome:
        """An SMTP reply; without an enhanced code, the generic one of its class."""
        text = " ".join(message.split())
        found = _ENHANCED.match(text)
        klass = code // 100
        status = found.group(0) if found and int(found.group(1)) == klass else f"{klass}.0.0"
        if klass not in (2, 4, 5):
            status = "4.0.0"  # an unexpected reply: try again later
        return cls(status, text, code, host)

    @property
    def state(self) -> str:
        """`delivered`, `failed` or `queued` (the queue's states)."""
        return {"2": "delivered", "5": "failed"}.get(self.status[0], "queued")

    @property
    def line(self) -> str:
        """The SMTP reply as received, or the local error with its status."""
        return f"{self.code} {self.text}" if self.code else f"{self.status} {self.text}"

    @property
    def summary(self) -> str:
        """For the queue's `last_reply` and the logs."""
        return f"{self.host}: {self.line}" if self.host else self.line


class Unroutable(Exception):
    """The domain has no usable mail server (now, or ever: see the outcome's status)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.line)
        self.outcome = outcome


class _Unreachable(Exception):
    """This server could not be used (connection, greeting, EHLO, STARTTLS, TLS)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.line)
        self.outcome = outcome


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class Relay:
    def __init__(
        self,
        runtime: Runtime,
        *,
        poll_seconds: float = POLL_SECONDS,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.queue = OutboundQueue(runtime.messages_db, runtime.keystore)
        self.hostname = settings.server.announced_hostname
        self.domain = settings.server.domain
        self.routes = settings.queue.route_table()
        self.workers = settings.queue.workers
        self.lease = timedelta(seconds=settings.queue.lease_seconds)
        self.first_retry = float(settings.queue.first_retry_seconds)
        self.max_retry = float(settings.queue.max_retry_seconds)
        self.connect_timeout = float(settings.queue.connect_timeout_seconds)
        self.poll_seconds = poll_seconds
        self.stop_seconds = stop_seconds
        self._tls: ssl.SSLContext | None = None
        self._dkim_key: bytes | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.runtime.settings
        self._tls = client_context(settings)
        key_path = settings.path(settings.dkim.private_key)
        if key_path.exists():
            self._dkim_key = key_path.read_bytes()
        else:
            log.warning("no DKIM key at %s: mail to other operators goes unsigned", key_path)
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._work(), name=f"hygie-relay-{n}") for n in range(self.workers)
        ]
        log.info("relay started with %d workers", self.workers)

    def wake(self) -> None:
        """Something was queued: look for due recipients now."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the attempts in flight (at most `stop_seconds`); the rest stays queued."""
        self._stopping = True
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.stop_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("relay stopped with %d attempts unfinished; they stay queued", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("relay stopped")

    # -- workers -----------------------------------------------------------------------

    async def _work(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claims = await self.queue.claim(limit=CLAIM_LIMIT, lease=self.lease)
            except Exception:
                log.exception("could not take queued mail; trying again shortly")
                claims = []
            if claims:
                await asyncio.gather(*(self._attempt(claim) for claim in claims))
                continue
            await self._idle()

    async def _idle(self) -> None:
        """Sleep until woken, the next retry is due, or the poll interval has passed."""
        timeout = self.poll_seconds
        try:
            due = await self.queue.next_due()
        except Exception:
            log.exception("could not read the queue")
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - utcnow()).total_seconds()) + 0.01)
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    # -- one attempt -------------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> None:
        try:
            content = await self.queue.read(claim.message_id)
        except NotFound:
            return  # deleted meanwhile (`hygie queue delete`)
        except Exception as exc:
            log.exception("queued message %s cannot be read", claim.message_id)
            await self._settle_safely(claim, b"", self._everyone(claim, "4.3.0", exc))
            return
        try:
            outcomes = await self.deliver(claim, content)
        except Exception as exc:
            log.exception("relay of %s failed", claim.message_id)
            outcomes = self._everyone(claim, "4.3.0", exc)
        await self._settle_safely(claim, content, outcomes)

    @staticmethod
    def _everyone(claim: Claim, status: str, exc: BaseException) -> dict[str, Outcome]:
        outcome = Outcome(status, f"local error: {_describe(exc)}")
        return dict.fromkeys(claim.recipients, outcome)

    async def deliver(self, claim: Claim, content: bytes) -> dict[str, Outcome]:
        """Send one claimed message to its recipients at one domain; each one's outcome."""
        try:
            hosts = await self.route(claim.domain)
        except Unroutable as exc:
            return dict.fromkeys(claim.recipients, exc.outcome)
        if not hosts:
            return dict.fromkeys(
                claim.recipients, Outcome("4.4.4", f"no server for {claim.domain}")
            )
        message = await self._signed(content)
        last: Outcome | None = None
        for host, port in hosts:
            try:
                return await self._transaction(host, port, claim, message)
            except _Unreachable as exc:
                last = exc.outcome
                log.info(
                    "relay %s to %s: %s unusable: %s",
                    claim.message_id,
                    claim.domain,
                    host,
                    exc.outcome.line,
                )
        assert last is not None
        return dict.fromkeys(claim.recipients, last)

    async def _signed(self, content: bytes) -> bytes:
        """CRLF line endings, and our DKIM-Signature in front (RFC 6376, d= our domain)."""
        message = _LINE_END.sub(b"\r\n", content)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        if self._dkim_key is None:
            return message
        selector = self.runtime.settings.dkim.selector
        header = await asyncio.to_thread(
            sign, message, selector=selector, domain=self.domain, private_key_pem=self._dkim_key
        )
        return header + message

    # -- routing -----------------------------------------------------------------------

    async def route(self, domain: str) -> list[tuple[str, int]]:
        """The servers to try for `domain`, best first."""
        domain = domain.lower().rstrip(".")
        if domain in self.routes:
            return [self.routes[domain]]
        try:
            answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=self.connect_timeout)
        except dns.resolver.NXDOMAIN:
            raise Unroutable(
                Outcome("5.1.2", f"the domain {domain} does not exist (DNS NXDOMAIN)")
            ) from None
        except dns.resolver.NoAnswer:
            return [(domain, SMTP_PORT)]  # no MX: the domain itself (RFC 5321 §5.1)
        except dns.exception.DNSException as exc:
            raise Unroutable(
                Outcome("4.4.3", f"DNS lookup of the MX of {domain} failed: {_describe(exc)}")
            ) from None
        records = [cast(MX, record) for record in answer]
        if any(record.exchange == dns.name.root for record in records):
            # RFC 7505: a null MX says the domain accepts no mail.
            raise Unroutable(Outcome("5.1.10", f"{domain} accepts no mail (null MX, RFC 7505)"))
        # RFC 5321 §5.1: lowest preference first, in random order among equals.
        ordered = sorted(records, key=lambda record: (record.preference, random.random()))
        hosts = [record.exchange.to_text(omit_final_dot=True) for record in ordered]
        return [(host, SMTP_PORT) for host in dict.fromkeys(hosts)]

    # -- SMTP --------------------------------------------------------------------------

    async def _open(self, host: str, port: int) -> aiosmtplib.SMTP:
        """Connected, TLS established and verified, EHLO done over TLS."""
        assert self._tls is not None
        where = f"{host}:{port}"
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=self.hostname,
            timeout=COMMAND_TIMEOUT,
            start_tls=False,
            tls_context=self._tls,
        )
        try:
            try:
                await smtp.connect(timeout=self.connect_timeout)
            except aiosmtplib.SMTPConnectResponseError as exc:
                raise _Unreachable(Outcome.reply(exc.code, exc.message, host)) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise _Unreachable(
                    Outcome("4.4.1", f"cannot connect to {where}: {_describe(exc)}", host=host)
                ) from None
            try:
                await smtp.ehlo(timeout=self.connect_timeout)
            except aiosmtplib.SMTPResponseException as exc:
                raise _Unreachable(Outcome.reply(exc.code, exc.message, host)) from None
            if not smtp.supports_extension("starttls"):
                raise _Unreachable(
                    Outcome(
                        "4.7.10",
                        f"{where} does not offer STARTTLS; mail is never sent in clear",
                        host=host,
                    )
                )
            try:
                await smtp.starttls(
                    tls_context=self._tls, server_hostname=host, timeout=self.connect_timeout
                )
            except aiosmtplib.SMTPResponseException as exc:
                raise _Unreachable(Outcome.reply(exc.code, exc.message, host)) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise _Unreachable(
                    Outcome("4.7.5", f"TLS with {where} failed: {_describe(exc)}", host=host)
                ) from None
            try:
                await smtp.ehlo(timeout=self.connect_timeout)
            except aiosmtplib.SMTPResponseException as exc:
                raise _Unreachable(Outcome.reply(exc.code, exc.message, host)) from None
        except _Unreachable:
            smtp.close()
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise _Unreachable(
                Outcome("4.4.2", f"connection to {where} lost: {_describe(exc)}", host=host)
            ) from None
        return smtp

    def _envelope_options(
        self, smtp: aiosmtplib.SMTP, claim: Claim, message: bytes, host: str
    ) -> list[str] | Outcome:
        """MAIL parameters (SIZE, 8BITMIME, SMTPUTF8), or why the peer cannot take it."""
        options: list[str] = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(message)}")
        if not message.isascii():
            if not smtp.supports_extension("8bitmime"):
                return Outcome("5.6.3", "8-bit content refused (no 8BITMIME, RFC 6152)", host=host)
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (claim.mail_from, *claim.recipients)):
            if not smtp.supports_extension("smtputf8"):
                return Outcome("5.6.7", "non-ASCII address refused (no SMTPUTF8)", host=host)
            options.append("SMTPUTF8")
        return options

    async def _transaction(
        self, host: str, port: int, claim: Claim, message: bytes
    ) -> dict[str, Outcome]:
        smtp = await self._open(host, port)
        outcomes: dict[str, Outcome] = {}
        try:
            options = self._envelope_options(smtp, claim, message, host)
            if isinstance(options, Outcome):
                return dict.fromkeys(claim.recipients, options)
            encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
            mail = await smtp.execute_command(
                b"MAIL",
                b"FROM:<" + claim.mail_from.encode(encoding) + b">",
                *(option.encode("ascii") for option in options),
            )
            if mail.code != 250:
                return dict.fromkeys(claim.recipients, Outcome.reply(mail.code, mail.message, host))
            accepted: list[str] = []
            for recipient in claim.recipients:
                rcpt = await smtp.execute_command(
                    b"RCPT", b"TO:<" + recipient.encode(encoding) + b">"
                )
                if rcpt.code in (250, 251):
                    accepted.append(recipient)
                else:
                    outcomes[recipient] = Outcome.reply(rcpt.code, rcpt.message, host)
            if not accepted:
                return outcomes
            try:
                data = await smtp.data(message)
            except aiosmtplib.SMTPResponseException as exc:
                outcome = Outcome.reply(exc.code, exc.message, host)
            else:
                outcome = Outcome.reply(data.code, data.message, host)
            for recipient in accepted:
                outcomes[recipient] = outcome
            return outcomes
        except (aiosmtplib.SMTPException, OSError) as exc:
            lost = Outcome(
                "4.4.2", f"connection to {host}:{port} lost: {_describe(exc)}", host=host
            )
            return {r: outcomes.get(r, lost) for r in claim.recipients}
        finally:
            await self._close(smtp)

    @staticmethod
    async def _close(smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            return
        try:
            await smtp.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()

    # -- settling ----------------------------------------------------------------------

    def backoff(self, attempts: int) -> timedelta:
        """`first_retry` doubling per attempt, at most `max_retry`, give or take 10 %."""
        base = min(self.first_retry * 2 ** max(0, min(attempts - 1, 30)), self.max_retry)
        return timedelta(seconds=min(base * random.uniform(0.9, 1.1), self.max_retry))

    async def _settle_safely(
        self, claim: Claim, content: bytes, outcomes: dict[str, Outcome]
    ) -> None:
        try:
            await self.settle(claim, content, outcomes)
        except Exception:
            # The lease runs out and the recipients are tried again.
            log.exception("could not record the outcome of %s", claim.message_id)

    async def settle(self, claim: Claim, content: bytes, outcomes: dict[str, Outcome]) -> None:
        """Record each recipient's fate; report failures to the sender first."""
        now = utcnow()
        expired = now >= claim.expires_at
        delivered: list[tuple[str, Outcome]] = []
        failures: list[dsn.Failure] = []
        failed: list[tuple[str, Outcome]] = []
        deferred: list[tuple[str, Outcome]] = []
        for recipient in claim.recipients:
            outcome = outcomes[recipient]
            self._log(claim, recipient, outcome)
            if outcome.state == "delivered":
                delivered.append((recipient, outcome))
            elif outcome.state == "failed":
                failed.append((recipient, outcome))
                failures.append(self._failure(recipient, outcome, outcome.status))
            elif expired:
                failed.append((recipient, outcome))
                failures.append(self._failure(recipient, outcome, dsn.EXPIRED_STATUS))
            else:
                deferred.append((recipient, outcome))
        await self._record(claim, delivered, "delivered")
        if failures:
            await self._report(claim, content, failures, expired)
            await self._record(claim, failed, "failed")
        if deferred:
            retry_at = min(now + self.backoff(claim.attempts), claim.expires_at)
            await self._record(claim, deferred, "queued", retry_at)

    @staticmethod
    def _failure(recipient: str, outcome: Outcome, status: str) -> dsn.Failure:
        return dsn.Failure(
            recipient=recipient,
            status=status,
            reason=outcome.line,
            reply=outcome.line if outcome.code else "",
            remote_mta=outcome.host,
        )

    async def _record(
        self,
        claim: Claim,
        items: Sequence[tuple[str, Outcome]],
        state: str,
        retry_at: datetime | None = None,
    ) -> None:
        by_reply: dict[str, list[str]] = {}
        for recipient, outcome in items:
            by_reply.setdefault(outcome.summary, []).append(recipient)
        for reply, recipients in by_reply.items():
            await self.queue.settle(
                claim.message_id, recipients, state=state, reply=reply, retry_at=retry_at
            )

    async def _report(
        self, claim: Claim, content: bytes, failures: list[dsn.Failure], expired: bool
    ) -> None:
        settings = self.runtime.settings
        timed_out = expired and any(f.status == dsn.EXPIRED_STATUS for f in failures)
        report = dsn.build_report(
            hostname=self.hostname,
            domain=self.domain,
            mail_from=claim.mail_from,
            original=content,
            arrival_date=claim.created_at,
            failures=failures,
            expired_days=settings.queue.expire_days if timed_out else None,
        )
        if await dsn.deliver_report(self.runtime, claim.mail_from, report):
            log.info(
                "delivery report for %s sent to %s (%d recipients)",
                claim.message_id,
                claim.mail_from,
                len(failures),
            )

    @staticmethod
    def _log(claim: Claim, recipient: str, outcome: Outcome) -> None:
        log.info(
            "relay %s from %s to %s (attempt %d): %s, %s",
            claim.message_id,
            claim.mail_from,
            recipient,
            claim.attempts,
            outcome.state,
            outcome.summary,
        )
