"""SMTP ingest end to end: messages per second stored durably through `hygie serve`.

The node runs as in production, `python -m mailserver serve` in its own process, on a fresh
data directory (SQLite in it; PostgreSQL when HYGIE_TEST_DATABASE_URL is set). The load
comes from other processes: SESSIONS TLS sessions, kept open, each sending MESSAGES
messages of about 10 KiB one after the other, through

- `submissions` (implicit TLS, AUTH PLAIN), each session a professional writing to a
  colleague;
- `smtp` (STARTTLS with a client certificate of a whitelisted peer operator), every
  message DKIM-signed by the peer, so DKIM verification runs on each.

A message counts when its 250 came back, which the server sends only after the commit
(group commit, `mailserver.delivery`); afterwards the store is checked to hold exactly
that many messages, and the inbound ones in one INBOX to carry `dkim=pass`. Also printed,
to tell where the limit is: the CPU used by the server process, the client processes and
the PostgreSQL backends of the run (in cores, and per message), and the PostgreSQL
connections the server opened during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import make_url

from mailserver import init, tls
from mailserver.config import load_settings
from mailserver.service import Runtime
from mailserver.smtp.dkim import public_record, record_name, sign
from tests.databases import Provisioner, backends

SESSIONS = int(os.environ.get("HYGIE_BENCH_SMTP_SESSIONS", "20"))
MESSAGES = int(os.environ.get("HYGIE_BENCH_SMTP_MESSAGES", "50"))  # per session
PROCESSES = int(os.environ.get("HYGIE_BENCH_SMTP_PROCESSES", "2"))  # client processes
FACES = tuple(os.environ.get("HYGIE_BENCH_SMTP_FACES", "submissions,smtp").split(","))
DOMAIN = "hygie.test"
PEER = "peer.test"
SELECTOR = "bench"
PASSWORD = "correct horse battery staple"
LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (\S+)$")
BODY = b"".join(b"%03d " % n + b"x" * 74 + b"\r\n" for n in range(128))  # 10 KiB


@dataclass(frozen=True)
class SessionPlan:
    login: str  # empty on the inbound face: the certificate authenticates
    sender: str
    recipient: str
    tag: str


@dataclass(frozen=True)
class ClientPlan:
    face: str
    port: int
    ca_file: str
    sessions: tuple[SessionPlan, ...]
    messages: int
    cert_file: str = ""
    key_file: str = ""
    dkim_pem: bytes = b""


@dataclass(frozen=True)
class ClientResult:
    acknowledged: int
    errors: tuple[str, ...]
    finished: float  # time.monotonic(), the same clock in every process on Linux
    cpu_seconds: float


def letter(plan: ClientPlan, session: SessionPlan, number: int) -> bytes:
    head = (
        f"From: {session.sender}\r\n"
        f"To: {session.recipient}\r\n"
        f"Subject: bench {session.tag} #{number}\r\n"
        f"Date: {formatdate()}\r\n"
        f"Message-ID: <{session.tag}.{number}@{session.sender.rsplit('@', 1)[1]}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    message = head + BODY
    if plan.dkim_pem:
        message = (
            sign(message, selector=SELECTOR, domain=PEER, private_key_pem=plan.dkim_pem) + message
        )
    return message


def tls_context(plan: ClientPlan) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=plan.ca_file)
    if plan.cert_file:
        context.load_cert_chain(plan.cert_file, plan.key_file)
    return context


async def open_session(plan: ClientPlan, session: SessionPlan) -> aiosmtplib.SMTP:
    implicit = plan.face == "submissions"
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=plan.port,
        tls_context=tls_context(plan),
        use_tls=implicit,
        start_tls=not implicit,
        timeout=120,
    )
    await smtp.connect()
    await smtp.ehlo()
    if session.login:
        await smtp.login(session.login, PASSWORD)
    return smtp


async def send_all(smtp: aiosmtplib.SMTP, session: SessionPlan, letters: list[bytes]) -> int:
    acknowledged = 0
    for message in letters:
        errors, _reply = await smtp.sendmail(session.sender, [session.recipient], message)
        if not errors:
            acknowledged += 1
    return acknowledged


async def client_main(plan: ClientPlan, ready: Any, go: Any) -> ClientResult:
    # everything that is not the server's work happens before the start: signing, TLS, AUTH
    letters = [[letter(plan, s, n) for n in range(plan.messages)] for s in plan.sessions]
    sessions = await asyncio.gather(*(open_session(plan, s) for s in plan.sessions))
    ready.put(True)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    cpu = time.process_time()
    outcomes = await asyncio.gather(
        *(
            send_all(smtp, s, m)
            for smtp, s, m in zip(sessions, plan.sessions, letters, strict=True)
        ),
        return_exceptions=True,
    )
    finished = time.monotonic()
    cpu = time.process_time() - cpu
    for smtp in sessions:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()
    acknowledged = sum(o for o in outcomes if isinstance(o, int))
    errors = tuple(repr(o) for o in outcomes if isinstance(o, BaseException))
    return ClientResult(acknowledged, errors, finished, cpu)


def client_process(plan: ClientPlan, ready: Any, go: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(client_main(plan, ready, go)))
    except BaseException as exc:
        ready.put(False)
        results.put(ClientResult(0, (repr(exc),), time.monotonic(), 0.0))
        raise


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu(databases: tuple[str, ...]) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving these databases (its title names it)."""
    found: dict[int, float] = {}
    if not databases:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if title.startswith("postgres:") and any(f" {name} " in title for name in databases):
                found[int(entry.name)] = cpu_seconds(int(entry.name))
        except OSError:  # the process ended meanwhile
            continue
    return found


