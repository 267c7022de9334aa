"""Crash safety of SMTP ingest: `hygie serve` killed with SIGKILL in the middle of a stream.

The promise tested (ARCHITECTURE, "One message, end to end"; `mailserver.delivery`): the
client gets its 250 only after the message is durably committed. After a SIGKILL while
several clients are sending, and a restart on the same data directory:

- acknowledged ⇒ stored exactly once: every message that received a 250 is in the
  recipient's INBOX, once, byte for byte as sent (behind our trace headers);
- stored ⇒ sent: every stored message is one a client started to send, and none is stored
  twice. A message whose transaction was in flight at the kill MAY be stored without its
  250 ever reaching the client (the commit happened, the reply was lost); that is allowed,
  a duplicate or a half-written message is not.

SIGKILL ends the process, not the machine: what this shows is that the server never
answers 250 before its commit and that an interrupted transaction leaves nothing behind,
not that the commit survives a power cut (that is the database's fsync, `storage.db`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiosmtplib
import pytest

from mailserver import init
from mailserver.config import load_settings
from mailserver.service import Runtime
from tests.databases import DatabasePair
from tests.smtp.conftest import LISTENING, PASSWORD

SENDER = "alice.martin@hygie.test"
RECIPIENT = "bob.durand@hygie.test"
CLIENTS = 8
KILL_AFTER = 40  # acknowledged messages before the SIGKILL
AFTER_RESTART = 1_000_000  # the number of the message sent to the restarted server
TAG = re.compile(rb"^Subject: crash-safety #(\d+)\r$", re.MULTILINE)
FAST_ARGON2 = {
    "HYGIE_AUTH_ARGON2_TIME_COST": "1",
    "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
    "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
}
PORTS_ANYWHERE = {
    f"HYGIE_{name}_PORT": "0"
    for name in ("SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB", "ADMIN", "OPS")
}


def numbered(number: int) -> bytes:
    """A message that says which one it is, in its subject and its Message-ID."""
    body = b"".join(
        b"line %d of message %d: compte-rendu de consultation\r\n" % (line, number)
        for line in range(40)
    )
    return (
        f"From: {SENDER}\r\n"
        f"To: {RECIPIENT}\r\n"
        f"Subject: crash-safety #{number}\r\n"
        f"Message-ID: <crash-safety-{number}@hygie.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode() + body


@dataclass
class Server:
    """`python -m mailserver serve` as a child process, and the ports it announced."""

    process: asyncio.subprocess.Process
    ports: dict[str, int]
    stderr: IO[bytes]

    @classmethod
    async def start(cls, data_dir: Path, stderr: IO[bytes]) -> Server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailserver",
            "serve",
            "--data-dir",
            str(data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,  # the log goes there too: a file, never an unread pipe
            env=os.environ.copy(),
        )
        assert process.stdout is not None
        ports: dict[str, int] = {}
        while "submissions" not in ports:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if not line:
                process.kill()
                await process.wait()
                pytest.fail("the server exited before announcing `submissions`")
            for name, _host, port, _mode in LISTENING.findall(line.decode()):
                ports[name] = int(port)
        return cls(process, ports, stderr)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        """SIGTERM, then the exit status (the server drains and exits 0)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def reap(self) -> None:
        self.kill()
        await self.process.wait()


@dataclass
class Stream:
    """What the clients did: numbers started, numbers acknowledged with 250."""

    attempted: set[int] = field(default_factory=set)
    acknowledged: set[int] = field(default_factory=set)
    next_number: int = 0
    in_flight_at_kill: int = 0
    failures: list[BaseException] = field(default_factory=list)


async def session(port: int, context: ssl.SSLContext) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=20
    )
    await smtp.connect()
    await smtp.ehlo()
    await smtp.login(SENDER, PASSWORD)
    return smtp


async def send_until_killed(
    smtp: aiosmtplib.SMTP, server: Server, stream: Stream, killed: asyncio.Event
) -> None:
    try:
        while not killed.is_set():
            number = stream.next_number
            stream.next_number += 1
            stream.attempted.add(number)
            try:
                errors, _reply = await smtp.sendmail(SENDER, [RECIPIENT], numbered(number))
            except (aiosmtplib.SMTPException, OSError) as exc:
                if not killed.is_set():
                    stream.failures.append(exc)
                return
            assert errors == {}
            # A 250 read after the SIGKILL was written before it: it counts all the same.
            stream.acknowledged.add(number)
            if len(stream.acknowledged) >= KILL_AFTER and not killed.is_set():
                stream.in_flight_at_kill = len(stream.attempted - stream.acknowledged)
                server.kill()
                killed.set()
    finally:
        smtp.close()


