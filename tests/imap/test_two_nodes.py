"""Two nodes on one PostgreSQL: an IMAP session on one sees mail stored by the other."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aioimaplib
import pytest

from storage.messages import AppendTarget
from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, start_node

ALICE = "alice.martin@hygie.test"
LISTENING = re.compile(rb"^listening imaps (\S+):(\d+) tls$")


async def test_idle_on_one_node_sees_a_delivery_on_another(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    if databases.backend != "postgresql":
        pytest.skip("SQLite deployments are one process; several nodes share PostgreSQL")
    node = await start_node(tmp_path / "data", "hygie.test", databases, monkeypatch)
    other: asyncio.subprocess.Process | None = None
    try:
        box = await node.professional(ALICE, "10001234567")
        # The second node: another `hygie serve` process on the same data directory
        # (same database, key store and master key), with its own listeners.
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailserver",
            "serve",
            "--data-dir",
            str(node.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        assert other.stdout is not None
        port = 0
        while not port:
            line = await asyncio.wait_for(other.stdout.readline(), 60)
            assert line, "the second node stopped"
            match = LISTENING.match(line.strip())
            if match:
                port = int(match.group(2))
        client = aioimaplib.IMAP4_SSL(
            host="127.0.0.1", port=port, ssl_context=node.client_context()
        )
        await client.wait_hello_from_server()
        await client.login(ALICE, PASSWORD)
        await client.select("INBOX")
        idle = await client.idle_start(timeout=15)
        await asyncio.sleep(0.3)
        await node.runtime.store.append(
            b"Subject: from the first node\r\n\r\nhello\r\n", [AppendTarget(box)]
        )
        pushed = await client.wait_server_push(timeout=10)
        assert any(b"1 EXISTS" in (x if isinstance(x, bytes) else x.encode()) for x in pushed)
        client.idle_done()
        await asyncio.wait_for(idle, 5)
        await client.logout()
    finally:
        if other is not None and other.returncode is None:
            other.terminate()
            await other.wait()
        await node.service.stop()
