"""IMAP extensions driven by real clients: SORT and THREAD (RFC 5256), QRESYNC (RFC 7162),
QUOTA (RFC 9208) and COMPRESS=DEFLATE (RFC 4978)."""

from __future__ import annotations

import asyncio
import imaplib
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from storage.messages import AppendTarget
from storage.models import Mailbox
from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, Node, start_node

ALICE = "alice.martin@hygie.test"


def letter(
    message_id: str,
    subject: str,
    *,
    sender: str = "bob@hygie.test",
    date: str | None = "10:00:00 +0000",
    extra: str = "",
    body: str = "Compte-rendu.",
) -> bytes:
    dated = f"Date: Wed, 01 Jan 2020 {date}\r\n" if date else ""
    return (
        f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n{dated}"
        f"Message-ID: <{message_id}@hygie.test>\r\n{extra}\r\n{body}\r\n"
    ).encode()


# A folder to sort and thread: two conversations, one reply to a lost message, and two
# replies to a message that is not in the folder at all.
CONVERSATIONS = [
    letter("a", "Bilan", extra="Cc: b@hygie.test\r\n", body="x" * 40),
    letter(
        "b",
        "Re: Bilan",
        sender="Alice <ALICE@hygie.test>",
        date="10:05:00 +0000",
        extra="In-Reply-To: <a@hygie.test>\r\n",
    ),
    letter(
        "c",
        "RE: [Cardio] Bilan",
        sender="carol@hygie.test",
        date="10:10:00 +0000",
        extra="References: <a@hygie.test> <b@hygie.test>\r\nCc: x@hygie.test\r\n",
        body="x" * 10,
    ),
    letter(
        "d",
        "Re: Bilan",
        date="11:07:00 +0100",
        extra="References: <a@hygie.test>\r\n",
        body="x" * 200,
    ),
    letter("e", "Ordonnance", sender="undisclosed-recipients:;", date="10:01:00 +0000"),
    letter(
        "f",
        "Re: Ordonnance",
        sender="alice@hygie.test",
        date="10:20:00 +0000",
        extra="References: <lost@hygie.test>\r\n",
    ),
    letter(
        "g",
        "Radio",
        sender="zoe@hygie.test",
        date="09:00:00 +0000",
        extra="References: <absent@hygie.test>\r\n",
        body="x" * 100,
    ),
    letter(
        "h",
        "Radio",
        sender="dave@hygie.test",
        date=None,  # sorted by its internal date, 09:30
        extra="References: <absent@hygie.test>\r\n",
    ),
]
ARRIVED = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Node]:
    running = await start_node(tmp_path / "data", "hygie.test", databases, monkeypatch)
    try:
        await running.professional(ALICE, "10001234567")
        yield running
    finally:
        await running.service.stop()


async def deliver(node: Node, raw: bytes, when: datetime = ARRIVED, folder: str = "INBOX") -> int:
    box = await node.runtime.store.mailbox_by_address(ALICE)
    assert box is not None
    (appended,) = await node.runtime.store.append(
        raw, [AppendTarget(box.id, folder, internal_date=when)]
    )
    return appended.uid


async def deliver_conversations(node: Node) -> None:
    for number, raw in enumerate(CONVERSATIONS, 1):
        when = datetime(2020, 1, 1, 9, 30, tzinfo=UTC) if number == 8 else ARRIVED
        await deliver(node, raw, when.replace(second=number))


def imaps(node: Node) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context())
    imap.login(ALICE, PASSWORD)
    return imap


def numbers(data: list[bytes | None]) -> list[int]:
    assert data[0] is not None
    return [int(n) for n in data[0].split()]


# -- SORT ---------------------------------------------------------------------------------


