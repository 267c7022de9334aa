"""The outbound relay against a fake peer operator: a real SMTP server (aiosmtpd) with
STARTTLS that requires a client certificate from our CA, and records what it receives."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.utils
import io
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailserver import tls
from mailserver.config import Settings, load_settings
from mailserver.service import Runtime, Service
from mailserver.smtp.dkim import DkimResult, KnownKeys, public_record, record_name, verify
from mailserver.smtp.relay import Outcome, Relay, Unroutable
from storage.outbound import OutboundQueue, QueueEntry
from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, Node, start_node

DOMAIN = "hygie.test"
PEER_DOMAIN = "peer.test"
ALICE = "alice.martin@hygie.test"
DOCTOR = "dr.peer@peer.test"
NOBODY = "nobody@peer.test"
SECRET = "Compte-rendu confidentiel : résultat positif."
T = TypeVar("T")


# -- the fake peer operator --------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    content: bytes
    peer_dn: str | None
    tls_version: str | None
    helo: str


@dataclass
class PeerHandler:
    """aiosmtpd hooks: scripted replies, and a record of every accepted message."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)  # used first, in order
    data_reply: str = "250 2.0.0 OK: queued"
    mail_commands: int = 0
    data_commands: int = 0
    received: list[Received] = field(default_factory=list)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        reply = self.data_replies.pop(0) if self.data_replies else self.data_reply
        if reply.startswith("250"):
            assert server.transport is not None
            ssl_object = server.transport.get_extra_info("ssl_object")
            content = envelope.content
            assert isinstance(content, bytes)
            self.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    recipients=list(envelope.rcpt_tos),
                    content=content,
                    peer_dn=tls.peer_subject_dn(ssl_object) if ssl_object else None,
                    tls_version=ssl_object.version() if ssl_object else None,
                    helo=str(session.host_name),
                )
            )
        return reply


