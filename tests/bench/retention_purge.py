"""The ten-year purge over a backlog: 1,000,000 expired messages (and 100,000 younger ones
that must stay), in 1,000 mailboxes, on SQLite and, with HYGIE_TEST_DATABASE_URL, on
PostgreSQL.

The messages are not stored through the store (encrypting a million messages would
measure encryption, not the purge): they are inserted with bulk SQL as ciphertext-shaped
rows (random bytes: a 60-byte wrapped data key, 300-byte header and 700-byte body
ciphertexts) with one INBOX entry each, arriving in order over one year that ended eleven
years ago, each to a random mailbox. The purge then runs exactly as in production
(`RetentionJobs.run`: batches of 1,000 messages, each with its expunge records, one audit
record and per-mailbox functional-log entries), while a writer delivers a real message
every 50 ms into another mailbox: its slowest delivery shows how long a purge batch can
keep delivery waiting. Printed: purge rate, the longest batch, delivery latency during the
purge, and the peak resident memory of the process during the purge (sampled from /proc).

`HYGIE_BENCH_RETENTION_MESSAGES` changes the number of expired messages.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

from sqlalchemy import func, insert, select, update

from retention.jobs import RetentionJobs
from retention.policy import RetentionPolicy
from storage.crypto import MasterKeyring
from storage.db import open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import AppendTarget, MessageStore
from storage.models import Folder, FolderEntry, Message, MessageKey
from storage.notify import ChangeHub
from tests.databases import Provisioner, backends

EXPIRED = int(os.environ.get("HYGIE_BENCH_RETENTION_MESSAGES", "1000000"))
YOUNG = EXPIRED // 10
MAILBOXES = 1000
INSERT_CHUNK = 20_000
# The run is as of today (so the messages delivered meanwhile are young, and kept).
NOW = datetime.now(UTC)
EXPIRED_FROM = NOW - timedelta(days=11 * 366 + 365)
YOUNG_FROM = NOW - timedelta(days=5 * 365)
NOTE = b"Subject: delivered during the purge\r\nFrom: a@hygie.test\r\n\r\n" + b"x" * 2000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def fake_rows(
    first: int,
    count: int,
    total: int,
    start: datetime,
    inboxes: list[tuple[int, int]],
    uids: dict[int, int],
) -> tuple[list[dict[str, object]], list[dict[str, object]], list[dict[str, object]]]:
    """Rows `first`..`first + count` of `total` arriving evenly over a year from `start`,
    in arrival order (as the store writes them), each to a random mailbox."""
    messages, entries, keys = [], [], []
    step = timedelta(days=365) / total
    for n in range(first, first + count):
        mailbox_id, folder_id = random.choice(inboxes)
        message_id = uuid.uuid4()
        received = start + step * n
        uids[folder_id] += 1
        messages.append(
            {
                "id": message_id,
                "mailbox_id": mailbox_id,
                "wrapped_key": None,  # in the key store, as the store writes them
                "header_ct": os.urandom(300),
                "body_ct": os.urandom(700),
                "size": 1000,
                "received_at": received,
            }
        )
        keys.append(
            {
                "message_id": message_id,
                "mailbox_id": mailbox_id,
                "wrapped_key": os.urandom(60),
                "created_at": received,
            }
        )
        entries.append(
            {
                "folder_id": folder_id,
                "uid": uids[folder_id],
                "message_id": message_id,
                "flags": "\\Seen",
                "modseq": 1,
                "internal_date": received,
                "size": 1000,
            }
        )
    return messages, entries, keys


async def run(backend: str, workdir: Path) -> None:
    provisioner = Provisioner(workdir)
    pair = await provisioner.fresh(backend)
    key_file = workdir / f"{backend}-retention.key"
    MasterKeyring.generate().save(key_file)
    messages_db, keys_db = open_database(pair.messages_url), open_database(pair.keystore_url)
    store = MessageStore(
        messages_db, KeyStore(keys_db, MasterKeySource(key_file)), ChangeHub(messages_db)
    )
    try:
        boxes = [await store.create_mailbox(f"u{n}@hygie.test", "PER") for n in range(MAILBOXES)]
        inboxes = [(b.id, (await store.folder(b.id, "INBOX")).id) for b in boxes]
        uids = {folder_id: 0 for _mailbox, folder_id in inboxes}
        started = time.perf_counter()
        for start, total in ((EXPIRED_FROM, EXPIRED), (YOUNG_FROM, YOUNG)):
            for done in range(0, total, INSERT_CHUNK):
                count = min(INSERT_CHUNK, total - done)
                rows, entries, keys = fake_rows(done, count, total, start, inboxes, uids)
                async with keys_db.write() as session, session.begin():
                    await session.execute(insert(MessageKey), keys)
                async with messages_db.write() as session, session.begin():
                    await session.execute(insert(Message), rows)
                    await session.execute(insert(FolderEntry), entries)
        async with messages_db.write() as session, session.begin():
            for folder_id, last_uid in uids.items():
                await session.execute(
                    update(Folder).where(Folder.id == folder_id).values(uidnext=last_uid + 1)
                )
        print(
            f"{backend}: inserted {EXPIRED + YOUNG} ciphertext-shaped rows by bulk SQL in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )

        writer_box = await store.create_mailbox("writer@hygie.test", "PER")
        jobs = RetentionJobs(store, RetentionPolicy(inactivity_kinds=frozenset()), domain="x.y")
        quiet: list[float] = []  # delivery latency without a purge, for comparison
        for _ in range(50):
            begun = time.perf_counter()
            await store.append(NOTE, [AppendTarget(writer_box.id)])
            quiet.append(time.perf_counter() - begun)
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        batch_marks: list[float] = []
        baseline, peak = rss_bytes(), rss_bytes()
        done_event = asyncio.Event()

        async def deliver_meanwhile() -> None:
            while not done_event.is_set():
                begun = time.perf_counter()
                await store.append(NOTE, [AppendTarget(writer_box.id)])
                latencies.append(time.perf_counter() - begun)
                await asyncio.sleep(0.05)

        async def sample_memory() -> None:
            nonlocal peak
            while not done_event.is_set():
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.1)

        helpers = [asyncio.create_task(deliver_meanwhile()), asyncio.create_task(sample_memory())]
        started = time.perf_counter()
        batch_marks.append(started)
        report = await jobs.run(NOW, progress=lambda _n: batch_marks.append(time.perf_counter()))
        elapsed = time.perf_counter() - started
        done_event.set()
        await asyncio.gather(*helpers)
        peak = max(peak, rss_bytes())
        async with messages_db.read() as session:
            left = await session.scalar(select(func.count()).select_from(Message))
        assert report.messages == EXPIRED, report.counts()
        assert left == YOUNG + len(quiet) + len(latencies), (left, YOUNG, len(latencies))
        longest = max(b - a for a, b in itertools.pairwise(batch_marks))
        print(
            f"{backend}: purged {report.messages} messages from {report.message_mailboxes} "
            f"mailboxes in {elapsed:.0f} s: {report.messages / elapsed:.0f} msg/s; longest "
            f"batch (with its pause) {longest * 1000:.0f} ms; {len(latencies)} deliveries "
            f"meanwhile, slowest "
            f"{max(latencies) * 1000:.0f} ms (median "
            f"{median(latencies) * 1000:.0f} ms; without a purge: slowest "
            f"{max(quiet) * 1000:.0f} ms, median {median(quiet) * 1000:.0f} ms); peak RSS "
            f"{peak / 2**20:.0f} MiB (before the purge {baseline / 2**20:.0f} MiB)",
            flush=True,
        )
    finally:
        await messages_db.dispose()
        await keys_db.dispose()
        await provisioner.cleanup()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as workdir:
        for backend in backends():
            asyncio.run(run(backend, Path(workdir)))
    if not os.environ.get("HYGIE_TEST_DATABASE_URL"):
        print("(set HYGIE_TEST_DATABASE_URL to measure PostgreSQL too)")