async def stored_numbers(data_dir: Path) -> list[tuple[int, bytes]]:
    """(number, stored bytes) of every message in the recipient's INBOX, read from the store."""
    runtime = Runtime.open(load_settings(data_dir))
    try:
        mailbox = await runtime.store.mailbox_by_address(RECIPIENT)
        assert mailbox is not None
        folder = await runtime.store.folder(mailbox.id, "INBOX")
        entries = await runtime.store.entries(folder.id)
        found = await runtime.store.read_many(folder.id, [e.uid for e in entries])
    finally:
        await runtime.close()
    stored = []
    for entry in entries:
        raw = found[entry.uid]
        tag = TAG.search(raw)
        assert tag is not None, f"UID {entry.uid} is not one of ours: {raw[:300]!r}"
        stored.append((int(tag.group(1)), raw))
    return stored


async def create_mailboxes(data_dir: Path) -> None:
    runtime = Runtime.open(load_settings(data_dir))
    try:
        for address, rpps, given in (
            (SENDER, "10001234567", "Alice"),
            (RECIPIENT, "10007654321", "Bob"),
        ):
            box = await runtime.directory.create_professional_mailbox(
                actor="test:crash-safety",
                address=address,
                id_type="8",
                identifier=rpps,
                family_name="Martin",
                given_name=given,
                profession_code="10",
            )
            await runtime.authenticator.set_password(box.id, PASSWORD)
    finally:
        await runtime.close()


@pytest.fixture
async def data_dir(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Path]:
    for key, value in {**PORTS_ANYWHERE, **FAST_ARGON2}.items():
        monkeypatch.setenv(key, value)
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    data = tmp_path / "data"
    await asyncio.to_thread(init.initialise, data, "hygie.test")
    await create_mailboxes(data)
    yield data


async def test_acknowledged_messages_survive_sigkill_exactly_once(
    data_dir: Path, tmp_path: Path
) -> None:
    context = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
    stream = Stream()
    killed = asyncio.Event()
    with (tmp_path / "serve-1.log").open("wb") as log:
        server = await Server.start(data_dir, log)
        try:
            # every client logged in first, so that the kill finds them all sending
            port = server.ports["submissions"]
            sessions = await asyncio.gather(*(session(port, context) for _ in range(CLIENTS)))
            clients = [
                asyncio.create_task(send_until_killed(smtp, server, stream, killed))
                for smtp in sessions
            ]
            await asyncio.wait_for(asyncio.gather(*clients), 60)
            assert await asyncio.wait_for(server.process.wait(), 10) == -signal.SIGKILL
        finally:
            await server.reap()
    assert not stream.failures, stream.failures
    assert len(stream.acknowledged) >= KILL_AFTER
    assert stream.in_flight_at_kill > 0, "no transaction was in flight when the server died"

    with (tmp_path / "serve-2.log").open("wb") as log:
        server = await Server.start(data_dir, log)
        try:
            smtp = await session(server.ports["submissions"], context)
            try:
                errors, reply = await smtp.sendmail(SENDER, [RECIPIENT], numbered(AFTER_RESTART))
                assert errors == {} and reply.startswith("2.0.0 OK: stored as ")
            finally:
                with contextlib.suppress(aiosmtplib.SMTPException):
                    await smtp.quit()
            assert await server.stop() == 0
        finally:
            await server.reap()

    stored = await stored_numbers(data_dir)
    copies = Counter(number for number, _raw in stored)
    duplicates = {number: count for number, count in copies.items() if count > 1}
    assert not duplicates, f"stored more than once: {duplicates}"
    missing = stream.acknowledged - set(copies)
    assert not missing, f"acknowledged with 250 but not stored: {sorted(missing)}"
    never_sent = set(copies) - stream.attempted - {AFTER_RESTART}
    assert not never_sent, f"stored but never sent: {sorted(never_sent)}"
    assert copies[AFTER_RESTART] == 1, "the restarted server did not store the new message"
    for number, raw in stored:
        # our Received and Authentication-Results in front, then the message as sent
        assert raw.startswith(b"Received: from ") and raw.endswith(numbered(number)), number