def server_certificate(ca: tls.Issued, names: list[str]) -> tls.Issued:
    """A TLS server certificate for exactly `names` (DNS names or IP addresses)."""
    key = tls.new_rsa_key()
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return tls.Issued(certificate, key)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Peer:
    """The other operator's MTA: its CA (which our node trusts) and a listening server."""

    ca: tls.Issued
    context: ssl.SSLContext
    handler: PeerHandler
    port: int
    server: asyncio.Server | None = None

    def trust_clients_of(self, node: Node) -> None:
        """Require client certificates issued by the node's CA (mutual TLS)."""
        self.context.load_verify_locations(cafile=str(node.ca_file))

    async def listen(self) -> None:
        def protocol() -> SMTP:
            return SMTP(
                self.handler,
                hostname="mx.peer.test",
                tls_context=self.context,
                require_starttls=True,
                decode_data=False,
            )

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(protocol, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def make_peer(
    directory: Path, *, names: list[str] | None = None, port: int = 0, ca: tls.Issued | None = None
) -> Peer:
    ca = ca or tls.create_ca(PEER_DOMAIN)
    issued = server_certificate(ca, names or ["mx.peer.test", "127.0.0.1"])
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "peer-server.pem", directory / "peer-server.key"
    tls.write_certificate(cert_file, issued.certificate, ca.certificate)
    if key_file.exists():
        key_file.unlink()
    tls.write_private_key(key_file, issued.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return Peer(ca, context, PeerHandler(), port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- helpers ------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 15.0) -> T:
    """Poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def queue_of(node: Node) -> OutboundQueue:
    return OutboundQueue(node.runtime.messages_db, node.runtime.keystore)


def letter(recipients: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "Lettre de liaison"
    msg["Message-ID"] = "<lettre-1@hygie.test>"
    msg.set_content(SECRET + "\n")
    return msg


async def submit(node: Node, recipients: list[str]) -> None:
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=node.ports["submission"],
        tls_context=node.client_context(),
        start_tls=True,
    )
    await smtp.connect()
    try:
        await smtp.login(ALICE, PASSWORD)
        errors, reply = await smtp.send_message(letter(recipients))
        assert errors == {} and reply.startswith("2.0.0"), reply
    finally:
        await smtp.quit()


async def inbox_of(node: Node, address: str) -> list[bytes]:
    mailbox = await node.runtime.store.mailbox_by_address(address)
    assert mailbox is not None
    return await node.inbox(mailbox.id)


async def one_report(node: Node) -> EmailMessage:
    (raw,) = await eventually(lambda: inbox_of(node, ALICE))
    return parse(raw)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=default_policy)


def sender_of(message: Message) -> str:
    return email.utils.parseaddr(str(message["From"]))[1]


def report_parts(report: EmailMessage) -> tuple[str, list[Message], str]:
    """Human text, delivery-status blocks, and the original headers of a DSN."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    human, status, headers = report.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    blocks = cast(list[Message], status.get_payload())
    return str(human.get_content()), blocks, str(headers.get_content())


# -- fixtures -----------------------------------------------------------------------------


Started = Callable[..., Awaitable[tuple[Peer, Node]]]


@pytest.fixture
async def peer_and_node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Started]:
    """Start a peer (as configured) and a node that routes peer.test to it."""
    started: list[tuple[Peer, Node]] = []

    async def start(peer: Peer | None = None, **env: str) -> tuple[Peer, Node]:
        peer = peer or make_peer(tmp_path / "peer")
        await peer.listen()
        node = await start_node(
            tmp_path / "data",
            DOMAIN,
            databases,
            monkeypatch,
            trusted_cas=(pem(peer.ca.certificate),),
            HYGIE_QUEUE_ROUTES=f"{PEER_DOMAIN}=127.0.0.1:{peer.port}",
            HYGIE_QUEUE_FIRST_RETRY_SECONDS="1",
            **cast(dict[str, Any], env),
        )
        started.append((peer, node))
        peer.trust_clients_of(node)
        await node.professional(ALICE, "10001234567")
        operator_dn = tls.subject_dn(tls.load_certificate(node.data_dir / "tls" / "operator.pem"))
        await node.directory.add_trusted_domain(
            actor="test", domain=PEER_DOMAIN, certificate_dn=operator_dn
        )
        return peer, node

    try:
        yield start
    finally:
        for peer, node in started:
            if not node.runtime.stopping:
                await node.service.stop()
            await peer.close()


# -- delivery ------------------------------------------------------------------------------


async def test_mail_goes_over_mutual_tls_dkim_signed(peer_and_node: Started) -> None:
    peer, node = await peer_and_node()
    await submit(node, [DOCTOR])
    (got,) = await eventually(lambda: asyncio.sleep(0, peer.handler.received))
    operator = tls.load_certificate(node.data_dir / "tls" / "operator.pem")
    assert got.peer_dn == tls.subject_dn(operator)  # our operator certificate, verified
    assert got.tls_version in ("TLSv1.2", "TLSv1.3")
    assert got.helo == "mail.hygie.test"
    assert (got.mail_from, got.recipients) == (ALICE, [DOCTOR])
    assert got.content.startswith(b"DKIM-Signature:")
    body = str(parse(got.content).get_content())
    assert body.replace("\r\n", "\n") == SECRET + "\n"
    dkim_key = (node.data_dir / "dkim" / "hygie.key").read_bytes()
    keys = KnownKeys({record_name("hygie", DOMAIN): public_record(dkim_key)}, use_dns=False)
    assert await verify(got.content, keys) == [DkimResult("pass", DOMAIN, "hygie")]
    assert await eventually(lambda: _empty(node))


async def _empty(node: Node) -> bool:
    return not await queue_of(node).entries()


async def test_a_4xx_is_retried_with_backoff(peer_and_node: Started) -> None:
    peer, node = await peer_and_node()
    peer.handler.data_replies = ["451 4.3.0 Try again later"]
    await submit(node, [DOCTOR])

    async def deferred() -> QueueEntry | None:
        entries = await queue_of(node).entries()
        if entries and entries[0].attempts == 1 and "451 4.3.0" in entries[0].last_reply:
            return entries[0]
        return None

    entry = await eventually(deferred)
    assert entry.state == "queued" and entry.recipient == DOCTOR
    assert entry.next_attempt_at - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=1.2)
    assert not peer.handler.received
    (got,) = await eventually(lambda: asyncio.sleep(0, peer.handler.received))
    assert got.recipients == [DOCTOR] and peer.handler.data_commands == 2
    assert await eventually(lambda: _empty(node))
    assert await inbox_of(node, ALICE) == []  # delivered in the end: no report


