"""Submission (587 STARTTLS, 465 implicit TLS) as mail clients use it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, Node, start_node

ALICE = "alice.martin@hygie.test"
BOB = "bob.durand@hygie.test"


def message(
    sender: str,
    recipients: list[str],
    subject: str = "Compte-rendu",
    body: str = "Bonjour,\nvoici le compte-rendu.\n",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


async def client(node: Node, *, port_name: str = "submission") -> aiosmtplib.SMTP:
    implicit = port_name == "submissions"
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=node.ports[port_name],
        tls_context=node.client_context(),
        use_tls=implicit,
        start_tls=not implicit,
    )
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def test_listeners_are_announced(node: Node) -> None:
    assert {"smtp", "submission", "submissions", "ops"} <= set(node.ports)


async def test_no_auth_before_tls_and_no_mail_before_starttls(node: Node) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=node.ports["submission"], start_tls=False)
    await smtp.connect()
    try:
        await smtp.ehlo()
        assert "auth" not in smtp.esmtp_extensions
        assert "starttls" in smtp.esmtp_extensions
        code, text = await smtp.execute_command(b"MAIL", b"FROM:<" + ALICE.encode() + b">")
        assert code == 530 and "STARTTLS" in text
        code, _text = await smtp.execute_command(b"AUTH", b"PLAIN", b"AGFAYg==")
        assert code == 530
    finally:
        await smtp.quit()


async def test_authenticated_professional_sends_to_a_colleague(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")
    smtp = await client(node)
    try:
        assert {
            "auth",
            "pipelining",
            "enhancedstatuscodes",
            "chunking",
            "8bitmime",
            "smtputf8",
            "size",
        } <= set(smtp.esmtp_extensions)
        await smtp.login(ALICE, PASSWORD)
        errors, reply = await smtp.send_message(message(ALICE, [BOB]))
        assert errors == {} and reply.startswith("2.0.0 OK: stored as ")
    finally:
        await smtp.quit()
    (stored,) = await node.inbox(bob)
    assert b"voici le compte-rendu." in stored
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Received: from ")
    assert b"with ESMTPSA id " in head and b"(using TLSv1." in head
    assert b"Authentication-Results: mail.hygie.test;" in head
    assert f"auth=pass smtp.auth={ALICE}".encode() in head


async def test_wrong_password_is_535_and_counts_towards_lockout(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    smtp = await client(node)
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.login(ALICE, "not the password")
        assert refused.value.code == 535 and "5.7.8" in refused.value.message
    finally:
        await smtp.quit()


async def test_sending_as_someone_else_is_refused(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    await node.professional(BOB, "10007654321")
    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as envelope:
            await smtp.sendmail(BOB, [BOB], b"From: " + BOB.encode() + b"\r\n\r\nhi\r\n")
        assert envelope.value.code == 553 and "5.7.1" in envelope.value.message
        with pytest.raises(aiosmtplib.SMTPDataError) as header:
            await smtp.sendmail(ALICE, [BOB], message(BOB, [BOB]).as_bytes())
        assert header.value.code == 553 and "From:" in header.value.message
    finally:
        await smtp.quit()


async def test_member_sends_as_the_service_mailbox(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")
    await node.directory.create_structure_mailbox(
        actor="test",
        address="cardiologie@hygie.test",
        kind="ORG",
        structure_id_type="1",
        structure_id="750000001",
        name="CHU Exemple",
    )
    await node.directory.add_member(actor="test", shared="cardiologie@hygie.test", member=ALICE)
    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        await smtp.send_message(message("cardiologie@hygie.test", [BOB]))
    finally:
        await smtp.quit()
    assert len(await node.inbox(bob)) == 1


async def test_implicit_tls_on_465_with_auth_login(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")

    def send() -> None:
        context = node.client_context()
        with smtplib.SMTP_SSL("127.0.0.1", node.ports["submissions"], context=context) as smtp:
            smtp.ehlo()
            assert "AUTH=" not in smtp.esmtp_features.get("auth", "")
            smtp.login(ALICE, PASSWORD)  # smtplib prefers PLAIN, then LOGIN
            smtp.send_message(message(ALICE, [BOB]))

    await asyncio.to_thread(send)
    assert len(await node.inbox(bob)) == 1


async def test_unknown_local_recipient_is_550_5_1_1(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        await smtp.mail(ALICE)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("nobody@hygie.test")
        assert refused.value.code == 550 and "5.1.1" in refused.value.message
    finally:
        await smtp.quit()


async def test_domain_outside_the_trust_space_is_550_5_7_1(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        await smtp.mail(ALICE)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("someone@gmail.example")
        assert refused.value.code == 550 and "5.7.1" in refused.value.message
    finally:
        await smtp.quit()


async def test_patient_rules_end_to_end(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    patient_id, patient = await node.patient("279035121518989", dt.date(1979, 3, 14), "F")
    other_id, other = await node.patient("115067512300194", dt.date(2015, 6, 1), "M")
    smtp = await client(node)
    try:
        await smtp.login(patient, PASSWORD)
        await smtp.mail(patient)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as first:
            await smtp.rcpt(ALICE)  # the professional never wrote
        assert first.value.code == 550
        await smtp.rset()
        await smtp.mail(patient)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await smtp.rcpt(other)  # never to another patient
    finally:
        await smtp.quit()

    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        await smtp.send_message(message(ALICE, [patient], subject="Vos résultats"))
    finally:
        await smtp.quit()
    assert len(await node.inbox(patient_id)) == 1

    smtp = await client(node)
    try:
        await smtp.login(patient, PASSWORD)
        await smtp.send_message(message(patient, [ALICE], subject="Re: Vos résultats"))
    finally:
        await smtp.quit()

    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        await smtp.send_message(message(ALICE, [patient], subject="Fin", X_MSS_MES="FIN"))
    finally:
        await smtp.quit()
    smtp = await client(node)
    try:
        await smtp.login(patient, PASSWORD)
        await smtp.mail(patient)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as closed:
            await smtp.rcpt(ALICE)
        assert closed.value.code == 550 and "clos" in closed.value.message.lower()
    finally:
        await smtp.quit()
    assert other_id != patient_id


async def test_size_limit_is_552(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")
    limit = node.runtime.settings.limits.message_bytes
    smtp = await client(node)
    try:
        await smtp.login(ALICE, PASSWORD)
        with pytest.raises(aiosmtplib.SMTPResponseException) as declared:
            await smtp.mail(ALICE, options=[f"SIZE={limit + 1}"])
        assert declared.value.code == 552
        await smtp.rset()
        big = message(ALICE, [BOB])
        big.set_content(("y" * 900 + "\n") * (limit // 900 + 2))
        await smtp.mail(ALICE)  # no SIZE declared: the limit applies to the data itself
        await smtp.rcpt(BOB)
        with pytest.raises(aiosmtplib.SMTPDataError) as sent:
            await smtp.data(big.as_bytes())
        assert sent.value.code == 552 and "5.3.4" in sent.value.message

    finally:
        await smtp.quit()
    assert await node.inbox(bob) == []


async def test_bdat_chunks_are_stored_byte_for_byte(node: Node) -> None:
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")
    body = (f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: chunks\r\n\r\n" + "ligne\r\n" * 50).encode()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        node.ports["submissions"],
        ssl=node.client_context(),
        server_hostname="localhost",
    )

    async def reply() -> bytes:
        lines = []
        while True:
            line = await reader.readline()
            lines.append(line)
            if line[3:4] == b" ":
                return b"".join(lines)

    async def command(line: bytes) -> bytes:
        writer.write(line + b"\r\n")
        await writer.drain()
        return await reply()

    try:
        assert (await reply()).startswith(b"220 ")
        assert b"CHUNKING" in await command(b"EHLO client.test")
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
        assert (await command(b"AUTH PLAIN " + token)).startswith(b"235 2.7.0")
        assert (await command(f"MAIL FROM:<{ALICE}>".encode())).startswith(b"250 2.1.0")
        assert (await command(f"RCPT TO:<{BOB}>".encode())).startswith(b"250 2.1.5")
        half = len(body) // 2
        writer.write(f"BDAT {half}\r\n".encode() + body[:half])
        assert (await reply()).startswith(b"250 2.0.0")
        writer.write(f"BDAT {len(body) - half} LAST\r\n".encode() + body[half:])
        assert (await reply()).startswith(b"250 2.0.0 OK: stored as")
        await command(b"QUIT")
    finally:
        writer.close()
    (stored,) = await node.inbox(bob)
    assert stored.endswith(body)


async def test_every_reply_after_ehlo_has_an_enhanced_code(node: Node) -> None:
    smtp = await client(node)
    try:
        for verb in (b"NOOP", b"RSET", b"VRFY x", b"FOOBAR"):
            code, text = await smtp.execute_command(*verb.split())
            assert text[:1] in "245" and text[1] == ".", (verb, code, text)
    finally:
        await smtp.quit()


async def test_swaks_sends_over_starttls_with_auth(node: Node, tmp_path) -> None:
    import shutil

    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: .ci/run installs the Debian package")
    await node.professional(ALICE, "10001234567")
    bob = await node.professional(BOB, "10007654321")
    process = await asyncio.create_subprocess_exec(
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(node.ports["submission"]),
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        str(node.ca_file),
        "--tls-sni",
        "localhost",
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        PASSWORD,
        "--from",
        ALICE,
        "--to",
        BOB,
        "--header",
        f"From: {ALICE}",
        "--header",
        "Subject: swaks",
        "--body",
        "sent by swaks",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    (stored,) = await node.inbox(bob)
    assert b"sent by swaks" in stored


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_too_many_recipients_is_452(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node(
        tmp_path / "data", "hygie.test", databases, monkeypatch, HYGIE_LIMITS_RECIPIENTS="2"
    )
    try:
        await node.professional(ALICE, "10001234567")
        for n, rpps in enumerate(("10000000001", "10000000002", "10000000003")):
            await node.professional(f"dr{n}@hygie.test", rpps)
        smtp = await client(node)
        try:
            await smtp.login(ALICE, PASSWORD)
            await smtp.mail(ALICE)
            await smtp.rcpt("dr0@hygie.test")
            await smtp.rcpt("dr1@hygie.test")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as third:
                await smtp.rcpt("dr2@hygie.test")
            assert third.value.code == 452 and "4.5.3" in third.value.message
        finally:
            await smtp.quit()
    finally:
        await node.service.stop()
