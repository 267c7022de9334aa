"""`hygie queue …` and `hygie dkim show` on a data directory, as an operator runs them."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from mailserver import init
from mailserver.cli import main
from mailserver.config import load_settings
from mailserver.service import Runtime
from mailserver.smtp.dkim import KnownKeys, public_record
from storage.messages import OutboundRequest, StoreRequest
from storage.models import utcnow
from storage.outbound import OutboundQueue, QueueEntry
from tests.databases import DatabasePair

SENDER = "alice.martin@hygie.test"
RECIPIENTS = ("dr.peer@peer.test", "lab@peer.test")
T = TypeVar("T")


@dataclass(frozen=True)
class Queued:
    data_dir: Path
    message_id: uuid.UUID


def with_runtime(data_dir: Path, work: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        runtime = Runtime.open(load_settings(data_dir))
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(run())


def queue(runtime: Runtime) -> OutboundQueue:
    return OutboundQueue(runtime.messages_db, runtime.keystore)


@pytest.fixture
async def queued(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> Queued:
    """A data directory (no node running) with one message queued for two recipients."""
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    data = tmp_path / "data"
    await asyncio.to_thread(init.initialise, data, "hygie.test")
    runtime = Runtime.open(load_settings(data))
    try:
        box = await runtime.store.create_mailbox(SENDER, "PER")
        outbound = OutboundRequest(box.id, SENDER, RECIPIENTS, utcnow() + timedelta(days=5))
        raw = b"From: " + SENDER.encode() + b"\r\nSubject: secret\r\n\r\nbody\r\n"
        (result,) = await runtime.store.store_batch([StoreRequest(raw, outbound=outbound)])
    finally:
        await runtime.close()
    assert result.queued is not None
    return Queued(data, result.queued)


def hygie(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def entries(data_dir: Path) -> list[QueueEntry]:
    async def work(runtime: Runtime) -> list[QueueEntry]:
        return await queue(runtime).entries()

    return with_runtime(data_dir, work)


def test_list_shows_each_recipient_never_the_content(queued: Queued) -> None:
    result = hygie("queue", "list", "--data-dir", str(queued.data_dir))
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == [
        "message",
        "sender",
        "recipient",
        "state",
        "attempts",
        "next attempt",
        "last reply",
    ]
    rows = sorted(line.split("\t") for line in lines)
    assert [row[:5] for row in rows] == [
        [str(queued.message_id), SENDER, recipient, "queued", "0"] for recipient in RECIPIENTS
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[5]) for row in rows)
    assert all(row[6] == "-" for row in rows)
    assert "secret" not in result.output and "body" not in result.output
    delivered = hygie("queue", "list", "--state", "delivered", "--data-dir", str(queued.data_dir))
    assert delivered.exit_code == 0 and delivered.stdout == ""
    assert "the queue is empty" in delivered.stderr


def test_retry_makes_deferred_recipients_due_now(queued: Queued) -> None:
    later = utcnow() + timedelta(hours=1)

    async def defer(runtime: Runtime) -> None:
        await queue(runtime).settle(
            queued.message_id,
            list(RECIPIENTS),
            state="queued",
            reply="127.0.0.1: 451 4.3.0 Try again later",
            retry_at=later,
        )

    with_runtime(queued.data_dir, defer)
    listed = hygie("queue", "list", "--data-dir", str(queued.data_dir))
    assert "127.0.0.1: 451 4.3.0 Try again later" in listed.stdout
    assert all(e.next_attempt_at >= later - timedelta(seconds=1) for e in entries(queued.data_dir))

    before = utcnow()
    result = hygie("queue", "retry", str(queued.message_id), "--data-dir", str(queued.data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "2 recipients due now"
    assert all(e.next_attempt_at <= before + timedelta(minutes=1) for e in entries(queued.data_dir))

    everything = hygie("queue", "retry", "--data-dir", str(queued.data_dir))
    assert everything.exit_code == 0 and everything.stdout.strip() == "2 recipients due now"

    unknown = hygie("queue", "retry", str(uuid.uuid4()), "--data-dir", str(queued.data_dir))
    assert unknown.exit_code == 1 and "no queued recipient" in unknown.stderr
    malformed = hygie("queue", "retry", "not-an-id", "--data-dir", str(queued.data_dir))
    assert malformed.exit_code == 2 and "is not a message id" in malformed.stderr


def test_delete_drops_the_message(queued: Queued) -> None:
    result = hygie("queue", "delete", str(queued.message_id), "--data-dir", str(queued.data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"deleted {queued.message_id}"
    assert entries(queued.data_dir) == []
    again = hygie("queue", "delete", str(queued.message_id), "--data-dir", str(queued.data_dir))
    assert again.exit_code == 1 and "no queued message" in again.stderr


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("dkim") / "data"
    init.initialise(data, "hygie.test")
    return data


def _key_and_record(data_dir: Path) -> tuple[bytes, str]:
    key = (data_dir / "dkim" / "hygie.key").read_bytes()
    return key, public_record(key)


def test_dkim_show_prints_the_txt_record_in_255_character_strings(data_dir: Path) -> None:
    result = hygie("dkim", "show", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    _key, record = _key_and_record(data_dir)
    line = result.stdout.strip()
    prefix = "hygie._domainkey.hygie.test IN TXT "
    assert line.startswith(prefix)
    strings = re.findall(r'"([^"]*)"', line[len(prefix) :])
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == record
    assert record.startswith("v=DKIM1; k=rsa; p=")


def test_dkim_show_gives_the_line_for_another_operators_trusted_keys(
    data_dir: Path, tmp_path: Path
) -> None:
    result = hygie("dkim", "show", "--trusted-keys-line", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    trusted = tmp_path / "trusted-keys.txt"
    trusted.write_text(result.stdout, encoding="utf-8")
    keys = KnownKeys.load(trusted, use_dns=False)
    _key, record = _key_and_record(data_dir)
    assert keys.lookup(b"hygie._domainkey.hygie.test.") == record.encode()


def test_dkim_show_without_a_key_fails(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init.initialise(data, "hygie.test")
    (data / "dkim" / "hygie.key").unlink()
    result = hygie("dkim", "show", "--data-dir", str(data))
    assert result.exit_code == 1 and "cannot read the DKIM key" in result.stderr
