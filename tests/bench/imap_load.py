"""IMAP under load through `hygie serve`: whole sessions, open sessions, a large mailbox,
and the memory an idle connection costs.

The node runs as in production, `python -m mailserver serve` in its own process, on a fresh
data directory (SQLite in it; PostgreSQL when HYGIE_TEST_DATABASE_URL is set), with the
production argon2 settings (the authentication cache is what makes repeated logins cheap).
All traffic is implicit TLS (`imaps`); the clients are a minimal IMAP client on asyncio
streams, in other processes. Printed:

1. CLIENTS users (one client each, spread over PROCESSES client processes), each INBOX
   holding INBOX_SIZE messages of about 10 KiB, filled with `append_batch` before the
   server starts. Whole sessions: TLS, LOGIN, SELECT INBOX, FETCH 1:10 (FLAGS
   BODY.PEEK[]), STORE of \\Flagged on one message and \\Deleted on another, EXPUNGE,
   APPEND of a 10 KiB message (the INBOX stays at INBOX_SIZE), LOGOUT: sessions per
   second. Then with the sessions kept open (LOGIN and SELECT before the clock starts):
   FETCH (FLAGS BODY.PEEK[]) of one message, STORE +FLAGS / -FLAGS \\Flagged on one
   message, APPEND of one message: operations per second, each for PHASE_SECONDS. The
   first (argon2) logins are made and timed before the clock starts.
2. A mailbox of BIG messages of about 4 KiB (filled with `append_batch` in batches of
   FILL_BATCH before the server starts; the fill rate is printed): SELECT, UID SEARCH
   HEADER Subject and UID SEARCH FROM, in milliseconds as one client sees them.
3. Memory per idle connection: for each count in IDLE_COUNTS, a fresh server process,
   connections that each LOGIN (cached), SELECT their INBOX and IDLE; the server's VmRSS
   before and after, per connection. RLIMIT_NOFILE is raised to its hard limit in the
   bench and in the server.

Environment: HYGIE_BENCH_IMAP_CLIENTS, _PROCESSES, _SECONDS, _BIG, _IDLE (e.g. "1000,10000"),
_PARTS (e.g. "load,big,idle"); HYGIE_BENCH_IMAP_PROFILE=<dir> runs the server under cProfile
and leaves one .prof file per server process there.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import insert, update

from mailserver import init
from mailserver.config import load_settings
from mailserver.service import Runtime
from storage import crypto
from storage.messages import AppendTarget, split_message
from storage.models import Folder, FolderEntry, Message, utcnow
from tests.bench.smtp_ingest import environment
from tests.databases import Provisioner, backends

CLIENTS = int(os.environ.get("HYGIE_BENCH_IMAP_CLIENTS", "20"))
PROCESSES = int(os.environ.get("HYGIE_BENCH_IMAP_PROCESSES", "2"))
PHASE_SECONDS = float(os.environ.get("HYGIE_BENCH_IMAP_SECONDS", "15"))
BIG = int(os.environ.get("HYGIE_BENCH_IMAP_BIG", "100000"))
IDLE_COUNTS = tuple(
    int(n) for n in os.environ.get("HYGIE_BENCH_IMAP_IDLE", "1000,3000").split(",") if n
)
PARTS = tuple(os.environ.get("HYGIE_BENCH_IMAP_PARTS", "load,big,idle").split(","))
PROFILE_DIR = os.environ.get("HYGIE_BENCH_IMAP_PROFILE", "")
INBOX_SIZE = 100
FILL_BATCH = 500
APPEND_FILL = 5_000  # messages of the large mailbox stored through append_batch
BULK_CHUNK = 5_000  # the others: rows per bulk insert
IDLE_SETUP_SECONDS = 300.0  # opening idle connections stops there, and says so
IDLE_CONCURRENCY = 32  # connections being set up at once
COMMAND_TIMEOUT = 300.0
DOMAIN = "hygie.test"
PASSWORD = "correct horse battery staple"
LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (\S+)$")
BODY = b"".join(b"%03d " % n + b"x" * 74 + b"\r\n" for n in range(128))  # 10 KiB
SMALL_BODY = BODY[: 50 * 80]  # 4 KiB
NEEDLE_SUBJECT = "xyz-needle"
NEEDLE_FROM = "needle.sender@elsewhere.test"
PAGE = os.sysconf("SC_PAGE_SIZE")


def letter(sender: str, recipient: str, subject: str, body: bytes = BODY) -> bytes:
    head = (
        f"From: {sender}\r\n"
        f"To: {recipient}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <{abs(hash(subject))}.{random.getrandbits(48)}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    return head + body


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# -- a minimal IMAP client ---------------------------------------------------------------


class ImapError(Exception):
    pass


class Client:
    """One IMAP connection: tagged commands, untagged responses with literals read whole."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.counter = 0
        self.exists = 0

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, limit=1 << 20
        )
        client = cls(reader, writer)
        greeting = await client.response()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting[:100]!r}")
        return client

    async def response(self) -> bytes:
        """One response line, with its literals inlined."""
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        parts = [line]
        while line.endswith(b"}\r\n"):
            size = int(line[line.rindex(b"{") + 1 : -3].rstrip(b"+"))
            parts.append(await self.reader.readexactly(size))
            line = await self.reader.readline()
            parts.append(line)
        return b"".join(parts)

    async def command(self, text: str, literal: bytes | None = None) -> list[bytes]:
        """Send a command; the untagged responses; raises unless the tagged one is OK."""
        self.counter += 1
        tag = f"a{self.counter}".encode()
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + b" {%d}\r\n" % len(literal))
            ready = await self.response()
            if not ready.startswith(b"+"):
                raise ImapError(f"{text}: {ready[:200]!r}")
            self.writer.write(literal + b"\r\n")
        untagged = []
        while True:
            line = await asyncio.wait_for(self.response(), COMMAND_TIMEOUT)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(f"{text}: {line[:200]!r}")
                return untagged
            untagged.append(line)

    async def login(self, address: str) -> None:
        await self.command(f'LOGIN {address} "{PASSWORD}"')

    async def select(self, mailbox: str = "INBOX") -> None:
        for line in await self.command(f"SELECT {mailbox}"):
            if line.rstrip().endswith(b" EXISTS"):
                self.exists = int(line.split()[1])

    async def idle(self) -> None:
        self.counter += 1
        self.writer.write(b"a%d IDLE\r\n" % self.counter)
        line = await self.response()
        if not line.startswith(b"+"):
            raise ImapError(f"IDLE: {line[:200]!r}")

    async def logout(self) -> None:
        with contextlib.suppress(ImapError, ConnectionError, OSError):
            await self.command("LOGOUT")
        self.close()

    def close(self) -> None:
        self.writer.close()


