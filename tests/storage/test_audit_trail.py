"""The audit trail is hash-chained: any change, removal or reordering is detected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from mailserver import init
from mailserver.commands.mailbox import cli_actor
from storage import audit
from storage.db import Database
from storage.messages import MessageStore
from storage.models import AuditRecord


async def write_records(database: Database, count: int) -> list[int]:
    ids = []
    for n in range(count):
        async with database.write() as session, session.begin():
            entry = await audit.record(
                session,
                actor="test:admin",
                action="mailbox.create",
                target=f"user{n}@hygie.test",
                details={"kind": "PER", "n": n},
            )
            ids.append(entry.id)
    return ids


async def test_untouched_trail_verifies(store: MessageStore) -> None:
    await write_records(store.database, 5)
    result = await audit.verify(store.database)
    assert result.ok and result.records == 5


async def test_changed_record_is_named(store: MessageStore) -> None:
    ids = await write_records(store.database, 5)
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(AuditRecord).where(AuditRecord.id == ids[2]).values(actor="someone-else")
        )
    result = await audit.verify(store.database)
    assert (result.first_bad_id, result.records) == (ids[2], 2)
    assert "changed" in result.problem


async def test_removed_record_is_detected_at_the_next_one(store: MessageStore) -> None:
    ids = await write_records(store.database, 5)
    async with store.database.write() as session, session.begin():
        await session.execute(delete(AuditRecord).where(AuditRecord.id == ids[1]))
    result = await audit.verify(store.database)
    assert result.first_bad_id == ids[2] and "does not follow" in result.problem


async def test_reordered_records_are_detected(store: MessageStore) -> None:
    ids = await write_records(store.database, 5)
    columns = (
        "at",
        "actor",
        "action",
        "target",
        "details",
        "outcome",
        "previous_hash",
        "record_hash",
    )
    async with store.database.write() as session, session.begin():
        first = await session.get(AuditRecord, ids[1])
        second = await session.get(AuditRecord, ids[3])
        assert first is not None and second is not None
        a = {c: getattr(first, c) for c in columns}
        b = {c: getattr(second, c) for c in columns}
        # swap contents; hashes are unique, so park one value first
        await session.execute(
            update(AuditRecord).where(AuditRecord.id == ids[1]).values(record_hash="parked")
        )
        await session.execute(update(AuditRecord).where(AuditRecord.id == ids[3]).values(**a))
        await session.execute(update(AuditRecord).where(AuditRecord.id == ids[1]).values(**b))
    result = await audit.verify(store.database)
    assert result.first_bad_id == ids[1]


async def test_concurrent_writers_keep_one_chain(store: MessageStore) -> None:
    import asyncio

    await asyncio.gather(*(write_records(store.database, 5) for _ in range(4)))
    result = await audit.verify(store.database)
    assert result.ok and result.records == 20
    async with store.database.read() as session:
        previous = list(await session.scalars(select(AuditRecord.previous_hash)))
    assert len(set(previous)) == 20  # no fork: every record has its own predecessor


def test_audit_verify_command_names_the_first_bad_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init.initialise(data, "hygie.test")
    run = [sys.executable, "-m", "mailserver"]
    for address in ("a@hygie.test", "b@hygie.test"):
        subprocess.run(
            [
                *run,
                "whitelist",
                "add",
                address.split("@")[0] + ".peer.test",
                "--cert-dn",
                f"CN={address}",
                "--data-dir",
                str(data),
            ],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
    ok = subprocess.run(
        [*run, "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "intact: 2 records" in ok.stdout
    listing = subprocess.run(
        [*run, "audit", "list", "--data-dir", str(data)], capture_output=True, text=True, check=True
    ).stdout
    assert f"\t{cli_actor()}\twhitelist.add\ta.peer.test\t" in listing
    import sqlite3

    with sqlite3.connect(data / "hygie.db") as connection:
        connection.execute("UPDATE audit_trail SET target = 'x.peer.test' WHERE id = 2")
    broken = subprocess.run(
        [*run, "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode == 1
    assert "broken at record 2" in broken.stderr


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
