"""Per-item encryption ("chiffrement unitaire"), proven from the outside.

Nothing readable on disk or in a database dump; ciphertexts bound to their place; master-key
rotation that keeps everything readable; shredding that defeats a copy taken before.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from mailserver import init, logs
from mailserver.service import Runtime
from storage.crypto import DecryptionError, MasterKeyring
from storage.db import open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import AppendTarget, MessageStore
from storage.models import FolderEntry, MailboxKey, Message
from storage.notify import ChangeHub
from tests.databases import DatabasePair

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def marker_message(marker: str) -> bytes:
    return (
        f"From: dr.marker@hygie.test\r\nTo: patient@hygie.test\r\n"
        f"Subject: {marker} in the subject\r\nX-Case: {marker}\r\n\r\n"
        f"Diagnosis: {marker} in the body.\r\n"
    ).encode()


def encodings_of(marker: bytes) -> list[bytes]:
    """The marker as it would appear if stored plainly, hex-dumped or base64-encoded."""
    forms = [marker, marker.hex().encode(), marker.hex().upper().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + marker)
        forms.append(encoded[4 : len(encoded) - 4])
    return forms


def files_containing(root: Path, marker: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(form in data for form in encodings_of(marker)):
                found.append(str(path.relative_to(root)))
    return found


def pg_dump(url: str) -> bytes:
    parsed = make_url(url)
    command = [
        "pg_dump",
        "--no-owner",
        "-h",
        parsed.host or "127.0.0.1",
        "-p",
        str(parsed.port or 5432),
        "-U",
        parsed.username or "postgres",
        parsed.database or "",
    ]
    return subprocess.run(command, check=True, capture_output=True).stdout


def test_marker_scanner_finds_plain_hex_and_base64_copies(tmp_path: Path) -> None:
    marker = b"MARKER-" + uuid.uuid4().hex.encode()
    (tmp_path / "plain").write_bytes(b"xx" + marker + b"yy")
    (tmp_path / "hex").write_bytes(b"\\x" + marker.hex().encode())
    (tmp_path / "b64").write_bytes(base64.b64encode(b"ab" + marker + b"cd"))
    (tmp_path / "clean").write_bytes(os.urandom(4096))
    assert sorted(files_containing(tmp_path, marker)) == ["b64", "hex", "plain"]


async def test_no_plaintext_under_the_data_directory_or_in_a_dump(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    settings, _report = await asyncio.to_thread(init.initialise, data_dir, "hygie.test")
    # everything this process logs, at the most verbose level, goes under the data dir
    logs.configure("DEBUG", settings.path(settings.logging.file))
    sql_log = logging.getLogger("sqlalchemy.engine")
    sql_log.setLevel(logging.INFO)  # every statement and its parameters
    runtime = Runtime.open(settings)
    marker = "MARKER-" + uuid.uuid4().hex
    try:
        box = await runtime.store.create_mailbox("patient@hygie.test", "PAT")
        (appended,) = await runtime.store.append(marker_message(marker), [AppendTarget(box.id)])
        assert marker.encode() in await runtime.store.read(appended.folder_id, appended.uid)
        await runtime.store.store_flags(appended.folder_id, [appended.uid], "add", ["\\Seen"])
        # while the node runs: database, WAL, key store, logs
        assert files_containing(data_dir, marker.encode()) == []
    finally:
        await runtime.close()
        sql_log.setLevel(logging.WARNING)
        logs.configure("WARNING", None)
    assert (data_dir / "logs" / "hygie.log").stat().st_size > 0
    assert files_containing(data_dir, marker.encode()) == []
    if databases.backend == "postgresql":
        for url in (databases.messages_url, databases.keystore_url):
            dump = pg_dump(url)
            assert b"folder_entries" in dump or b"mailbox_keys" in dump
            assert not any(form in dump for form in encodings_of(marker.encode()))


async def test_tampered_ciphertext_fails_to_decrypt(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(marker_message("tamper"), [AppendTarget(box.id)])
    async with store.database.write() as session, session.begin():
        message = await session.get(Message, a.message_id)
        assert message is not None
        flipped = bytearray(message.body_ct)
        flipped[-20] ^= 0x01
        message.body_ct = bytes(flipped)
    with pytest.raises(DecryptionError):
        await store.read(a.folder_id, a.uid)


async def test_swapped_headers_between_messages_fail_to_decrypt(store: MessageStore) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(marker_message("first"), [AppendTarget(box.id)])
    (b,) = await store.append(marker_message("second"), [AppendTarget(box.id)])
    async with store.database.write() as session, session.begin():
        first = await session.get(Message, a.message_id)
        second = await session.get(Message, b.message_id)
        assert first is not None and second is not None
        first.header_ct, second.header_ct = second.header_ct, first.header_ct
    for uid in (a.uid, b.uid):
        with pytest.raises(DecryptionError):
            await store.read(a.folder_id, uid)


async def test_ciphertext_moved_to_another_mailbox_fails_to_decrypt(store: MessageStore) -> None:
    alice = await store.create_mailbox("alice@hygie.test", "PER")
    mallory = await store.create_mailbox("mallory@hygie.test", "PER")
    (a,) = await store.append(marker_message("secret"), [AppendTarget(alice.id)])
    mallory_inbox = await store.folder(mallory.id, "INBOX")
    # an administrator re-points the message and its folder entry at another mailbox
    async with store.database.write() as session, session.begin():
        await session.execute(
            update(Message).where(Message.id == a.message_id).values(mailbox_id=mallory.id)
        )
        await session.execute(
            update(FolderEntry)
            .where(FolderEntry.folder_id == a.folder_id, FolderEntry.uid == a.uid)
            .values(folder_id=mallory_inbox.id)
        )
    with pytest.raises(DecryptionError):
        await store.read(mallory_inbox.id, a.uid)


async def test_master_key_rotation_keeps_everything_readable(
    store: MessageStore, master_key_file: Path
) -> None:
    boxes = [await store.create_mailbox(f"user{n}@hygie.test", "PER") for n in range(3)]
    appended = [
        (await store.append(marker_message(f"m{n}"), [AppendTarget(b.id)]))[0]
        for n, b in enumerate(boxes)
    ]
    async with store.database.read() as session:
        bodies_before = {m.id: m.body_ct for m in await session.scalars(select(Message))}
    old_ring = MasterKeyring.load(master_key_file)

    report = await store.keys.rotate_master()

    assert report.rewrapped == 3 and report.retired == (old_ring.active_id,)
    new_ring = MasterKeyring.load(master_key_file)
    assert new_ring.active_id != old_ring.active_id and list(new_ring.keys) == [report.new_kek_id]
    assert os.stat(master_key_file).st_mode & 0o777 == 0o600
    assert await store.keys.count_by_kek() == {new_ring.active_id: 3}
    async with store.database.read() as session:
        bodies_after = {m.id: m.body_ct for m in await session.scalars(select(Message))}
    assert bodies_after == bodies_before  # rotation never touches message ciphertext
    for n, a in enumerate(appended):
        assert f"m{n}".encode() in await store.read(a.folder_id, a.uid)
    # the retired key alone no longer opens any mailbox key
    async with store.keys.database.read() as session:
        row = (await session.scalars(select(MailboxKey))).first()
    assert row is not None
    with pytest.raises(DecryptionError):
        old_ring.unwrap_mailbox_key(row.key_id, row.kek_id, row.wrapped_key)


async def test_interrupted_rotation_resumes(store: MessageStore, master_key_file: Path) -> None:
    box = await store.create_mailbox("alice@hygie.test", "PER")
    (a,) = await store.append(marker_message("resume"), [AppendTarget(box.id)])
    old = MasterKeyring.load(master_key_file)
    fresh = MasterKeyring.generate()
    # as if a rotation stopped after writing the new key and before rewrapping anything
    MasterKeyring(fresh.active_id, {**old.keys, **fresh.keys}).save(master_key_file)
    assert b"resume" in await store.read(a.folder_id, a.uid)
    report = await store.keys.rotate_master()
    assert report.new_kek_id == fresh.active_id and report.rewrapped == 1
    assert list(MasterKeyring.load(master_key_file).keys) == [fresh.active_id]
    assert b"resume" in await store.read(a.folder_id, a.uid)


async def _copy_database(url: str, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        source = Path(make_url(url).database or "")
        target = tmp_path / f"copy-{uuid.uuid4().hex[:6]}.db"
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copy2(f"{source}{suffix}", f"{target}{suffix}")
        return f"sqlite+aiosqlite:///{target}"
    import asyncpg

    parsed = make_url(url)
    name = f"{parsed.database}_copy"
    admin = parsed.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
    finally:
        await connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


async def _drop_copy(url: str, backend: str) -> None:
    if backend != "postgresql":
        return
    import asyncpg

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await connection.close()


async def test_shredded_mailbox_cannot_be_read_from_an_earlier_copy(
    databases: DatabasePair, master_key_file: Path, tmp_path: Path
) -> None:
    keys_db = open_database(databases.keystore_url)
    keystore = KeyStore(keys_db, MasterKeySource(master_key_file), cache_seconds=0)
    live_db = open_database(databases.messages_url)
    live = MessageStore(live_db, keystore, ChangeHub(live_db))
    alice = await live.create_mailbox("alice@hygie.test", "PER")
    bob = await live.create_mailbox("bob@hygie.test", "PER")
    (a,) = await live.append(marker_message("for alice"), [AppendTarget(alice.id)])
    (b,) = await live.append(marker_message("for bob"), [AppendTarget(bob.id)])
    await live_db.dispose()  # PostgreSQL copies a database only while nobody is connected
    copy_url = await _copy_database(databases.messages_url, databases.backend, tmp_path)
    copy_db = open_database(copy_url)
    backup = MessageStore(copy_db, keystore, ChangeHub(copy_db))
    try:
        assert b"for alice" in await backup.read(a.folder_id, a.uid)  # the copy works…

        await live.shred_mailbox(alice.id)

        with pytest.raises(DecryptionError):  # …until the key is gone
            await backup.read(a.folder_id, a.uid)
        assert b"for bob" in await backup.read(b.folder_id, b.uid)
        assert await live.mailbox_by_address("alice@hygie.test") is None
    finally:
        await copy_db.dispose()
        await live_db.dispose()
        await keys_db.dispose()
        await _drop_copy(copy_url, databases.backend)