def client_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


# -- part 1: whole sessions and open sessions, from client processes --------------------


@dataclass(frozen=True)
class LoadPlan:
    mode: str  # sessions, fetch, store, append
    port: int
    ca_file: str
    users: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class LoadResult:
    done: int
    errors: tuple[str, ...]
    cpu_seconds: float
    started: float  # time.monotonic(), the same clock in every process on Linux
    finished: float
    first_logins: float = 0.0  # seconds for this process's argon2 logins, concurrently


async def whole_session(port: int, context: ssl.SSLContext, user: str, appended: bytes) -> None:
    client = await Client.connect(port, context)
    try:
        await client.login(user)
        await client.select()
        await client.command("FETCH 1:10 (FLAGS BODY.PEEK[])")
        await client.command("STORE 2 +FLAGS (\\Flagged)")
        await client.command("STORE 1 +FLAGS (\\Deleted)")
        await client.command("EXPUNGE")
        await client.command("APPEND INBOX", appended)
        await client.command("LOGOUT")
    finally:
        client.close()


async def operation(client: Client, mode: str, number: int, appended: bytes) -> None:
    msn = random.randint(1, max(client.exists, 1))
    if mode == "fetch":
        await client.command(f"FETCH {msn} (FLAGS BODY.PEEK[])")
    elif mode == "store":
        sign = "+" if number % 2 == 0 else "-"
        await client.command(f"STORE {msn} {sign}FLAGS (\\Flagged)")
    else:
        await client.command("APPEND INBOX", appended)


