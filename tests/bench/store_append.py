"""Durable, encrypted appends into the message store, one by one and in group commits.

Prints messages per second for 10 KiB messages on SQLite and, when
HYGIE_TEST_DATABASE_URL is set, on PostgreSQL. Each figure is for stored, encrypted,
committed messages (SQLite with synchronous=FULL), without any protocol in front.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from storage.crypto import MasterKeyring
from storage.db import open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import AppendTarget, MessageStore
from storage.notify import ChangeHub
from tests.databases import Provisioner, backends

MESSAGE = (
    b"Subject: bench\r\nFrom: a@hygie.test\r\nTo: b@hygie.test\r\n\r\n"
    + (b"x" * 78 + b"\r\n") * 128
)  # about 10 KiB
MAILBOXES = 20
SINGLE = 400
BATCHES = 100
BATCH_SIZE = 20
WRITERS = 20


async def run(backend: str, workdir: Path) -> None:
    provisioner = Provisioner(workdir)
    pair = await provisioner.fresh(backend)
    key_file = workdir / f"{backend}-master.key"
    MasterKeyring.generate().save(key_file)
    messages, keys = open_database(pair.messages_url), open_database(pair.keystore_url)
    store = MessageStore(messages, KeyStore(keys, MasterKeySource(key_file)), ChangeHub(messages))
    try:
        boxes = [await store.create_mailbox(f"u{n}@hygie.test", "PER") for n in range(MAILBOXES)]

        async def writer(index: int, count: int) -> None:
            for n in range(count):
                box = boxes[(index + n) % MAILBOXES]
                await store.append(MESSAGE, [AppendTarget(box.id)])

        start = time.perf_counter()
        await asyncio.gather(*(writer(i, SINGLE // WRITERS) for i in range(WRITERS)))
        single = SINGLE / (time.perf_counter() - start)

        start = time.perf_counter()
        for b in range(BATCHES):
            await store.append_batch(
                [
                    (MESSAGE, [AppendTarget(boxes[(b + n) % MAILBOXES].id)])
                    for n in range(BATCH_SIZE)
                ]
            )
        grouped = BATCHES * BATCH_SIZE / (time.perf_counter() - start)
        print(
            f"{backend}: {len(MESSAGE)} B messages, {WRITERS} concurrent writers, one commit each: "
            f"{single:.0f} msg/s; group commits of {BATCH_SIZE}: {grouped:.0f} msg/s",
            flush=True,
        )
    finally:
        await messages.dispose()
        await keys.dispose()
        await provisioner.cleanup()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as workdir:
        for backend in backends():
            asyncio.run(run(backend, Path(workdir)))
    if not os.environ.get("HYGIE_TEST_DATABASE_URL"):
        print("(set HYGIE_TEST_DATABASE_URL to measure PostgreSQL too)")