async def test_sort_orders_by_each_criterion_with_ties_in_sequence_order(node: Node) -> None:
    await deliver_conversations(node)

    def session() -> None:
        imap = imaps(node)
        assert "SORT" in imap.capabilities
        imap.select("INBOX")
        sizes = [len(raw) for raw in CONVERSATIONS]

        def sort(criteria: str, *search: str) -> list[int]:
            typ, data = imap.sort(criteria, "UTF-8", *(search or ("ALL",)))
            assert typ == "OK", data
            return numbers(data)

        assert sort("(SUBJECT)") == [1, 2, 3, 4, 5, 6, 7, 8]
        # 4 is dated 11:07 +0100, 10:07 UTC; 8 has no Date and arrived at 09:30.
        assert sort("(DATE)") == [7, 8, 1, 5, 2, 4, 3, 6]
        assert sort("(REVERSE DATE)") == [6, 3, 4, 2, 5, 1, 8, 7]
        assert sort("(ARRIVAL)") == [8, 1, 2, 3, 4, 5, 6, 7]
        # a group has no mailbox (""); ALICE and alice are equal under i;ascii-casemap.
        assert sort("(FROM)") == [5, 2, 6, 1, 4, 3, 8, 7]
        assert sort("(CC)") == [2, 4, 5, 6, 7, 8, 1, 3]
        assert sort("(TO)") == [1, 2, 3, 4, 5, 6, 7, 8]
        assert sort("(SIZE)") == sorted(range(1, 9), key=lambda n: (sizes[n - 1], n))
        assert sort("(SUBJECT REVERSE DATE)") == [3, 4, 2, 1, 6, 5, 8, 7]
        assert sort("(REVERSE SIZE)", "SUBJECT", "Bilan") == sorted(
            range(1, 5), key=lambda n: (-sizes[n - 1], n)
        )
        imap.logout()

    await asyncio.to_thread(session)


async def test_uid_sort_answers_uids_after_an_expunge(node: Node) -> None:
    await deliver_conversations(node)

    def session() -> None:
        imap = imaps(node)
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        typ, data = imap.uid("SORT", "(DATE)", "UTF-8", "ALL")
        assert typ == "OK" and numbers(data) == [7, 8, 5, 2, 4, 3, 6]
        typ, data = imap.sort("(DATE)", "UTF-8", "ALL")
        assert numbers(data) == [6, 7, 4, 1, 3, 2, 5]
        typ, data = imap.sort("(DATE)", "KOI8-R", "ALL")
        assert typ == "NO" and b"BADCHARSET" in data[0]
        typ, data = imap.sort("(SUBJECT)", "UTF-8", "SUBJECT", "absent")
        assert (typ, data) == ("OK", [b""])
        imap.logout()

    await asyncio.to_thread(session)


# -- THREAD -------------------------------------------------------------------------------


async def test_thread_by_references_and_by_ordered_subject(node: Node) -> None:
    await deliver_conversations(node)

    def session() -> None:
        imap = imaps(node)
        assert {"THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"} <= set(imap.capabilities)
        imap.select("INBOX")
        typ, data = imap.thread("REFERENCES", "UTF-8", "ALL")
        # 7 and 8 answer a message not in the folder: a dummy keeps them together; 6
        # answers a lost message and joins 5 by its subject.
        assert (typ, data) == ("OK", [b"((7)(8))(1 (2 3)(4))(5 6)"])
        typ, data = imap.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
        assert (typ, data) == ("OK", [b"(7 8)(1 (2)(4)(3))(5 6)"])
        typ, data = imap.uid("THREAD", "REFERENCES", "UTF-8", "NOT", "SUBJECT", "Radio")
        assert (typ, data) == ("OK", [b"(1 (2 3)(4))(5 6)"])
        imap.store("1", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        typ, data = imap.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "Bilan")
        # without 1, a dummy stands for it: its replies stay one thread.
        assert (typ, data) == ("OK", [b"((2 3)(4))"])
        typ, data = imap.thread("REFERENCES", "UTF-8", "SUBJECT", "nothing")
        assert (typ, data) == ("OK", [b""])
        imap.logout()

    await asyncio.to_thread(session)


async def test_thread_merges_root_replies_under_the_original_subject(node: Node) -> None:
    await deliver(node, letter("r1", "Re: Resultats", date="09:00:00 +0000"))
    await deliver(node, letter("r2", "Resultats", date="10:00:00 +0000"))
    await deliver(node, letter("r3", "Fwd: Resultats", date="11:00:00 +0000"))
    await deliver(node, letter("r4", "Resultats", date="12:00:00 +0000"))

    def session() -> None:
        imap = imaps(node)
        imap.select("INBOX")
        typ, data = imap.thread("REFERENCES", "UTF-8", "ALL")
        # the replies join the first original; a dummy holds it and the second one.
        assert (typ, data) == ("OK", [b"((2 (1)(3))(4))"])
        typ, data = imap.thread("REFERENCES", "UTF-8", "NOT", "UID", "4")
        # one original: the replies become its children.
        assert (typ, data) == ("OK", [b"(2 (1)(3))"])
        imap.logout()

    await asyncio.to_thread(session)


# -- a raw client, to see every response in order ------------------------------------------