async def load_main(plan: LoadPlan, ready: Any, go: Any) -> LoadResult:
    context = client_context(plan.ca_file)
    appended = {u: letter(u, u, f"appended by {u}") for u in plan.users}
    # The argon2 logins, timed apart: afterwards the server's auth cache answers.
    first = time.monotonic()
    warm = await asyncio.gather(*(Client.connect(plan.port, context) for _ in plan.users))
    await asyncio.gather(*(c.login(u) for c, u in zip(warm, plan.users, strict=True)))
    first_logins = time.monotonic() - first
    open_clients: list[Client] = []
    if plan.mode == "sessions":
        await asyncio.gather(*(c.logout() for c in warm))
    else:
        await asyncio.gather(*(c.select() for c in warm))
        open_clients = warm
    ready.put(True)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    cpu = time.process_time()
    started = time.monotonic()
    deadline = started + plan.seconds
    errors: list[str] = []

    async def worker(index: int) -> int:
        user = plan.users[index]
        done = 0
        while time.monotonic() < deadline:
            try:
                if plan.mode == "sessions":
                    await whole_session(plan.port, context, user, appended[user])
                else:
                    await operation(open_clients[index], plan.mode, done, appended[user])
            except (ImapError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(repr(exc))
                if plan.mode != "sessions":
                    break
                continue
            done += 1
        return done

    counts = await asyncio.gather(*(worker(i) for i in range(len(plan.users))))
    finished = time.monotonic()
    cpu = time.process_time() - cpu
    await asyncio.gather(*(c.logout() for c in open_clients))
    return LoadResult(sum(counts), tuple(errors), cpu, started, finished, first_logins)


def load_process(plan: LoadPlan, ready: Any, go: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(load_main(plan, ready, go)))
    except BaseException as exc:
        ready.put(False)
        results.put(LoadResult(0, (repr(exc),), 0.0, 0.0, 0.0))
        raise


@dataclass(frozen=True)
class LoadFigures:
    done: int
    seconds: float
    server_cpu: float  # cores
    clients_cpu: float  # cores
    first_logins: float
    errors: tuple[str, ...]

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def drive_load(
    server_pid: int, mode: str, port: int, ca_file: str, users: list[str]
) -> LoadFigures:
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    clients = [
        context.Process(
            target=load_process,
            args=(
                LoadPlan(mode, port, ca_file, tuple(users[p::PROCESSES]), PHASE_SECONDS),
                ready,
                go,
                results,
            ),
        )
        for p in range(PROCESSES)
    ]
    for client in clients:
        client.start()
    if not all(ready.get(timeout=600) for _ in clients):
        go.set()
        for client in clients:
            client.join()
        raise RuntimeError("a client process could not log in")
    server_before = cpu_seconds(server_pid)
    go.set()
    outcomes: list[LoadResult] = [results.get(timeout=PHASE_SECONDS + 600) for _ in clients]
    server_after = cpu_seconds(server_pid)
    for client in clients:
        client.join()
    started = min(o.started for o in outcomes)
    seconds = max(o.finished for o in outcomes) - started
    return LoadFigures(
        done=sum(o.done for o in outcomes),
        seconds=seconds,
        server_cpu=(server_after - server_before) / seconds,
        clients_cpu=sum(o.cpu_seconds for o in outcomes) / seconds,
        first_logins=max(o.first_logins for o in outcomes),
        errors=tuple(e for o in outcomes for e in o.errors),
    )


# -- the node ------------------------------------------------------------------------------


@dataclass
class Bench:
    backend: str
    data_dir: Path
    env: dict[str, str]
    users: list[str]
    big_user: str
    fill_rate: float = 0.0
    servers: int = field(default=0)

    @property
    def ca_file(self) -> str:
        return str(self.data_dir / "tls" / "ca.pem")


async def prepare(backend: str, workdir: Path, provisioner: Provisioner, parts: set[str]) -> Bench:
    env = {
        **{
            f"HYGIE_{name}_PORT": "0"
            for name in ("SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB", "OPS")
        },
        "HYGIE_ADMIN_ENABLED": "false",
        "HYGIE_RETENTION_ENABLED": "false",
    }  # argon2 at its production defaults
    if backend == "postgresql":
        pair = await provisioner.fresh(backend)
        env["HYGIE_DATABASE_URL"] = pair.messages_url
        env["HYGIE_DATABASE_KEYSTORE_URL"] = pair.keystore_url
    data_dir = workdir / f"{backend}-data"
    with environment(env):
        await asyncio.to_thread(init.initialise, data_dir, DOMAIN)
    users = [f"dr.reader{n:02d}@{DOMAIN}" for n in range(CLIENTS)]
    big_user = f"dr.archive@{DOMAIN}"
    bench = Bench(backend, data_dir, env, users, big_user)
    runtime = Runtime.open(load_settings(data_dir, env))
    try:
        ids = {}
        for number, address in enumerate([*users, big_user]):
            box = await runtime.directory.create_professional_mailbox(
                actor="bench",
                address=address,
                id_type="8",
                identifier=f"{10_000_000_000 + number}",
                family_name="Bench",
                given_name=f"N{number}",
                profession_code="10",
            )
            await runtime.authenticator.set_password(box.id, PASSWORD)
            ids[address] = box.id
        store = runtime.store
        for address in users:
            await store.append_batch(
                [
                    (
                        letter(f"colleague{n}@{DOMAIN}", address, f"report {n}"),
                        [AppendTarget(ids[address])],
                    )
                    for n in range(INBOX_SIZE)
                ]
            )
        if "big" in parts:
            bench.fill_rate = await fill_big(runtime, ids[big_user], big_user)
    finally:
        await runtime.close()
    return bench


def big_letter(n: int, big_user: str) -> bytes:
    sender = NEEDLE_FROM if n == BIG // 3 else f"colleague{n % 500}@{DOMAIN}"
    subject = f"{NEEDLE_SUBJECT} {n}" if n == BIG // 2 else f"report {n}"
    return letter(sender, big_user, subject, SMALL_BODY)


async def fill_big(runtime: Runtime, mailbox_id: int, big_user: str) -> float:
    """The first APPEND_FILL messages through `append_batch` (its rate is returned), the
    rest sealed the same way (`crypto.seal_message`, a fresh data key each) and inserted
    with bulk SQL, then the folder's UIDNEXT and HIGHESTMODSEQ set as the store would."""
    store = runtime.store
    target = [AppendTarget(mailbox_id)]
    through_store = min(APPEND_FILL, BIG)
    start = time.perf_counter()
    for first in range(0, through_store, FILL_BATCH):
        last = min(first + FILL_BATCH, through_store)
        await store.append_batch([(big_letter(n, big_user), target) for n in range(first, last)])
    rate = through_store / (time.perf_counter() - start)
    folder = await store.folder(mailbox_id, "INBOX")
    key = await runtime.keystore.get((await store.mailbox(mailbox_id)).key_id)
    uid = folder.uidnext
    modseq = folder.highestmodseq + 1
    now = utcnow()
    for first in range(through_store, BIG, BULK_CHUNK):
        messages, entries = [], []
        for n in range(first, min(first + BULK_CHUNK, BIG)):
            raw = big_letter(n, big_user)
            header, body = split_message(raw)
            message_id = uuid.uuid4()
            sealed = crypto.seal_message(key, mailbox_id, message_id, header, body)
            messages.append(
                {
                    "id": message_id,
                    "mailbox_id": mailbox_id,
                    "wrapped_key": sealed.wrapped_key,
                    "header_ct": sealed.header_ct,
                    "body_ct": sealed.body_ct,
                    "size": len(raw),
                    "received_at": now,
                }
            )
            entries.append(
                {
                    "folder_id": folder.id,
                    "uid": uid,
                    "message_id": message_id,
                    "flags": "",
                    "modseq": modseq,
                    "internal_date": now,
                    "size": len(raw),
                }
            )
            uid += 1
        async with runtime.messages_db.write() as session, session.begin():
            await session.execute(insert(Message), messages)
            await session.execute(insert(FolderEntry), entries)
    async with runtime.messages_db.write() as session, session.begin():
        await session.execute(
            update(Folder).where(Folder.id == folder.id).values(uidnext=uid, highestmodseq=modseq)
        )
    return rate


def start_server(bench: Bench) -> tuple[subprocess.Popen[bytes], int]:
    bench.servers += 1
    log = (bench.data_dir / f"serve-{bench.servers}.stderr").open("wb")
    command = [sys.executable, "-m", "mailserver", "serve", "--data-dir", str(bench.data_dir)]
    if PROFILE_DIR:
        Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
        out = Path(PROFILE_DIR) / f"{bench.backend}-{bench.servers}.prof"
        command[1:1] = ["-m", "cProfile", "-o", str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **bench.env}
    )
    log.close()
    assert process.stdout is not None
    while True:
        line = process.stdout.readline().decode()
        if not line:
            process.wait()
            raise RuntimeError(f"hygie serve exited; see {bench.data_dir}/serve-*.stderr")
        match = LISTENING.match(line.strip())
        if match and match.group(1) == "imaps":
            return process, int(match.group(3))


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_load(bench: Bench, pid: int, port: int) -> None:
    print(
        f"{bench.backend}: {CLIENTS} clients over imaps from {PROCESSES} client processes, "
        f"INBOX of {INBOX_SIZE} messages of {len(letter('a', 'b', 'c')) // 1024} KiB, "
        f"{PHASE_SECONDS:.0f} s per phase",
        flush=True,
    )
    labels = {
        "sessions": "whole sessions (LOGIN SELECT FETCH×10 STORE×2 EXPUNGE APPEND LOGOUT)",
        "fetch": "FETCH (FLAGS BODY.PEEK[]) of one message, sessions open",
        "store": "STORE ±FLAGS (\\Flagged) on one message, sessions open",
        "append": "APPEND of one message, sessions open",
    }
    for mode in ("sessions", "fetch", "store", "append"):
        figures = drive_load(pid, mode, port, bench.ca_file, bench.users)
        unit = "sessions/s" if mode == "sessions" else "ops/s"
        print(
            f"  {labels[mode]}: {figures.done} in {figures.seconds:.1f} s = "
            f"{figures.rate:.1f} {unit}; CPU in cores of {os.cpu_count()}: "
            f"server {figures.server_cpu:.2f}, clients {figures.clients_cpu:.2f}",
            flush=True,
        )
        if mode == "sessions":
            print(
                f"  (before the clock: {len(bench.users)} first logins, argon2 at production "
                f"settings, {figures.first_logins:.1f} s for each process's share, concurrently)",
                flush=True,
            )
        for error in figures.errors[:3]:
            print(f"    client error: {error}", flush=True)
        if len(figures.errors) > 3:
            print(f"    ... {len(figures.errors)} errors in all", flush=True)


