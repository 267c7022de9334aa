"""What Hygie does at each step of an SMTP dialogue: authentication, policy, delivery.

One handler class serves both faces: `inbound` (other operators, mutual TLS, port 25) and
`submission` (mail clients, 587 with STARTTLS and 465 with implicit TLS, AUTH required).
"""

from __future__ import annotations

import base64
import binascii
import logging
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, Session

from directory.policy import Channel, Connection, check_sender, decide
from mailserver.delivery import Arrival, DeliveryError, DeliveryPipeline
from mailserver.smtp.protocol import NULL_SENDER, HygieSMTP
from storage.messages import MailboxInfo

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.smtp")


def from_addresses(content: bytes) -> list[str]:
    """The addresses in the message's From: header fields (RFC 5322 §3.6.2)."""
    end = content.find(b"\r\n\r\n")
    headers = BytesHeaderParser(policy=default_policy).parsebytes(
        content[: end + 4] if end >= 0 else content
    )
    values = [str(v) for v in headers.get_all("From", [])]
    return [address for _name, address in getaddresses(values) if address]


class SmtpHandler:
    def __init__(
        self,
        runtime: Runtime,
        pipeline: DeliveryPipeline,
        channel: Channel,
        *,
        max_recipients: int,
    ) -> None:
        self.runtime = runtime
        self.pipeline = pipeline
        self.channel = channel
        self.max_recipients = max_recipients

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _mailbox(session: Session) -> MailboxInfo | None:
        return getattr(session, "mailbox", None)

    def _connection(self, server: HygieSMTP, session: Session) -> Connection:
        return Connection(
            channel=self.channel,
            authenticated=self._mailbox(session),
            peer_certificate_dn=server.tls.peer_dn if self.channel == "inbound" else None,
        )

    # -- EHLO --------------------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: HygieSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # RFC 2920 PIPELINING, RFC 2034 ENHANCEDSTATUSCODES, RFC 3030 CHUNKING.
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-CHUNKING"]
        if self.channel == "inbound":
            # Operators authenticate with their certificate, never with a password.
            responses = [line for line in responses if not line.startswith("250-AUTH")]
        return [*responses[:-1], *extra, responses[-1]]

    # -- AUTH (RFC 4954; PLAIN RFC 4616; LOGIN) -----------------------------------------

    async def _authenticate(self, server: HygieSMTP, login: str, password: str) -> AuthResult:
        peer = server.session.peer if server.session else None
        remote = str(peer[0]) if peer else "unknown"
        result = await self.runtime.authenticate(
            login, password, remote=remote, protocol=self.channel
        )
        if result.ok and result.mailbox is not None:
            assert server.session is not None
            server.session.mailbox = result.mailbox  # type: ignore[attr-defined]
            return AuthResult(success=True, auth_data=result.mailbox.address)
        if result.reason in ("locked-account", "locked-remote"):
            return AuthResult(
                success=False,
                message="454 4.7.0 Too many failed attempts; try again later",
            )
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
        )

    async def handle_AUTH(
        self, server: HygieSMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        if self.channel == "inbound":
            return "502 5.5.1 AUTH is not offered here: operators present a certificate"
        return MISSING

    async def auth_PLAIN(self, server: HygieSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(blob, bytes)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                return AuthResult(
                    success=False, handled=False, message="501 5.5.2 Cannot decode base64"
                )
        parts = blob.split(b"\0")
        if len(parts) != 3:
            return AuthResult(
                success=False, handled=False, message="501 5.5.2 Malformed PLAIN response"
            )
        authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != login.lower():
            return AuthResult(
                success=False, message="535 5.7.8 Acting for another identity is not allowed"
            )
        return await self._authenticate(server, login, password)

    async def auth_LOGIN(self, server: HygieSMTP, args: list[str]) -> AuthResult:
        if len(args) == 2:
            try:
                login = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                return AuthResult(
                    success=False, handled=False, message="501 5.5.2 Cannot decode base64"
                )
        else:
            answer = await server.challenge_auth("Username:")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            login = answer
        secret = await server.challenge_auth("Password:")
        if secret is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(secret, bytes)
        return await self._authenticate(
            server, login.decode("utf-8", "replace"), secret.decode("utf-8", "replace")
        )

    # -- envelope ----------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: HygieSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.channel == "submission" and self._mailbox(session) is None:
            return "530 5.7.0 Authentication required"
        if self.channel == "inbound" and not server.has_tls:
            return "530 5.7.0 Must issue a STARTTLS command first"
        if address == NULL_SENDER:
            sender = ""
        else:
            sender = address
        decision = await check_sender(
            self.runtime.directory, sender or NULL_SENDER, self._connection(server, session)
        )
        if not decision.allowed:
            log.info("MAIL refused %s: %s", decision.status, decision.reason)
            return decision.reply()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: HygieSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 asks the client to send the rest in another message.
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
        decision = await decide(
            self.runtime.directory,
            envelope.mail_from or NULL_SENDER,
            address,
            self._connection(server, session),
        )
        if not decision.allowed:
            log.info("RCPT refused %s: %s", decision.status, decision.reason)
            return decision.reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def _from_header_refusal(
        self, server: HygieSMTP, session: Session, content: bytes
    ) -> str | None:
        """Submission: every `From:` address must be one the user may send as."""
        addresses = from_addresses(content)
        if not addresses:
            return "550 5.6.0 The message has no From: header (RFC 5322 §3.6)"
        for address in addresses:
            decision = await check_sender(
                self.runtime.directory, address, self._connection(server, session)
            )
            if not decision.allowed:
                return f"553 5.7.1 From: {decision.reason}"
        return None

    async def handle_DATA(self, server: HygieSMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            content = envelope.content
        if self.channel == "submission":
            refusal = await self._from_header_refusal(server, session, content)
            if refusal is not None:
                return refusal
        peer: Any = session.peer
        arrival = Arrival(
            channel=self.channel,
            mail_from=envelope.mail_from or NULL_SENDER,
            recipients=list(envelope.rcpt_tos),
            content=content,
            helo=session.host_name or "unknown",
            peer_ip=str(peer[0]) if peer else "unknown",
            tls=server.tls,
            authenticated=getattr(self._mailbox(session), "address", None),
        )
        try:
            delivered = await self.pipeline.deliver(arrival)
        except DeliveryError as exc:
            return exc.reply
        return f"250 2.0.0 OK: stored as {delivered.queue_id}"
