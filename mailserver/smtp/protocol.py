"""aiosmtpd's SMTP protocol, extended where it falls short of what Hygie promises.

- ENHANCEDSTATUSCODES (RFC 2034): every reply after the greeting carries an enhanced
  status code; replies written by aiosmtpd without one get the RFC 3463 code for their
  class, in one place (`push`).
- CHUNKING (RFC 3030): the BDAT command, which aiosmtpd lacks.
- The null reverse-path `MAIL FROM:<>` (RFC 5321 §4.5.5) that aiosmtpd refuses.
- The TLS details of the connection (version, cipher, verified peer certificate DN) for
  policy and for the `Received` header, whether TLS came from STARTTLS or implicit TLS.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Session, syntax

from mailserver.tls import peer_subject_dn

NULL_SENDER = "<>"
_ENHANCED = re.compile(rb"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}")
# RFC 3463 defaults for replies written without an enhanced code, by reply code.
_DEFAULT_ENHANCED = {
    b"211": b"2.0.0",
    b"214": b"2.0.0",
    b"221": b"2.0.0",
    b"235": b"2.7.0",
    b"250": b"2.0.0",
    b"251": b"2.1.5",
    b"252": b"2.5.0",
    b"421": b"4.7.0",
    b"450": b"4.2.0",
    b"451": b"4.3.0",
    b"452": b"4.3.1",
    b"454": b"4.7.0",
    b"500": b"5.5.2",
    b"501": b"5.5.4",
    b"502": b"5.5.1",
    b"503": b"5.5.1",
    b"504": b"5.5.4",
    b"530": b"5.7.0",
    b"535": b"5.7.8",
    b"538": b"5.7.11",
    b"550": b"5.7.1",
    b"552": b"5.3.4",
    b"553": b"5.1.3",
    b"554": b"5.0.0",
    b"555": b"5.5.4",
}


def with_enhanced_code(reply: bytes) -> bytes:
    """Add the RFC 3463 code a reply lacks (not to 220/334/354 or multi-line EHLO)."""
    code = reply[:3]
    if _ENHANCED.match(reply) or code not in _DEFAULT_ENHANCED or len(reply) < 4:
        return reply
    if reply[3:4] not in (b" ", b"-"):
        return reply
    return code + reply[3:4] + _DEFAULT_ENHANCED[code] + b" " + reply[4:]


class TlsInfo:
    """What the policy and the trace headers need to know of a connection's TLS."""

    def __init__(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
        self.active = ssl_object is not None
        self.version = ssl_object.version() if ssl_object else None
        cipher = ssl_object.cipher() if ssl_object else None
        self.cipher = cipher[0] if cipher else None
        self.bits = cipher[2] if cipher else None
        self.peer_dn = peer_subject_dn(ssl_object) if ssl_object else None


class HygieSMTP(SMTP):
    """One SMTP connection. Policy and delivery live in the handler, not here."""

    def __init__(self, handler: Any, *, implicit_tls: bool = False, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.implicit_tls = implicit_tls
        self._tls_info: TlsInfo | None = None

    # -- replies -------------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        raw = status.encode("utf-8") if isinstance(status, str) else bytes(status)
        session = self.session
        if session is not None and getattr(session, "greeted", False):
            raw = with_enhanced_code(raw)
        await super().push(raw)

    # -- TLS ---------------------------------------------------------------------------

    @property
    def tls(self) -> TlsInfo:
        """TLS of this connection, read once it is established (STARTTLS or implicit)."""
        if self._tls_info is None or not self._tls_info.active:
            transport = self.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            self._tls_info = TlsInfo(ssl_object)
        return self._tls_info

    @property
    def has_tls(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    # -- greeting state ----------------------------------------------------------------

    def _create_session(self) -> Session:
        session = super()._create_session()
        session.greeted = False  # type: ignore[attr-defined]
        return session

    async def smtp_EHLO(self, hostname: str) -> None:
        await super().smtp_EHLO(hostname)
        if self.session is not None and self.session.host_name:
            self.session.greeted = True  # type: ignore[attr-defined]

    # -- MAIL FROM:<> --------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        stripped = arg.lstrip()
        if stripped.startswith("<>"):
            return NULL_SENDER, stripped[2:].strip()
        address, params = super()._getaddr(arg)
        return address, params

    # -- BDAT (RFC 3030) ---------------------------------------------------------------

    @syntax("BDAT chunk-size [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        """Receive one chunk; LAST ends the message and hands it to the DATA hook.

        RFC 3030 §2: the chunk is read in full even when the command is refused, so the
        dialogue stays in step; errors are answered after the chunk.
        """
        if await self.check_helo_needed():
            return
        parts = (arg or "").split()
        if (
            not parts
            or not parts[0].isdigit()
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            await self.push("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        envelope = self.envelope
        assert envelope is not None
        chunk = await self._read_chunk(size)
        if not envelope.mail_from or not envelope.rcpt_tos:
            await self.push("503 5.5.1 BDAT needs MAIL and at least one RCPT first")
            self._bdat_reset()
            return
        if getattr(envelope, "bdat_failed", False):
            await self.push("503 5.5.1 This message was already refused; send RSET")
            return
        buffer: bytearray = getattr(envelope, "bdat_buffer", None) or bytearray()
        envelope.bdat_buffer = buffer  # type: ignore[attr-defined]
        if chunk is None or (self.data_size_limit and len(buffer) + size > self.data_size_limit):
            envelope.bdat_failed = True  # type: ignore[attr-defined]
            buffer.clear()
            await self.push("552 5.3.4 Message exceeds the maximum message size")
            return
        buffer.extend(chunk)
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        envelope.content = envelope.original_content = bytes(buffer)
        buffer.clear()
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 2.0.0 OK" if not isinstance(status, str) else status)

    async def _read_chunk(self, size: int) -> bytes | None:
        """Read exactly `size` octets; past the size limit they are read and dropped."""
        limit = self.data_size_limit or 0
        keep = not limit or size <= limit
        received = bytearray()
        remaining = size
        while remaining:
            piece = await self._reader.read(min(remaining, 65536))
            if not piece:
                raise asyncio.IncompleteReadError(bytes(received), size)
            remaining -= len(piece)
            if keep:
                received.extend(piece)
        return bytes(received) if keep else None

    def _bdat_reset(self) -> None:
        self._set_post_data_state()  # type: ignore[no-untyped-call]
