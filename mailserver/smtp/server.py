"""SMTP listeners: `smtp` (operators, STARTTLS + client certificate), `submission`
(clients, STARTTLS) and `submissions` (clients, implicit TLS, RFC 8314)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from directory.policy import Channel
from mailserver.config import ListenerSection
from mailserver.delivery import DeliveryPipeline
from mailserver.smtp.handler import SmtpHandler
from mailserver.smtp.protocol import HygieSMTP
from mailserver.tls import server_context

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.smtp")
TlsMode = Literal["starttls", "tls"]


class ConnectionLimiter:
    """Connections per client address, across one listener."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        if self.counts[host] >= self.limit:
            return False
        self.counts[host] += 1
        return True

    def release(self, host: str) -> None:
        self.counts[host] -= 1
        if self.counts[host] <= 0:
            del self.counts[host]


class LimitedSMTP(HygieSMTP):
    """Refuses a client over its connection limit with 421 (RFC 5321 §4.2.2)."""

    def __init__(self, handler: Any, *, limiter: ConnectionLimiter, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limiter = limiter
        self._admitted: str | None = None

    async def _handle_client(self) -> None:
        assert self.session is not None and self.transport is not None
        host = str(self.session.peer[0]) if self.session.peer else "unknown"
        if not self.limiter.admit(host):
            await self.push("421 4.7.0 Too many connections from your address; try later")
            self.transport.close()
            return
        self._admitted = host
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted is not None:
            self.limiter.release(self._admitted)
            self._admitted = None
        super().connection_lost(error)


class SmtpListener:
    def __init__(
        self,
        runtime: Runtime,
        pipeline: DeliveryPipeline,
        *,
        name: str,
        section: ListenerSection,
        channel: Channel,
        tls_mode: TlsMode,
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.section = section
        self.tls_mode = tls_mode
        settings = runtime.settings
        # Operators present a client certificate; clients do not (RFC 8314 for 465).
        self.context = server_context(
            settings, client_auth="optional" if channel == "inbound" else "none"
        )
        limits = settings.limits
        self.handler = SmtpHandler(runtime, pipeline, channel, max_recipients=limits.recipients)
        self.limiter = ConnectionLimiter(limits.connections_per_client)
        self.server: asyncio.Server | None = None

    def _protocol(self) -> HygieSMTP:
        limits = self.runtime.settings.limits
        implicit = self.tls_mode == "tls"
        return LimitedSMTP(
            self.handler,
            limiter=self.limiter,
            implicit_tls=implicit,
            hostname=self.runtime.settings.server.announced_hostname,
            ident="Hygie ESMTP",
            tls_context=None if implicit else self.context,
            require_starttls=not implicit,
            auth_require_tls=not implicit,
            data_size_limit=limits.message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=limits.idle_seconds,
            command_call_limit=limits.commands_per_connection,
        )

    async def start(self, sock: socket.socket) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        ssl_context: ssl.SSLContext | None = self.context if self.tls_mode == "tls" else None
        self.server = await loop.create_server(self._protocol, sock=sock, ssl=ssl_context)
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
