"""`hygie serve`: every listener and background task in one asyncio loop.

Each listener announces itself on standard output with exactly one line,
`listening <name> <host>:<port> <tls-mode>`, once it accepts connections (port 0 in the
configuration picks a free port; the line gives the real one). SIGTERM (or SIGINT) stops
accepting, lets in-flight deliveries finish, closes the databases and returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import uvicorn
from starlette.types import ASGIApp

from directory.policy import Channel
from directory.trust import Directory
from mailserver.auth.core import Authenticator, AuthResult
from mailserver.config import ListenerSection, Settings
from mailserver.delivery import DeliveryPipeline
from mailserver.imap.server import ImapListener
from mailserver.metrics import Metrics
from mailserver.smtp.dkim import KnownKeys
from mailserver.smtp.relay import Relay
from mailserver.smtp.server import SmtpListener, TlsMode
from mailserver.tls import server_context
from mailserver.web.admin import admin_app
from mailserver.web.ops import ops_app
from retention.scheduler import RetentionScheduler
from storage.credentials import CredentialStore
from storage.db import Database, open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import MessageStore
from storage.notify import ChangeHub

log = logging.getLogger("hygie.service")

DRAIN_SECONDS = 30.0
T = TypeVar("T")


@dataclass
class Runtime:
    """The shared parts a running node (or a CLI command) works with."""

    settings: Settings
    messages_db: Database
    keys_db: Database
    keystore: KeyStore
    hub: ChangeHub
    store: MessageStore
    authenticator: Authenticator
    directory: Directory
    metrics: Metrics = field(default_factory=Metrics)
    stopping: bool = False
    _inflight: set[asyncio.Future[Any]] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        messages_db = open_database(
            settings.database_url,
            pool_size=settings.database.pool_size,
            echo=settings.database.echo,
        )
        keys_db = open_database(settings.keystore_url, pool_size=4)
        keystore = KeyStore(
            keys_db,
            MasterKeySource.from_settings(settings.path(settings.keys.master_key_file)),
            cache_seconds=settings.keys.mailbox_key_cache_seconds,
        )
        hub = ChangeHub(messages_db)
        store = MessageStore(messages_db, keystore, hub)
        authenticator = Authenticator(store, CredentialStore(messages_db), settings.auth)
        directory = Directory(messages_db, store, settings.server.domain)
        return cls(settings, messages_db, keys_db, keystore, hub, store, authenticator, directory)

    async def authenticate(
        self, address: str, secret: str, *, remote: str, protocol: str
    ) -> AuthResult:
        """The one authentication entry point for SMTP, IMAP and the web, counted."""
        result = await self.authenticator.authenticate(
            address, secret, remote=remote, protocol=protocol
        )
        self.metrics.auth_attempts.labels(protocol, result.reason).inc()
        return result

    async def close(self) -> None:
        await self.hub.stop()
        await self.messages_db.dispose()
        await self.keys_db.dispose()

    async def track(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a delivery so that a graceful stop waits for it to finish."""
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        self.metrics.inflight.set(len(self._inflight))
        # Forgotten when it ends, even if the client that waited for it went away.
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        self.metrics.inflight.set(len(self._inflight))

    async def drain(self, within: float = DRAIN_SECONDS) -> None:
        pending = {task for task in self._inflight if not task.done()}
        if pending:
            log.info("waiting for %d in-flight deliveries", len(pending))
            await asyncio.wait(pending, timeout=within)

    async def health(self) -> dict[str, bool]:
        checks = {
            "database": await self.messages_db.ping(),
            "keystore": await self.keys_db.ping(),
        }
        for name, ok in checks.items():
            self.metrics.database_up.labels(name).set(1 if ok else 0)
        return checks

    async def refresh_metrics(self) -> None:
        await self.health()
        states, messages = await self.store.counts()
        for state, count in states.items():
            self.metrics.mailboxes.labels(state).set(count)
        self.metrics.messages.set(messages)


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int
    tls_mode: str

    def announcement(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"listening {self.name} {host}:{self.port} {self.tls_mode}"


def bind(section: ListenerSection) -> socket.socket:
    """A listening socket for a section; port 0 lets the kernel pick a free one."""
    family = socket.AF_INET6 if ":" in section.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((section.host, section.port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {section.host}:{section.port}: {exc.strerror}") from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock


class _EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn inside our loop: the service, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpListener:
    def __init__(
        self, name: str, app: ASGIApp, sock: socket.socket, tls: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.sock = sock
        # Our own context (tls.server_context), not one uvicorn builds from file names:
        # uvicorn's leaves out the strict cipher profile and the no-renegotiation option.
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
        )
        self.server = _EmbeddedUvicorn(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name=self.name)
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


class Service:
    def __init__(self, settings: Settings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.runtime = Runtime.open(settings)
        self.listeners: list[Listener] = []
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self._ops: HttpListener | None = None

    def _announce(self, listener: Listener) -> None:
        self.listeners.append(listener)
        self.runtime.metrics.listeners.labels(listener.name).set(1)
        print(listener.announcement(), file=self.out, flush=True)
        log.info("%s", listener.announcement())

    async def start(self) -> None:
        await self.runtime.hub.start()
        if self.settings.ops.enabled:
            sock = bind(self.settings.ops)
            self._ops = HttpListener("ops", ops_app(self.runtime), sock)
            await self._ops.start()
            host, port = sock.getsockname()[:2]
            self._announce(Listener("ops", host, port, "none"))
        await self._start_smtp()
        await self._start_imap()
        if self.settings.admin.enabled:
            context = server_context(self.settings)
            sock = bind(self.settings.admin)
            admin = HttpListener("admin", admin_app(self.runtime), sock, tls=context)
            await admin.start()
            self._stoppers.append(admin.stop)
            host, port = sock.getsockname()[:2]
            self._announce(Listener("admin", host, port, "tls"))
        if self.settings.retention.enabled:
            retention = RetentionScheduler.create(
                self.runtime.store,
                self.settings.retention.model_dump(),
                domain=self.settings.server.domain,
            )
            retention.start()
            self._stoppers.append(retention.stop)  # stopped first: stoppers run in reverse

    async def _start_imap(self) -> None:
        """`imap` (STARTTLS, LOGINDISABLED before it) and `imaps` (implicit TLS)."""
        faces: tuple[tuple[str, ListenerSection, TlsMode], ...] = (
            ("imap", self.settings.imap, "starttls"),
            ("imaps", self.settings.imaps, "tls"),
        )
        for name, section, mode in faces:
            if not section.enabled:
                continue
            listener = ImapListener(self.runtime, name=name, tls_mode=mode)
            host, port = await listener.start(bind(section))
            self._stoppers.append(listener.stop)
            self._announce(Listener(name, host, port, mode))

    async def _start_smtp(self) -> None:
        """Operators on `smtp` (STARTTLS, client certificates), clients on `submission`
        (STARTTLS) and `submissions` (implicit TLS), all through one delivery pipeline."""
        settings = self.settings
        keys = KnownKeys.load(
            settings.path(settings.dkim.trusted_keys_file), use_dns=settings.dkim.dns
        )
        pipeline = DeliveryPipeline(self.runtime, keys)
        # The relay sends what submissions queue for other operators. Stoppers run in
        # reverse: appended before the listeners, it stops after they have stopped.
        relay = Relay(self.runtime)
        pipeline.on_queued = relay.wake
        await relay.start()
        self._stoppers.append(relay.stop)
        faces: tuple[tuple[str, ListenerSection, Channel, TlsMode], ...] = (
            ("smtp", settings.smtp, "inbound", "starttls"),
            ("submission", settings.submission, "submission", "starttls"),
            ("submissions", settings.submissions, "submission", "tls"),
        )
        for name, section, channel, mode in faces:
            if not section.enabled:
                continue
            listener = SmtpListener(
                self.runtime,
                pipeline,
                name=name,
                section=section,
                channel=channel,
                tls_mode=mode,
            )
            host, port = await listener.start(bind(section))
            self._stoppers.append(listener.stop)
            self._announce(Listener(name, host, port, mode))

    async def stop(self) -> None:
        """Stop accepting, let in-flight deliveries finish, close everything.

        The operations listener stays up until the end, answering 503 on /healthz so that
        a load balancer stops sending work here.
        """
        self.runtime.stopping = True
        for stopper in reversed(self._stoppers):
            await stopper()
        self._stoppers.clear()
        await self.runtime.drain()
        if self._ops is not None:
            await self._ops.stop()
            self._ops = None
        await self.runtime.close()

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            log.info("hygie serving %s", self.settings.server.domain)
            await stop.wait()
            log.info("stopping: no new connections; finishing in-flight deliveries")
        finally:
            await self.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("stopped")