class DatabaseSampler(threading.Thread):
    """Samples the PostgreSQL backends' CPU every 0.1 s: a connection the pool opens and
    closes during the run is counted too (up to its last 0.1 s)."""

    def __init__(self, databases: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.databases = databases
        self.first: dict[int, float] = database_cpu(databases)
        self.last: dict[int, float] = dict(self.first)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.last.update(database_cpu(self.databases))

    def stop(self) -> float:
        """CPU seconds used by the backends since the sampler was created."""
        self.done.set()
        self.join()
        self.last.update(database_cpu(self.databases))
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


async def database_sessions(databases: tuple[str, ...]) -> int:
    """Connections ever opened to these databases (pg_stat_database.sessions)."""
    if not databases:
        return 0
    url = make_url(os.environ["HYGIE_TEST_DATABASE_URL"]).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value = await connection.fetchval(
            "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = ANY($1)",
            list(databases),
        )
        return int(value)
    finally:
        await connection.close()


def machine_busy_seconds() -> float:
    """CPU seconds used by everything on the machine so far, all cores (Linux /proc)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    backend: str
    data_dir: Path
    env: dict[str, str]
    peer_cert: Path
    peer_key: Path
    dkim_pem: bytes
    senders: list[str]
    recipients: list[str]
    databases: tuple[str, ...] = ()  # PostgreSQL database names, for their backends' CPU


async def prepare(backend: str, workdir: Path, provisioner: Provisioner) -> Bench:
    env = {
        **{
            f"HYGIE_{name}_PORT": "0"
            for name in ("SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB", "OPS")
        },
        "HYGIE_ADMIN_ENABLED": "false",
        "HYGIE_AUTH_ARGON2_TIME_COST": "1",
        "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
        "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
        "HYGIE_LIMITS_CONNECTIONS_PER_CLIENT": str(max(SESSIONS, 20)),
    }
    databases: tuple[str, ...] = ()
    if backend == "postgresql":
        pair = await provisioner.fresh(backend)
        env["HYGIE_DATABASE_URL"] = pair.messages_url
        env["HYGIE_DATABASE_KEYSTORE_URL"] = pair.keystore_url
        databases = tuple(
            str(make_url(url).database) for url in (pair.messages_url, pair.keystore_url)
        )
    data_dir = workdir / f"{backend}-data"
    with environment(env):
        await asyncio.to_thread(init.initialise, data_dir, DOMAIN)

    # the peer operator: its CA in our bundle, its DKIM key in our known records
    ca = tls.create_ca(PEER)
    client = tls.issue_client_certificate(ca, PEER)
    peer_cert, peer_key = workdir / f"{backend}-peer.pem", workdir / f"{backend}-peer.key"
    tls.write_certificate(peer_cert, client.certificate, ca.certificate)
    tls.write_private_key(peer_key, client.key)
    bundle = data_dir / "tls" / "trusted-cas.pem"
    bundle.write_bytes(
        bundle.read_bytes() + ca.certificate.public_bytes(serialization.Encoding.PEM)
    )
    dkim_pem = tls.new_rsa_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (data_dir / "dkim" / "trusted-keys.txt").write_text(
        f"{record_name(SELECTOR, PEER)} {public_record(dkim_pem)}\n", encoding="utf-8"
    )

    senders = [f"dr.sender{n:02d}@{DOMAIN}" for n in range(SESSIONS)]
    recipients = [f"dr.recipient{n:02d}@{DOMAIN}" for n in range(SESSIONS)]
    runtime = Runtime.open(load_settings(data_dir, env))
    try:
        for number, address in enumerate(senders + recipients):
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
        await runtime.directory.add_trusted_domain(
            actor="bench", domain=PEER, certificate_dn=tls.subject_dn(client.certificate)
        )
    finally:
        await runtime.close()
    return Bench(
        backend, data_dir, env, peer_cert, peer_key, dkim_pem, senders, recipients, databases
    )


def start_server(bench: Bench) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    log = (bench.data_dir / "serve.stderr").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailserver", "serve", "--data-dir", str(bench.data_dir)],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **bench.env},
    )
    log.close()
    assert process.stdout is not None
    ports: dict[str, int] = {}
    while not {"smtp", "submissions"} <= set(ports):
        line = process.stdout.readline().decode()
        if not line:
            process.wait()
            raise RuntimeError(f"hygie serve exited; see {bench.data_dir / 'serve.stderr'}")
        match = LISTENING.match(line.strip())
        if match:
            ports[match.group(1)] = int(match.group(3))
    return process, ports


def plans(bench: Bench, face: str, port: int) -> list[ClientPlan]:
    sessions = []
    for n in range(SESSIONS):
        recipient = bench.recipients[(n + 1) % SESSIONS]
        if face == "submissions":
            sender = bench.senders[n]
            sessions.append(SessionPlan(sender, sender, recipient, f"s{n}"))
        else:
            sessions.append(SessionPlan("", f"dr.peer{n:02d}@{PEER}", recipient, f"i{n}"))
    extra: dict[str, Any] = {}
    if face == "smtp":
        extra = {
            "cert_file": str(bench.peer_cert),
            "key_file": str(bench.peer_key),
            "dkim_pem": bench.dkim_pem,
        }
    ca_file = str(bench.data_dir / "tls" / "ca.pem")
    return [
        ClientPlan(face, port, ca_file, tuple(sessions[p::PROCESSES]), MESSAGES, **extra)
        for p in range(PROCESSES)
    ]


@dataclass(frozen=True)
class Figures:
    acknowledged: int
    seconds: float
    server_cpu: float
    clients_cpu: float
    database_cpu: float  # PostgreSQL backends; SQLite works inside the server process
    connections: int  # PostgreSQL connections opened during the run
    machine_cpu: float
    errors: tuple[str, ...]

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds


def drive(server_pid: int, face_plans: list[ClientPlan], databases: tuple[str, ...]) -> Figures:
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    clients = [
        context.Process(target=client_process, args=(plan, ready, go, results))
        for plan in face_plans
    ]
    for client in clients:
        client.start()
    if not all(ready.get(timeout=300) for _ in clients):
        go.set()
        raise RuntimeError("a client process could not open its sessions")
    sessions_before = asyncio.run(database_sessions(databases))
    server_before, machine_before = cpu_seconds(server_pid), machine_busy_seconds()
    sampler = DatabaseSampler(databases)
    sampler.start()
    started = time.monotonic()
    go.set()
    outcomes: list[ClientResult] = [results.get(timeout=1800) for _ in clients]
    finished = max(o.finished for o in outcomes)
    server_after, machine_after = cpu_seconds(server_pid), machine_busy_seconds()
    database = sampler.stop()
    time.sleep(1.0)  # statistics reach pg_stat_database within a second
    sessions_after = asyncio.run(database_sessions(databases))
    for client in clients:
        client.join()
    seconds = finished - started
    return Figures(
        acknowledged=sum(o.acknowledged for o in outcomes),
        seconds=seconds,
        server_cpu=(server_after - server_before) / seconds,
        clients_cpu=sum(o.cpu_seconds for o in outcomes) / seconds,
        database_cpu=database / seconds,
        connections=sessions_after - sessions_before,
        machine_cpu=(machine_after - machine_before) / seconds,
        errors=tuple(e for o in outcomes for e in o.errors),
    )


async def check_store(bench: Bench) -> tuple[int, int, int]:
    """Messages in the store; in one INBOX, inbound messages and those whose DKIM passed."""
    runtime = Runtime.open(load_settings(bench.data_dir, bench.env))
    try:
        _states, messages = await runtime.store.counts()
        mailbox = await runtime.store.mailbox_by_address(bench.recipients[1])
        assert mailbox is not None
        folder = await runtime.store.folder(mailbox.id, "INBOX")
        entries = await runtime.store.entries(folder.id)
        heads = await runtime.store.read_many(folder.id, [e.uid for e in entries], header_only=True)
        inbound = [head for head in heads.values() if b"\r\nSubject: bench i" in head]
        passed = sum(
            f"dkim=pass header.d={PEER} header.s={SELECTOR}".encode() in head for head in inbound
        )
        return messages, len(inbound), passed
    finally:
        await runtime.close()


def report(backend: str, face: str, figures: Figures) -> None:
    what = (
        "submissions (implicit TLS, AUTH)"
        if face == "submissions"
        else "smtp (STARTTLS, client certificate, DKIM verified)"
    )
    rest = figures.machine_cpu - figures.server_cpu - figures.clients_cpu - figures.database_cpu
    per_message = figures.seconds / figures.acknowledged * 1000 if figures.acknowledged else 0.0
    print(
        f"{backend}: {what}: {SESSIONS} sessions x {MESSAGES} messages of "
        f"{len(BODY) // 1024} KiB from {PROCESSES} client processes: "
        f"{figures.acknowledged} acknowledged in {figures.seconds:.1f} s = "
        f"{figures.rate:.0f} msg/s",
        flush=True,
    )
    database = (
        f"PostgreSQL {figures.database_cpu:.2f} ({figures.database_cpu * per_message:.1f} ms/msg), "
        if backend == "postgresql"
        else ""
    )
    print(
        f"  CPU in cores of {os.cpu_count()}: server {figures.server_cpu:.2f} "
        f"({figures.server_cpu * per_message:.1f} ms/msg), clients {figures.clients_cpu:.2f} "
        f"({figures.clients_cpu * per_message:.1f} ms/msg), {database}"
        f"rest of the machine {rest:.2f} (kernel, anything else running)",
        flush=True,
    )
    if figures.connections:
        print(
            f"  PostgreSQL connections opened during the run: {figures.connections} "
            f"({figures.connections / figures.acknowledged:.2f} per message)",
            flush=True,
        )
    for error in figures.errors[:5]:
        print(f"  client error: {error}", flush=True)


def run(backend: str, workdir: Path) -> None:
    provisioner = Provisioner(workdir)
    try:
        bench = asyncio.run(prepare(backend, workdir, provisioner))
        process, ports = start_server(bench)
        acknowledged = 0
        try:
            for face in FACES:
                figures = drive(process.pid, plans(bench, face, ports[face]), bench.databases)
                acknowledged += figures.acknowledged
                report(backend, face, figures)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        stored, inbound, dkim_passed = asyncio.run(check_store(bench))
        verdict = "ok" if stored == acknowledged and dkim_passed == inbound else "MISMATCH"
        print(
            f"  {verdict}: {acknowledged} acknowledged, {stored} in the store; "
            f"dkim=pass on {dkim_passed} of the {inbound} inbound messages of one INBOX",
            flush=True,
        )
    finally:
        asyncio.run(provisioner.cleanup())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as workdir:
        for backend in backends():
            run(backend, Path(workdir))
    if not os.environ.get("HYGIE_TEST_DATABASE_URL"):
        print("(set HYGIE_TEST_DATABASE_URL to measure PostgreSQL too)")
