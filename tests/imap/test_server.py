"""The IMAP server driven by real clients: Python's imaplib and aioimaplib, over TLS."""

from __future__ import annotations

import asyncio
import imaplib
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import aioimaplib
import pytest

from storage import audit
from storage.messages import AppendTarget
from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, Node, start_node

T = TypeVar("T")
ALICE = "alice.martin@hygie.test"
BOB = "bob.durand@hygie.test"
LETTER = (
    b"From: Dr Bob Durand <bob.durand@hygie.test>\r\n"
    b"To: Dr Alice Martin <alice.martin@hygie.test>\r\n"
    b"Subject: Compte-rendu de consultation\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <cr-1@hygie.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Patient vu ce jour, examen normal.\r\n"
)


@pytest.fixture
async def node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Node]:
    running = await start_node(tmp_path / "data", "hygie.test", databases, monkeypatch)
    try:
        await running.professional(ALICE, "10001234567")
        await running.professional(BOB, "10007654321")
        yield running
    finally:
        await running.service.stop()


async def deliver(node: Node, address: str, raw: bytes = LETTER, folder: str = "INBOX") -> int:
    box = await node.runtime.store.mailbox_by_address(address)
    assert box is not None
    (appended,) = await node.runtime.store.append(raw, [AppendTarget(box.id, folder)])
    return appended.uid


def context(node: Node) -> ssl.SSLContext:
    return node.client_context()


async def in_thread(work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work)


async def test_login_is_disabled_before_starttls(node: Node) -> None:
    def session() -> None:
        imap = imaplib.IMAP4("127.0.0.1", node.ports["imap"])
        assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
        assert not any(c.startswith("AUTH=") for c in imap.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match=r"PRIVACYREQUIRED|disabled"):
            imap.login(ALICE, PASSWORD)
        imap.starttls(ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()

    await in_thread(session)


async def test_fetch_store_search_expunge_over_imaps(node: Node) -> None:
    await deliver(node, ALICE)
    await deliver(node, ALICE, LETTER.replace(b"examen normal", b"examen anormal"))

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[] FLAGS RFC822.SIZE)")
        assert typ == "OK"
        assert data[0][1] == LETTER
        assert b"RFC822.SIZE %d" % len(LETTER) in data[0][0] + data[1]
        typ, data = imap.fetch("1:2", "(ENVELOPE)")
        assert b'"Compte-rendu de consultation"' in data[0]
        typ, data = imap.search("UTF-8", "BODY", '"anormal"')
        assert data == [b"2"]
        typ, data = imap.search(None, "FROM", "bob.durand", "UNSEEN")
        assert data == [b"1 2"]
        typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
        assert b"\\Deleted" in data[0]
        typ, data = imap.expunge()
        assert data == [b"1"]
        typ, data = imap.fetch("1", "(BODY[TEXT])")
        assert b"anormal" in data[0][1]
        typ, data = imap.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]  # BODY[] (not PEEK) sets \Seen
        imap.logout()

    await in_thread(session)


async def test_list_create_rename_delete_status_append_copy_move(node: Node) -> None:
    await deliver(node, ALICE)

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        typ, data = imap.list()
        listing = b"\n".join(data)
        assert b'(\\HasNoChildren \\Sent) "/" Sent' in listing
        assert b"\\Trash" in listing and b"INBOX" in listing
        assert imap.create("Patients/Dupont")[0] == "OK"
        assert imap.rename("Patients/Dupont", "Patients/Durand")[0] == "OK"
        typ, data = imap.list('""', "Patients/%")
        assert data == [b'(\\HasNoChildren) "/" Patients/Durand']
        typ, data = imap.status("INBOX", "(MESSAGES UNSEEN UIDNEXT SIZE)")
        assert b"MESSAGES 1" in data[0] and b"UNSEEN 1" in data[0] and b"UIDNEXT 2" in data[0]
        typ, data = imap.append("Patients/Durand", "(\\Seen)", None, LETTER)
        assert typ == "OK" and re.search(rb"APPENDUID \d+ 1", data[0])
        imap.select("INBOX")
        typ, data = imap._simple_command("UID", "COPY", "1", "Archive")  # type: ignore[attr-defined]
        assert typ == "OK" and re.search(rb"COPYUID \d+ 1 1", data[0])
        typ, data = imap.uid("MOVE", "1", "Patients/Durand")
        assert typ == "OK"
        imap.select("Patients/Durand")
        typ, data = imap.fetch("1:*", "(UID FLAGS)")
        assert len(data) == 2
        assert imap.delete("Patients/Durand")[0] == "OK"
        typ, data = imap.select("Nope")
        assert typ == "NO"
        imap.logout()

    await in_thread(session)


async def test_user_cannot_reach_other_mailboxes(node: Node) -> None:
    await deliver(node, BOB)

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        for name in (f"Shared/{BOB}/INBOX", "../bob/INBOX", "Shared/x@y/INBOX"):
            typ, _data = imap.select(f'"{name}"')
            assert typ == "NO", name
        typ, data = imap.create('"bad*name"')
        assert typ == "NO"
        typ, data = imap.list('""', "*")
        assert not any(BOB.encode() in line for line in data)
        imap.logout()

    await in_thread(session)