async def test_a_5xx_gives_the_sender_a_delivery_report(peer_and_node: Started) -> None:
    peer, node = await peer_and_node()
    peer.handler.rcpt_replies = {NOBODY: "550 5.1.1 No such mailbox here"}
    await submit(node, [DOCTOR, NOBODY])
    report = await one_report(node)
    (got,) = peer.handler.received
    assert got.recipients == [DOCTOR]  # the other recipient was delivered

    assert sender_of(report) == "MAILER-DAEMON@hygie.test"
    assert report["To"] == ALICE
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Return-Path"] == "<>"
    assert report["In-Reply-To"] == "<lettre-1@hygie.test>"
    human, blocks, headers = report_parts(report)
    assert "n'a pas pu être remis" in human and "could not be delivered" in human
    assert NOBODY in human and DOCTOR not in human
    per_message, *per_recipient = blocks
    assert per_message["Reporting-MTA"] == "dns; mail.hygie.test"
    assert per_message["Arrival-Date"]
    (failed,) = per_recipient
    assert failed["Final-Recipient"] == f"rfc822; {NOBODY}"
    assert failed["Action"] == "failed"
    assert failed["Status"] == "5.1.1"
    assert failed["Remote-MTA"] == "dns; [127.0.0.1]"
    assert failed["Diagnostic-Code"] == "smtp; 550 5.1.1 No such mailbox here"
    assert "Subject: Lettre de liaison" in headers and "Message-ID:" in headers
    raw = report.as_bytes()
    assert b"confidentiel" not in raw and b"Compte-rendu" not in raw  # never the body
    assert await eventually(lambda: _empty(node))


async def test_expiry_gives_a_report_with_4_4_7(peer_and_node: Started) -> None:
    peer, node = await peer_and_node(HYGIE_QUEUE_EXPIRE_DAYS=str(2 / 86400))
    peer.handler.data_reply = "451 4.3.0 Mailbox busy"
    await submit(node, [DOCTOR])
    report = await one_report(node)
    assert peer.handler.data_commands >= 2 and not peer.handler.received
    human, blocks, _headers = report_parts(report)
    (failed,) = blocks[1:]
    assert failed["Status"] == "4.4.7"
    assert failed["Action"] == "failed"
    assert failed["Diagnostic-Code"] == "smtp; 451 4.3.0 Mailbox busy"
    assert "délai" in human and "within" in human
    assert await eventually(lambda: _empty(node))


@pytest.mark.parametrize("problem", ["untrusted CA", "name mismatch"])
async def test_a_peer_that_fails_verification_is_never_sent_to(
    problem: str, tmp_path: Path, peer_and_node: Started
) -> None:
    peer = make_peer(tmp_path / "peer")
    if problem == "untrusted CA":
        impostor = make_peer(tmp_path / "impostor", ca=tls.create_ca("impostor.test"))
        peer.context = impostor.context  # a certificate from a CA the node does not trust
    else:
        peer = make_peer(tmp_path / "peer", names=["elsewhere.test"], ca=peer.ca)
    peer, node = await peer_and_node(peer, HYGIE_QUEUE_EXPIRE_DAYS=str(2.5 / 86400))
    await submit(node, [DOCTOR])

    async def deferred() -> QueueEntry | None:
        entries = await queue_of(node).entries()
        return entries[0] if entries and entries[0].last_reply else None

    entry = await eventually(deferred)
    assert entry.state == "queued"
    assert "4.7.5 TLS with 127.0.0.1" in entry.last_reply
    expected = "certificate verify failed" if problem == "untrusted CA" else "mismatch"
    assert expected in entry.last_reply
    report = await one_report(node)
    assert peer.handler.mail_commands == 0 and not peer.handler.received
    human, blocks, _headers = report_parts(report)
    assert blocks[1]["Status"] == "4.4.7"
    assert blocks[1]["Diagnostic-Code"] is None  # no server ever answered
    assert "TLS with 127.0.0.1" in human