# -- part 2: the large mailbox -------------------------------------------------------------


async def big_main(bench: Bench, port: int, pid: int) -> None:
    context = client_context(bench.ca_file)
    client = await Client.connect(port, context)
    try:
        await client.login(bench.big_user)
        budget = time.monotonic() + 240  # repetitions stop there

        async def timed(text: str, check: Any = None) -> str:
            times = []
            lines: list[bytes] = []
            cpu: list[float] = []
            while len(times) < 3 and (not times or time.monotonic() < budget):
                server_before = cpu_seconds(pid)
                start = time.perf_counter()
                lines = await client.command(text)
                times.append((time.perf_counter() - start) * 1000)
                cpu.append((cpu_seconds(pid) - server_before) * 1000)
                if times[-1] > 20_000:
                    break  # too slow to repeat within the bench's bounds
            verdict = "" if check is None else (" ok" if check(lines) else " WRONG RESULT")
            return (
                f"{text}: {median(times):.0f} ms (median of {len(times)}; server CPU "
                f"{median(cpu):.0f} ms){verdict}"
            )

        def found(uid: int) -> Any:
            return lambda lines: any(
                line.startswith(b"* SEARCH") and str(uid).encode() in line.split() for line in lines
            )

        print(f"{bench.backend}: mailbox of {BIG} messages of 4 KiB:", flush=True)
        rss = rss_bytes(pid)
        print(f"  {await timed('SELECT INBOX')}", flush=True)
        print(f"    server RSS +{(rss_bytes(pid) - rss) / 2**20:.0f} MiB after SELECT", flush=True)
        print(f"  {await timed('UID SEARCH UNSEEN')}", flush=True)
        header = f'UID SEARCH HEADER Subject "{NEEDLE_SUBJECT}"'
        print(f"  {await timed(header, found(BIG // 2 + 1))}", flush=True)
        sender = f'UID SEARCH FROM "{NEEDLE_FROM}"'
        print(f"  {await timed(sender, found(BIG // 3 + 1))}", flush=True)
    finally:
        await client.logout()