class Wire:
    """One IMAP connection over TLS, speaking raw lines; optionally deflated."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.tags = 0
        self.deflate: zlib._Compress | None = None
        self.inflate: zlib._Decompress | None = None

    @classmethod
    async def open(cls, node: Node, *, login: bool = True) -> Wire:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", node.ports["imaps"], ssl=node.client_context()
        )
        wire = cls(reader, writer)
        assert (await wire.line()).startswith(b"* OK")
        if login:
            assert (await wire.command(f'LOGIN {ALICE} "{PASSWORD}"'))[-1].split()[1] == b"OK"
        return wire

    def write(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "connection closed"
            self.buffer += self.inflate.decompress(data) if self.inflate else data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def command(self, text: str) -> list[bytes]:
        """Every line up to and with the tagged response (literals kept inline)."""
        self.tags += 1
        tag = f"w{self.tags}".encode()
        self.write(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = await self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def close(self) -> None:
        self.writer.close()


def status(lines: list[bytes]) -> bytes:
    return lines[-1].split(b" ", 2)[1]


# -- QRESYNC ------------------------------------------------------------------------------


async def changes_by_another_session(node: Node) -> None:
    """Flags message 3, expunges messages 2 and 4."""

    def session() -> None:
        imap = imaps(node)
        imap.select("INBOX")
        imap.store("3", "+FLAGS", "(\\Flagged)")
        imap.store("2,4", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.logout()

    await asyncio.to_thread(session)


async def test_qresync_select_reports_what_the_client_missed(node: Node) -> None:
    for n in range(1, 6):
        await deliver(node, letter(f"q{n}", f"Analyse {n}"))
    wire = await Wire.open(node)
    try:
        assert b"QRESYNC" in (await wire.command("CAPABILITY"))[0].split()
        assert (await wire.command("ENABLE QRESYNC"))[0] == b"* ENABLED QRESYNC"
        selected = await wire.command("SELECT INBOX")
        known = next(x for x in selected if b"HIGHESTMODSEQ" in x).split()[3].strip(b"]")
        validity = next(x for x in selected if b"UIDVALIDITY" in x).split()[3].strip(b"]")
        await wire.command("EXAMINE Archive")
        await changes_by_another_session(node)

        lines = await wire.command(f"SELECT INBOX (QRESYNC ({validity.decode()} {known.decode()}))")
        assert lines[0] == b"* OK [CLOSED] previous mailbox closed"
        assert b"* 3 EXISTS" in lines
        vanished = lines.index(b"* VANISHED (EARLIER) 2,4")
        (fetch,) = [x for x in lines if b"FETCH" in x]
        assert fetch.startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (")
        assert vanished < lines.index(fetch) and status(lines) == b"OK"

        # known UIDs narrow the answer; another UIDVALIDITY gets a plain SELECT.
        lines = await wire.command(
            f"EXAMINE INBOX (QRESYNC ({validity.decode()} {known.decode()} 1:2))"
        )
        assert b"* VANISHED (EARLIER) 2" in lines and not any(b"FETCH" in x for x in lines)
        lines = await wire.command(f"SELECT INBOX (QRESYNC (1 {known.decode()}))")
        assert status(lines) == b"OK"
        assert not any(b"VANISHED" in x or b"FETCH" in x for x in lines)
    finally:
        wire.close()


async def test_uid_fetch_vanished_and_live_expunges_as_vanished(node: Node) -> None:
    for n in range(1, 6):
        await deliver(node, letter(f"q{n}", f"Analyse {n}"))
    wire = await Wire.open(node)
    plain = await Wire.open(node)
    try:
        await wire.command("ENABLE QRESYNC")
        selected = await wire.command("SELECT INBOX")
        known = next(x for x in selected if b"HIGHESTMODSEQ" in x).split()[3].strip(b"]")
        await plain.command("SELECT INBOX")
        await changes_by_another_session(node)

        # once QRESYNC is on, expunges come as VANISHED, with UIDs (RFC 7162 §3.2.10)...
        lines = await wire.command("NOOP")
        assert b"* VANISHED 2,4" in lines and not any(b"EXPUNGE" in x for x in lines)
        assert any(x.startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ") for x in lines)
        # ... and without it, as EXPUNGE from the highest sequence number down.
        lines = await plain.command("NOOP")
        assert lines[:2] == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]

        lines = await wire.command(
            f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known.decode()} VANISHED)"
        )
        assert lines[0] == b"* VANISHED (EARLIER) 2,4"
        assert lines[1].startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (")
        assert len(lines) == 3 and status(lines) == b"OK"
        lines = await wire.command(
            f"UID FETCH 3:5 (FLAGS) (CHANGEDSINCE {known.decode()} VANISHED)"
        )
        assert lines[0] == b"* VANISHED (EARLIER) 4"
        # a plain FETCH names the UID too, once QRESYNC is on.
        lines = await wire.command("FETCH 1 (FLAGS)")
        assert lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (")

        # without ENABLE QRESYNC, its parameters are refused.
        lines = await plain.command(
            f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known.decode()} VANISHED)"
        )
        assert status(lines) == b"BAD"
        lines = await plain.command(f"SELECT INBOX (QRESYNC (1 {known.decode()}))")
        assert status(lines) == b"BAD"
    finally:
        wire.close()
        plain.close()


# -- QUOTA --------------------------------------------------------------------------------


async def set_quota(node: Node, quota_bytes: int | None) -> None:
    async with node.runtime.store.database.write() as session, session.begin():
        await session.execute(
            update(Mailbox).where(Mailbox.address == ALICE).values(quota_bytes=quota_bytes)
        )


async def test_quota_reports_storage_over_all_folders_and_refuses_going_over(node: Node) -> None:
    first = letter("big", "Imagerie", body="x" * 3000)
    await deliver(node, first)
    await deliver(node, first, folder="Archive")
    await set_quota(node, 10 * 1024)
    used_kib = -(-2 * len(first) // 1024)

    def session() -> None:
        imap = imaps(node)
        assert {"QUOTA", "QUOTA=RES-STORAGE"} <= set(imap.capabilities)
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK"
        assert data == [[b'INBOX ""'], [f'"" (STORAGE {used_kib} 10)'.encode()]]
        typ, data = imap.getquota('""')
        assert (typ, data) == ("OK", [f'"" (STORAGE {used_kib} 10)'.encode()])
        typ, data = imap.getquota('"Shared/nobody@hygie.test"')
        assert typ == "NO"
        # 2 copies use about 6 KiB of 10: a third fits, a fourth does not.
        assert imap.append("Drafts", None, None, first)[0] == "OK"
        typ, data = imap.append("Drafts", None, None, first)
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        imap.select("INBOX")
        typ, data = imap.copy("1", "Trash")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        # moving within the mailbox uses no more room.
        assert imap.uid("MOVE", "1", "Trash")[0] == "OK"
        imap.logout()

    await asyncio.to_thread(session)


async def test_quota_without_a_limit_has_no_resources(node: Node) -> None:
    await deliver(node, letter("q", "Analyse"))

    def session() -> None:
        imap = imaps(node)
        typ, data = imap.getquotaroot("Archive")
        assert (typ, data) == ("OK", [[b'Archive ""'], [b'"" ()']])
        assert imap.append("INBOX", None, None, letter("r", "Analyse", body="x" * 5000))[0] == "OK"
        imap.logout()

    await asyncio.to_thread(session)


# -- COMPRESS=DEFLATE ---------------------------------------------------------------------


async def test_compress_deflate_carries_the_session_both_ways(node: Node) -> None:
    await deliver(node, letter("z", "Analyse", body="glycemie normale " * 500))
    wire = await Wire.open(node, login=False)
    try:
        # before authentication, and with an unknown algorithm, it is refused.
        assert status(await wire.command("COMPRESS DEFLATE")) == b"BAD"
        await wire.command(f'LOGIN {ALICE} "{PASSWORD}"')
        assert b"COMPRESS=DEFLATE" in (await wire.command("CAPABILITY"))[0].split()
        assert status(await wire.command("COMPRESS LZW")) == b"NO"
        assert status(await wire.command("COMPRESS DEFLATE")) == b"OK"
        wire.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        wire.inflate = zlib.decompressobj(-15)

        lines = await wire.command("SELECT INBOX")
        assert b"* 1 EXISTS" in lines and status(lines) == b"OK"
        lines = await wire.command("FETCH 1 (BODY.PEEK[TEXT])")
        assert lines[0].startswith(b"* 1 FETCH (BODY[TEXT] {8502}")
        assert b"glycemie normale " * 500 in b"\r\n".join(lines)
        lines = await wire.command("COMPRESS DEFLATE")
        assert status(lines) == b"NO" and b"[COMPRESSIONACTIVE]" in lines[-1]
        assert status(await wire.command("NOOP")) == b"OK"
        lines = await wire.command("LOGOUT")
        assert lines[0].startswith(b"* BYE") and status(lines) == b"OK"
    finally:
        wire.close()