async def test_the_queue_survives_a_restart(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there yet: the first attempt fails
    peer = make_peer(tmp_path / "peer", port=port)
    node = await start_node(
        tmp_path / "data",
        DOMAIN,
        databases,
        monkeypatch,
        trusted_cas=(pem(peer.ca.certificate),),
        HYGIE_QUEUE_ROUTES=f"{PEER_DOMAIN}=127.0.0.1:{port}",
        HYGIE_QUEUE_FIRST_RETRY_SECONDS="1",
    )
    try:
        await node.professional(ALICE, "10001234567")
        await node.directory.add_trusted_domain(
            actor="test", domain=PEER_DOMAIN, certificate_dn="CN=peer.test"
        )
        await submit(node, [DOCTOR])

        async def deferred() -> QueueEntry | None:
            entries = await queue_of(node).entries()
            return entries[0] if entries and entries[0].last_reply else None

        entry = await eventually(deferred)
        assert "4.4.1 cannot connect" in entry.last_reply
    finally:
        await node.service.stop()

    peer.trust_clients_of(node)
    await peer.listen()
    service = Service(load_settings(node.data_dir), out=io.StringIO())
    await service.start()
    try:
        restarted = Node(node.data_dir, service, {})
        (got,) = await eventually(lambda: asyncio.sleep(0, peer.handler.received))
        assert got.recipients == [DOCTOR]
        assert await eventually(lambda: _empty(restarted))
    finally:
        await service.stop()
        await peer.close()


async def test_stop_finishes_the_attempt_in_flight(peer_and_node: Started) -> None:
    peer, node = await peer_and_node()
    started = asyncio.Event()
    original = peer.handler.handle_DATA

    async def slow_data(server: SMTP, session: Session, envelope: Envelope) -> str:
        started.set()
        await asyncio.sleep(0.5)
        return await original(server, session, envelope)

    peer.handler.handle_DATA = slow_data  # type: ignore[method-assign]
    await submit(node, [DOCTOR])
    await asyncio.wait_for(started.wait(), 10)
    await node.service.stop()
    assert len(peer.handler.received) == 1
    # the node is stopped; read its queue with a fresh runtime
    runtime = Runtime.open(load_settings(node.data_dir))
    try:
        assert await OutboundQueue(runtime.messages_db, runtime.keystore).entries() == []
    finally:
        await runtime.close()


# -- routing and backoff (no network) -----------------------------------------------------


def relay_for(routes: str = "", **queue: Any) -> Relay:
    settings = Settings.model_validate(
        {"server": {"domain": DOMAIN}, "queue": {"routes": routes, **queue}}
    )
    runtime = SimpleNamespace(settings=settings, messages_db=None, keystore=None)
    return Relay(cast(Runtime, runtime))


def fake_resolver(
    monkeypatch: pytest.MonkeyPatch, answer: list[tuple[int, str]] | type[Exception]
) -> list[str]:
    asked: list[str] = []

    async def resolve(name: str, rdtype: str, **_kwargs: Any) -> list[Any]:
        asked.append(f"{name} {rdtype}")
        if not isinstance(answer, list):
            raise answer
        return [
            SimpleNamespace(preference=preference, exchange=dns.name.from_text(host))
            for preference, host in answer
        ]

    monkeypatch.setattr(dns.asyncresolver, "resolve", resolve)
    return asked


async def test_static_routes_come_before_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_resolver(monkeypatch, [(10, "mx.other.test")])
    relay = relay_for("peer.test=127.0.0.1:2525,v6.test=[::1]:2626")
    assert await relay.route("PEER.test") == [("127.0.0.1", 2525)]
    assert await relay.route("v6.test") == [("::1", 2626)]
    assert asked == []
    assert await relay.route("other.test") == [("mx.other.test", 25)]
    assert asked == ["other.test MX"]


async def test_mx_records_are_tried_by_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, [(20, "backup.other.test."), (10, "mx.other.test.")])
    assert await relay_for().route("other.test") == [
        ("mx.other.test", 25),
        ("backup.other.test", 25),
    ]


async def test_without_mx_the_domain_itself_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, dns.resolver.NoAnswer)
    assert await relay_for().route("other.test") == [("other.test", 25)]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (dns.resolver.NXDOMAIN, "5.1.2"),
        ([(0, ".")], "5.1.10"),
        (dns.exception.Timeout, "4.4.3"),
    ],
)
async def test_unroutable_domains(
    monkeypatch: pytest.MonkeyPatch, answer: list[tuple[int, str]] | type[Exception], status: str
) -> None:
    fake_resolver(monkeypatch, answer)
    with pytest.raises(Unroutable) as refused:
        await relay_for().route("other.test")
    assert refused.value.outcome.status == status


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    relay = relay_for(first_retry_seconds=60, max_retry_seconds=600)
    for attempts, expected in ((1, 60), (2, 120), (3, 240), (4, 480)):
        delay = relay.backoff(attempts).total_seconds()
        assert expected * 0.9 <= delay <= expected * 1.1
    assert all(relay.backoff(n).total_seconds() <= 600 for n in range(5, 40))
    assert relay.backoff(10).total_seconds() >= 540


def test_outcomes_follow_the_reply_class() -> None:
    assert Outcome.reply(250, "2.0.0 OK", "h").state == "delivered"
    assert Outcome.reply(550, "5.7.1 not whitelisted", "h").status == "5.7.1"
    assert Outcome.reply(554, "Transaction failed", "h").status == "5.0.0"
    assert Outcome.reply(451, "4.3.0 later", "h").state == "queued"
    assert Outcome.reply(552, "4.2.2 mismatch", "h").status == "5.0.0"  # class wins
    assert Outcome("4.4.1", "cannot connect", host="h").summary == "h: 4.4.1 cannot connect"
