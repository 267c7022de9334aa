"""Two operators of the trust space, each a real `hygie serve`, exchange mail both ways;
a third one, not on the whitelist, is refused and its sender gets a delivery report.

Each operator is set up with the CLI as an administrator would (`hygie init`, `mailbox
create-professional`, `whitelist add` with the other's operator certificate DN, `dkim show`
for the other's trusted keys) and runs as its own process, with static routes to the others.
"""

from __future__ import annotations

import asyncio
import email
import email.utils
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from pathlib import Path
from typing import cast

import aiosmtplib
import pytest
from click.testing import CliRunner

from mailserver import tls
from mailserver.cli import main
from mailserver.config import load_settings
from mailserver.service import Runtime
from tests.databases import DatabasePair, Provisioner

PASSWORD = "correct horse battery staple"
LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (\S+)$")
FAST_ARGON2 = {
    "HYGIE_AUTH_ARGON2_TIME_COST": "1",
    "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
    "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
}


@dataclass
class Operator:
    domain: str
    data_dir: Path
    smtp_port: int
    database: DatabasePair | None = None
    routes: dict[str, Operator] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return f"dr.house@{self.domain}"

    @property
    def ca_pem(self) -> bytes:
        return (self.data_dir / "tls" / "ca.pem").read_bytes()

    @property
    def operator_dn(self) -> str:
        return tls.subject_dn(tls.load_certificate(self.data_dir / "tls" / "operator.pem"))

    def settings_env(self) -> dict[str, str]:
        """What the CLI, the server and the test need to open this operator's databases."""
        env = dict(FAST_ARGON2)
        if self.database is not None and self.database.backend == "postgresql":
            env["HYGIE_DATABASE_URL"] = self.database.messages_url
            env["HYGIE_DATABASE_KEYSTORE_URL"] = self.database.keystore_url
        return env

    def env(self) -> dict[str, str]:
        routes = ",".join(f"{d}=127.0.0.1:{o.smtp_port}" for d, o in self.routes.items())
        return {
            **os.environ,
            **self.settings_env(),
            "HYGIE_SMTP_PORT": str(self.smtp_port),
            "HYGIE_SUBMISSION_PORT": "0",
            "HYGIE_SUBMISSIONS_PORT": "0",
            "HYGIE_IMAP_PORT": "0",
            "HYGIE_IMAPS_PORT": "0",
            "HYGIE_WEB_PORT": "0",
            "HYGIE_OPS_PORT": "0",
            "HYGIE_ADMIN_ENABLED": "false",
            "HYGIE_QUEUE_ROUTES": routes,
            "HYGIE_QUEUE_FIRST_RETRY_SECONDS": "1",
        }


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def hygie(runner: CliRunner, op: Operator, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(main, list(args), input=stdin, env=op.settings_env())
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


def set_up(operators: dict[str, Operator]) -> None:
    """`hygie init` each data dir, then introduce the operators to each other with the
    CLI: CAs, whitelist entries (domain + operator certificate DN), DKIM records."""
    runner = CliRunner()
    for op in operators.values():
        hygie(runner, op, "init", "--data-dir", str(op.data_dir), "--domain", op.domain)
        hygie(
            runner,
            op,
            *("mailbox", "create-professional", "--data-dir", str(op.data_dir)),
            *("--address", op.user, "--rpps", "10001234567", "--family", "House"),
            *("--given", "Gregory", "--profession", "10", "--password-stdin"),
            stdin=PASSWORD + "\n",
        )
    alpha, beta, gamma = operators["alpha"], operators["beta"], operators["gamma"]
    records = {
        name: hygie(
            runner, op, "dkim", "show", "--trusted-keys-line", "--data-dir", str(op.data_dir)
        )
        for name, op in operators.items()
    }
    # Who knows whom: alpha and beta trust each other; gamma trusts alpha, but alpha does
    # not whitelist gamma (gamma's CA is in alpha's bundle: it is in the PKI, no more).
    knows = {"alpha": ["beta"], "beta": ["alpha"], "gamma": ["alpha"]}
    for name, others in knows.items():
        op = operators[name]
        bundle = op.data_dir / "tls" / "trusted-cas.pem"
        cas = [operators[o].ca_pem for o in others] + ([gamma.ca_pem] if op is alpha else [])
        bundle.write_bytes(bundle.read_bytes() + b"".join(cas))
        keys = op.data_dir / "dkim" / "trusted-keys.txt"
        keys.write_text("".join(records[o] for o in others), encoding="utf-8")
        for other in others:
            peer = operators[other]
            hygie(
                runner,
                op,
                *("whitelist", "add", "--data-dir", str(op.data_dir), peer.domain),
                *("--cert-dn", peer.operator_dn),
            )
            op.routes[peer.domain] = peer
    assert beta.routes and alpha.routes


async def serve(op: Operator, logs: Path) -> None:
    with (logs / f"{op.domain}.stderr").open("wb") as stderr:
        op.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "mailserver", "serve", "--data-dir", str(op.data_dir)),
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=op.env(),
        )
    assert op.process.stdout is not None
    while not {"smtp", "submission", "submissions"} <= set(op.ports):
        line = await asyncio.wait_for(op.process.stdout.readline(), 60)
        if not line:
            raise AssertionError(
                f"{op.domain} exited: {(logs / f'{op.domain}.stderr').read_text()}"
            )
        match = LISTENING.match(line.decode().strip())
        if match:
            op.ports[match[1]] = int(match[3])
    assert op.ports["smtp"] == op.smtp_port