# -- part 3: idle connections --------------------------------------------------------------


@dataclass(frozen=True)
class IdleResult:
    opened: int
    seconds: float
    errors: tuple[str, ...]


async def idle_main(
    port: int, ca_file: str, users: list[str], count: int, ready: Any, go: Any
) -> None:
    raise_nofile()
    context = client_context(ca_file)
    clients: list[Client] = []
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + IDLE_SETUP_SECONDS
    numbers = iter(range(count))

    async def opener() -> None:
        for number in numbers:
            if time.monotonic() > deadline:
                return
            try:
                client = await Client.connect(port, context)
                await client.login(users[number % len(users)])
                await client.select()
                await client.idle()
                clients.append(client)
            except (ImapError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(repr(exc))
                if len(errors) > 20:
                    return

    await asyncio.gather(*(opener() for _ in range(IDLE_CONCURRENCY)))
    ready.put(IdleResult(len(clients), time.monotonic() - start, tuple(errors)))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    for client in clients:
        client.close()


def idle_process(
    port: int, ca_file: str, users: list[str], count: int, ready: Any, go: Any
) -> None:
    try:
        asyncio.run(idle_main(port, ca_file, users, count, ready, go))
    except BaseException as exc:
        ready.put(IdleResult(0, 0.0, (repr(exc),)))
        raise


async def warm_logins(port: int, ca_file: str, users: list[str]) -> None:
    """One login per user: the argon2 work, then the auth cache answers."""
    context = client_context(ca_file)
    clients = await asyncio.gather(*(Client.connect(port, context) for _ in users))
    await asyncio.gather(*(c.login(u) for c, u in zip(clients, users, strict=True)))
    await asyncio.gather(*(c.select() for c in clients))
    await asyncio.gather(*(c.logout() for c in clients))


def run_idle(bench: Bench, count: int) -> None:
    process, port = start_server(bench)
    try:
        asyncio.run(warm_logins(port, bench.ca_file, bench.users))
        time.sleep(1.0)
        before = rss_bytes(process.pid)
        context = multiprocessing.get_context("spawn")
        ready, go = context.Queue(), context.Event()
        client = context.Process(
            target=idle_process, args=(port, bench.ca_file, bench.users, count, ready, go)
        )
        client.start()
        result: IdleResult = ready.get(timeout=IDLE_SETUP_SECONDS + 120)
        time.sleep(2.0)
        after = rss_bytes(process.pid)
        go.set()
        client.join(timeout=60)
        per = (after - before) / result.opened if result.opened else 0.0
        short = "" if result.opened == count else f" (of {count} asked: stopped at the bound)"
        print(
            f"{bench.backend}: {result.opened} idle connections{short} (imaps, LOGIN, "
            f"SELECT INBOX, IDLE) set up in {result.seconds:.0f} s "
            f"({result.opened / result.seconds:.0f}/s): server RSS "
            f"{before / 2**20:.0f} -> {after / 2**20:.0f} MiB = {per / 1024:.1f} KiB per "
            "connection",
            flush=True,
        )
        for error in result.errors[:3]:
            print(f"    client error: {error}", flush=True)
    finally:
        stop_server(process)


def run(backend: str, workdir: Path) -> None:
    provisioner = Provisioner(workdir)
    parts = set(PARTS)
    try:
        start = time.perf_counter()
        bench = asyncio.run(prepare(backend, workdir, provisioner, parts))
        print(f"{backend}: prepared in {time.perf_counter() - start:.0f} s", flush=True)
        if "big" in parts:
            print(
                f"{backend}: large mailbox: first {min(APPEND_FILL, BIG)} messages through "
                f"append_batch in batches of {FILL_BATCH}: {bench.fill_rate:.0f} msg/s; the "
                f"rest sealed alike and bulk-inserted",
                flush=True,
            )
        if parts & {"load", "big"}:
            process, port = start_server(bench)
            try:
                if "load" in parts:
                    run_load(bench, process.pid, port)
                if "big" in parts:
                    asyncio.run(big_main(bench, port, process.pid))
            finally:
                stop_server(process)
        if "idle" in parts:
            for count in IDLE_COUNTS:
                run_idle(bench, count)
    finally:
        asyncio.run(provisioner.cleanup())


def main() -> None:
    limit = raise_nofile()  # inherited by the server and the client processes
    print(f"RLIMIT_NOFILE raised to the hard limit, {limit}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as workdir:
        for backend in backends():
            run(backend, Path(workdir))
    if not os.environ.get("HYGIE_TEST_DATABASE_URL"):
        print("(set HYGIE_TEST_DATABASE_URL to measure PostgreSQL too)")
