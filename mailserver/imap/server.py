"""IMAP listeners: `imap` (143, STARTTLS, LOGINDISABLED before it) and `imaps` (993,
implicit TLS, RFC 8314)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Literal

from mailserver.imap.session import ImapSession
from mailserver.tls import server_context, tune_asyncio_tls_buffers

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.imap")


class ImapListener:
    def __init__(
        self, runtime: Runtime, *, name: str, tls_mode: Literal["starttls", "tls"]
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.tls_mode = tls_mode
        self.context = server_context(runtime.settings)
        tune_asyncio_tls_buffers()
        self.server: asyncio.Server | None = None
        self.sessions: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ImapSession(
            self.runtime,
            reader,
            writer,
            tls_context=self.context,
            implicit_tls=self.tls_mode == "tls",
        )
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            await session.run()
        except Exception:
            log.exception("IMAP session failed")
        finally:
            self.sessions.discard(task)

    async def start(self, sock: socket.socket) -> tuple[str, int]:
        self.server = await asyncio.start_server(
            self._serve,
            sock=sock,
            ssl=self.context if self.tls_mode == "tls" else None,
            limit=64 * 1024,
        )
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.wait(self.sessions, timeout=5)