async def stop(op: Operator) -> int | None:
    if op.process is None or op.process.returncode is not None:
        return None
    op.process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(op.process.wait(), 30)
    except TimeoutError:
        op.process.kill()
        await op.process.wait()
        return None


@pytest.fixture
async def operators(
    tmp_path: Path, provisioner: Provisioner, backend: str
) -> AsyncIterator[dict[str, Operator]]:
    """Three operators, each with its own data directory and databases (on `backend`)."""
    ports = free_ports(3)
    found = {
        name: Operator(f"{name}.test", tmp_path / name, port, await provisioner.fresh(backend))
        for name, port in zip(("alpha", "beta", "gamma"), ports, strict=True)
    }
    await asyncio.to_thread(set_up, found)
    try:
        await asyncio.gather(*(serve(op, tmp_path) for op in found.values()))
        yield found
    finally:
        codes = await asyncio.gather(*(stop(op) for op in found.values()))
        assert all(code in (0, None) for code in codes)


async def submit(op: Operator, recipient: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = op.user
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(f"Bonjour, message de {op.domain}.\n")
    context = ssl.create_default_context(cafile=str(op.data_dir / "tls" / "ca.pem"))
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=op.ports["submission"], tls_context=context, start_tls=True
    )
    await smtp.connect()
    try:
        await smtp.login(op.user, PASSWORD)
        errors, reply = await smtp.send_message(message)
        assert errors == {} and reply.startswith("2.0.0"), reply
    finally:
        await smtp.quit()


class Mailboxes:
    """Reads an operator's INBOX from its databases while it runs."""

    def __init__(self) -> None:
        self.runtimes: dict[Path, Runtime] = {}

    async def inbox(self, op: Operator) -> list[EmailMessage]:
        runtime = self.runtimes.get(op.data_dir)
        if runtime is None:
            settings = load_settings(op.data_dir, op.settings_env())
            runtime = self.runtimes[op.data_dir] = Runtime.open(settings)
        store = runtime.store
        mailbox = await store.mailbox_by_address(op.user)
        assert mailbox is not None
        folder = await store.folder(mailbox.id, "INBOX")
        entries = await store.entries(folder.id)
        found = await store.read_many(folder.id, [e.uid for e in entries])
        return [email.message_from_bytes(found[e.uid], policy=default_policy) for e in entries]

    async def wait(self, op: Operator, count: int = 1, within: float = 20.0) -> list[EmailMessage]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            messages = await self.inbox(op)
            if len(messages) >= count:
                return messages
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{op.user} received {len(messages)} of {count} messages")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.close()


@pytest.fixture
async def mailboxes(operators: dict[str, Operator]) -> AsyncIterator[Mailboxes]:
    reader = Mailboxes()
    try:
        yield reader
    finally:
        await reader.close()


async def test_two_operators_exchange_mail_and_an_outsider_is_refused(
    operators: dict[str, Operator], mailboxes: Mailboxes
) -> None:
    alpha, beta, gamma = operators["alpha"], operators["beta"], operators["gamma"]
    await asyncio.gather(
        submit(alpha, beta.user, "De alpha vers beta"),
        submit(beta, alpha.user, "De beta vers alpha"),
        submit(gamma, alpha.user, "De gamma vers alpha"),
    )
    (at_beta,) = await mailboxes.wait(beta)
    assert at_beta["Subject"] == "De alpha vers beta"
    results = " ".join(str(v) for v in at_beta.get_all("Authentication-Results", []))
    assert results.startswith("mail.beta.test;")
    assert "dkim=pass header.d=alpha.test header.s=hygie" in results

    (at_alpha,) = await mailboxes.wait(alpha)
    assert at_alpha["Subject"] == "De beta vers alpha"
    results = " ".join(str(v) for v in at_alpha.get_all("Authentication-Results", []))
    assert "dkim=pass header.d=beta.test header.s=hygie" in results

    (report,) = await mailboxes.wait(gamma)
    assert report.get_content_type() == "multipart/report"
    assert email.utils.parseaddr(str(report["From"]))[1] == "MAILER-DAEMON@gamma.test"
    _human, status, headers = report.iter_parts()
    (refused,) = cast(list[Message], status.get_payload())[1:]
    assert refused["Final-Recipient"] == f"rfc822; {alpha.user}"
    assert refused["Status"] == "5.7.1"
    diagnostic = str(refused["Diagnostic-Code"])
    assert diagnostic.startswith("smtp; 550 5.7.1 ")
    assert "gamma.test is not on the operator whitelist" in diagnostic
    assert "Subject: De gamma vers alpha" in headers.get_content()

    # alpha kept nothing from gamma
    assert [m["Subject"] for m in await mailboxes.inbox(alpha)] == ["De beta vers alpha"]