async def test_member_sees_the_service_mailbox_in_the_shared_namespace(node: Node) -> None:
    cardio = await node.directory.create_structure_mailbox(
        actor="test",
        address="cardiologie@hygie.test",
        kind="ORG",
        structure_id_type="1",
        structure_id="750000001",
        name="CHU Exemple",
    )
    await node.directory.add_member(actor="test", shared=cardio.address, member=ALICE)
    await deliver(node, cardio.address)

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        typ, data = imap.namespace()
        assert b'(("Shared/" "/"))' in data[0]
        typ, data = imap.list('""', "Shared/*")
        assert any(b"Shared/cardiologie@hygie.test/INBOX" in line for line in data)
        typ, data = imap.select('"Shared/cardiologie@hygie.test/INBOX"')
        assert (typ, data) == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Compte-rendu" in data[0][1]
        imap.logout()

    await in_thread(session)


async def test_malformed_commands_get_bad_and_the_session_goes_on(node: Node) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.ports["imaps"], ssl=context(node)
    )

    async def command(line: bytes) -> bytes:
        writer.write(line + b"\r\n")
        await writer.drain()
        lines = b""
        tag = line.split(b" ", 1)[0]
        while True:
            got = await asyncio.wait_for(reader.readline(), 5)
            lines += got
            if got.startswith(tag + b" ") or got.startswith(b"* BAD"):
                return lines

    try:
        assert (await reader.readline()).startswith(b"* OK [CAPABILITY")
        assert b"a1 BAD" in await command(b"a1 FROBNICATE")
        assert b"a2 BAD" in await command(b'a2 LOGIN "unterminated')
        assert b"a3 BAD" in await command(b"a3 SELECT INBOX")  # not authenticated
        assert b"a4 OK" in await command(f'a4 LOGIN {ALICE} "{PASSWORD}"'.encode())
        assert b"a5 BAD" in await command(b"a5 FETCH 1:* (BODY[")
        assert b"a6 OK" in await command(b"a6 NOOP")
    finally:
        writer.close()


async def test_idle_sees_another_sessions_delivery_and_flag_change(node: Node) -> None:
    await deliver(node, ALICE)
    client = aioimaplib.IMAP4_SSL(
        host="127.0.0.1", port=node.ports["imaps"], ssl_context=context(node)
    )
    await client.wait_hello_from_server()
    await client.login(ALICE, PASSWORD)
    await client.select("INBOX")
    idle = await client.idle_start(timeout=10)
    await asyncio.sleep(0.2)
    await deliver(node, ALICE)
    pushed = await client.wait_server_push(timeout=5)
    assert any(
        b"2 EXISTS" in (line if isinstance(line, bytes) else line.encode()) for line in pushed
    )
    client.idle_done()
    await asyncio.wait_for(idle, 5)

    other = imaplib.IMAP4_SSL

    def flag() -> None:
        imap = other("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "(\\Flagged)")
        imap.logout()

    await in_thread(flag)
    response = await client.noop()
    assert any(
        b"FETCH" in line and b"\\Flagged" in line
        for line in response.lines
        if isinstance(line, bytes)
    )
    await client.logout()


async def test_condstore_unchangedsince_and_changedsince(node: Node) -> None:
    await deliver(node, ALICE)
    await deliver(node, ALICE)

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        assert imap.enable("CONDSTORE")[0] == "OK"
        typ, data = imap.select("INBOX")
        assert typ == "OK"
        highest = int(
            re.search(
                rb"HIGHESTMODSEQ (\d+)", b" ".join(imap.untagged_responses.get("OK", []))
            ).group(1)
        )  # type: ignore[union-attr]
        typ, data = imap.store("1", "+FLAGS", "(\\Seen)")
        typ, data = imap.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest})")
        assert len([d for d in data if d]) == 1 and b"MODSEQ" in data[0]
        typ, data = imap._simple_command(  # type: ignore[attr-defined]
            "STORE", "1:2", f"(UNCHANGEDSINCE {highest})", "+FLAGS", "(\\Answered)"
        )
        # message 1 changed after `highest`: left alone and reported (RFC 7162 §3.1.3)
        assert typ == "OK" and b"[MODIFIED 1]" in data[0]
        typ, data = imap.fetch("1:2", "(FLAGS)")
        latest = {line.split(b" ", 1)[0]: line for line in data if isinstance(line, bytes)}
        assert b"\\Answered" not in latest[b"1"] and b"\\Answered" in latest[b"2"]
        imap.logout()

    await in_thread(session)


async def test_opening_a_folder_and_reading_a_message_are_in_the_audit_trail(node: Node) -> None:
    await deliver(node, ALICE)
    await deliver(node, ALICE, LETTER.replace(b"examen normal", b"examen anormal"))

    def session() -> None:
        imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context(node))
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX", readonly=True)
        imap.uid("FETCH", "1:2", "(FLAGS RFC822.SIZE)")  # metadata only: no access to content
        imap.uid("FETCH", "2", "(BODY.PEEK[])")
        imap.search(None, "SUBJECT", "Compte-rendu")
        imap.logout()

    before = await audit.records(node.runtime.messages_db, newest=True, limit=1)
    await in_thread(session)
    after_id = before[0].id if before else 0
    trail = await audit.records(node.runtime.messages_db, after_id=after_id, limit=100)
    accesses = [(r.actor, r.action, r.target, json.loads(r.details)) for r in trail]
    inbox = {"folder": "INBOX", "via": "imap"}
    assert accesses == [
        (ALICE, "mailbox.open", ALICE, {**inbox, "read_only": True}),
        (ALICE, "message.read", ALICE, {**inbox, "uids": "2", "part": "message"}),
        (ALICE, "message.read", ALICE, {**inbox, "uids": "1:2", "part": "header"}),
    ]
    assert not any(b"examen" in r.details.encode() for r in trail)  # never content
    assert (await audit.verify(node.runtime.messages_db)).ok
