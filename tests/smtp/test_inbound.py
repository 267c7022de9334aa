"""Mail from other operators: STARTTLS required, mutual TLS, whitelist, DKIM."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives import serialization

from mailserver import tls
from mailserver.smtp.dkim import public_record, record_name, sign
from tests.databases import DatabasePair
from tests.smtp.conftest import Node, start_node

PEER_DOMAIN = "peer.test"
PEER_SENDER = "dr.peer@peer.test"
LOCAL = "alice.martin@hygie.test"


@dataclass
class Peer:
    """Another operator: its CA, its client certificate and its DKIM key."""

    ca: tls.Issued
    client: tls.Issued
    cert_file: Path
    key_file: Path
    dkim_pem: bytes

    @property
    def dn(self) -> str:
        return tls.subject_dn(self.client.certificate)

    def context(self, node: Node, *, with_certificate: bool = True) -> ssl.SSLContext:
        context = node.client_context()
        if with_certificate:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_peer(directory: Path, domain: str) -> Peer:
    ca = tls.create_ca(domain)
    client = tls.issue_client_certificate(ca, domain)
    cert_file, key_file = directory / f"{domain}.pem", directory / f"{domain}.key"
    tls.write_certificate(cert_file, client.certificate, ca.certificate)
    tls.write_private_key(key_file, client.key)
    dkim_pem = tls.new_rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Peer(ca, client, cert_file, key_file, dkim_pem)


def ca_pem(peer: Peer) -> bytes:
    return peer.ca.certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def peer_and_node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Peer, Node]]:
    peer = make_peer(tmp_path, PEER_DOMAIN)
    records = {record_name("peer", PEER_DOMAIN): public_record(peer.dkim_pem)}
    node = await start_node(
        tmp_path / "data",
        "hygie.test",
        databases,
        monkeypatch,
        trusted_cas=(ca_pem(peer),),
        dkim_records=records,
    )
    try:
        await node.professional(LOCAL, "10001234567")
        await node.directory.add_trusted_domain(
            actor="test", domain=PEER_DOMAIN, certificate_dn=peer.dn
        )
        yield peer, node
    finally:
        await node.service.stop()


def letter(sender: str = PEER_SENDER, recipient: str = LOCAL) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = "Lettre de liaison"
    msg["Message-ID"] = "<1@peer.test>"
    msg.set_content("Compte-rendu de sortie.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def connect(node: Node, context: ssl.SSLContext | None) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=node.ports["smtp"],
        tls_context=context,
        start_tls=context is not None,
    )
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def test_mail_before_starttls_is_530(peer_and_node: tuple[Peer, Node]) -> None:
    _peer, node = peer_and_node
    smtp = await connect(node, None)
    try:
        code, text = await smtp.execute_command(b"MAIL", f"FROM:<{PEER_SENDER}>".encode())
        assert code == 530 and text.startswith("5.7.0")
    finally:
        await smtp.quit()


async def test_whitelisted_peer_with_its_certificate_delivers(
    peer_and_node: tuple[Peer, Node],
) -> None:
    peer, node = peer_and_node
    smtp = await connect(node, peer.context(node))
    try:
        assert "auth" not in smtp.esmtp_extensions  # operators authenticate by certificate
        errors, reply = await smtp.sendmail(PEER_SENDER, [LOCAL], letter())
        assert errors == {} and reply.startswith("2.0.0 OK")
    finally:
        await smtp.quit()
    mailbox = await node.runtime.store.mailbox_by_address(LOCAL)
    assert mailbox is not None
    (stored,) = await node.inbox(mailbox.id)
    assert b"with ESMTPS id" in stored and b"dkim=none" in stored
    assert stored.endswith(letter().split(b"\r\n\r\n", 1)[1])


async def test_dkim_signature_of_the_peer_is_verified(peer_and_node: tuple[Peer, Node]) -> None:
    peer, node = peer_and_node
    original = letter()
    signed = sign(original, selector="peer", domain=PEER_DOMAIN, private_key_pem=peer.dkim_pem)
    tampered = signed + original.replace(b"Compte-rendu", b"Compte-rendu modifie")
    smtp = await connect(node, peer.context(node))
    try:
        await smtp.sendmail(PEER_SENDER, [LOCAL], signed + original)
        await smtp.sendmail(PEER_SENDER, [LOCAL], tampered)
    finally:
        await smtp.quit()
    mailbox = await node.runtime.store.mailbox_by_address(LOCAL)
    assert mailbox is not None
    good, bad = await node.inbox(mailbox.id)
    assert b"dkim=pass header.d=peer.test header.s=peer" in good
    assert b"dkim=fail header.d=peer.test" in bad


async def test_peer_without_a_client_certificate_is_refused(
    peer_and_node: tuple[Peer, Node],
) -> None:
    peer, node = peer_and_node
    smtp = await connect(node, peer.context(node, with_certificate=False))
    try:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.sendmail(PEER_SENDER, [LOCAL], letter())
        assert refused.value.code == 550 and "5.7.1" in refused.value.message
    finally:
        await smtp.quit()


async def test_certificate_from_an_untrusted_ca_is_refused(
    tmp_path: Path,
    peer_and_node: tuple[Peer, Node],
) -> None:
    _peer, node = peer_and_node
    (tmp_path / "impostor").mkdir()
    impostor = make_peer(tmp_path / "impostor", "impostor.test")
    # its CA is not in our bundle: the handshake fails, and no mail is accepted
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
        smtp = await connect(node, impostor.context(node))
        try:
            await smtp.sendmail(PEER_SENDER, [LOCAL], letter())
        finally:
            smtp.close()


async def test_trusted_ca_but_dn_of_another_domain_is_refused(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = make_peer(tmp_path, PEER_DOMAIN)
    other = make_peer(tmp_path, "other.test")
    node = await start_node(
        tmp_path / "data",
        "hygie.test",
        databases,
        monkeypatch,
        trusted_cas=(ca_pem(peer), ca_pem(other)),
    )
    try:
        await node.professional(LOCAL, "10001234567")
        await node.directory.add_trusted_domain(
            actor="t", domain=PEER_DOMAIN, certificate_dn=peer.dn
        )
        await node.directory.add_trusted_domain(
            actor="t", domain="other.test", certificate_dn=other.dn
        )
        smtp = await connect(node, other.context(node))
        try:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.sendmail(PEER_SENDER, [LOCAL], letter())
            assert refused.value.code == 550 and PEER_DOMAIN in refused.value.message
        finally:
            await smtp.quit()
    finally:
        await node.service.stop()


async def test_relaying_through_us_is_refused(peer_and_node: tuple[Peer, Node]) -> None:
    peer, node = peer_and_node
    await node.directory.add_trusted_domain(
        actor="t", domain="third.test", certificate_dn="CN=third.test,C=FR"
    )
    smtp = await connect(node, peer.context(node))
    try:
        await smtp.mail(PEER_SENDER)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("someone@third.test")
        assert refused.value.code == 550 and "5.7.1" in refused.value.message
    finally:
        await smtp.quit()


async def test_bounce_from_a_trusted_peer_is_accepted(peer_and_node: tuple[Peer, Node]) -> None:
    peer, node = peer_and_node
    smtp = await connect(node, peer.context(node))
    try:
        code, text = await smtp.execute_command(b"MAIL", b"FROM:<>")
        assert code == 250, text
        await smtp.rcpt(LOCAL)
        code, text = await smtp.data(letter("mailer-daemon@peer.test"))
        assert code == 250 and text.startswith("2.0.0 OK")
    finally:
        await smtp.quit()
