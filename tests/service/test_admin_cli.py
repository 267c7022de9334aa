"""End to end: `hygie admin token …` issues tokens, `hygie serve` answers the admin API
over real TLS (verified against the data directory's CA), and a revoked token stops
working on the running node at once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mailserver import init
from tests.databases import DatabasePair

LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (starttls|tls|none)$")
# Every listener on a free port, so that this test never collides with a running node.
PORT_VARIABLES = ("OPS", "ADMIN", "WEB", "SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS")


@pytest.fixture
async def data_dir(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> Path:
    data = tmp_path / "data"
    for name in PORT_VARIABLES:
        monkeypatch.setenv(f"HYGIE_{name}_PORT", "0")
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    await asyncio.to_thread(init.initialise, data, "hygie.test")
    return data


async def hygie(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mailserver", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


async def create_token(data: Path, name: str, role: str) -> str:
    result = await hygie(data, "admin", "token", "create", "--name", name, "--role", role)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


async def listener(stdout: asyncio.StreamReader, wanted: str) -> tuple[str, int, str]:
    """Read the announcements until the `wanted` listener's."""
    while True:
        line = (await asyncio.wait_for(stdout.readline(), 60)).decode().rstrip("\n")
        assert line, "hygie serve stopped before announcing its listeners"
        match = LISTENING.match(line)
        assert match, line
        name, host, port, mode = match.groups()
        if name == wanted:
            return host, int(port), mode


async def tls_version(host: str, port: int, context: ssl.SSLContext) -> str | None:
    _reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        return writer.get_extra_info("ssl_object").version()  # type: ignore[no-any-return]
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tokens_from_the_cli_open_the_admin_api_over_tls(data_dir: Path) -> None:
    auditor = await create_token(data_dir, "audit-bot", "auditor")
    admin = await create_token(data_dir, "alice", "directory-admin")
    assert auditor.startswith("hya_") and admin.startswith("hya_") and auditor != admin
    duplicate = await hygie(
        data_dir, "admin", "token", "create", "--name", "alice", "--role", "auditor"
    )
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    no_role = await hygie(data_dir, "admin", "token", "create", "--name", "x", "--role", "root")
    assert no_role.returncode == 2
    listing = await hygie(data_dir, "admin", "token", "list")
    assert listing.returncode == 0, listing.stderr
    assert [line.split("\t")[:3] for line in listing.stdout.splitlines()] == [
        ["alice", "directory-admin", "active"],
        ["audit-bot", "auditor", "active"],
    ]
    assert auditor not in listing.stdout and admin not in listing.stdout

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailserver",
        "serve",
        "--data-dir",
        str(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        host, port, mode = await listener(process.stdout, "admin")
        assert (host, mode) == ("127.0.0.1", "tls") and port > 0

        trust = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
        async with httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=trust) as api:
            created = await api.post(
                "/mailboxes/professionals",
                json={
                    "address": "dr.martin@hygie.test",
                    "id_type": "8",
                    "identifier": "10001234567",
                    "family_name": "Martin",
                    "given_name": "Claire",
                    "profession_code": "10",
                },
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert created.status_code == 201, created.text
            as_auditor = {"Authorization": f"Bearer {auditor}"}
            trail = await api.get("/audit", params={"action": "mailbox.create"}, headers=as_auditor)
            assert [(r["actor"], r["target"]) for r in trail.json()["records"]] == [
                ("admin:alice", "dr.martin@hygie.test")
            ]
            verified = await api.get("/audit/verify", headers=as_auditor)
            assert verified.json()["ok"] is True
            assert (await api.get("/audit/verify")).status_code == 401

            revoked = await hygie(data_dir, "admin", "token", "revoke", "audit-bot")
            assert revoked.returncode == 0, revoked.stderr
            assert (await api.get("/audit/verify", headers=as_auditor)).status_code == 401

        # TLS 1.2 minimum (MISSION "Transport"): 1.2 is served, 1.1 is refused.
        tls12 = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert await tls_version(host, port, tls12) == "TLSv1.2"
        tls11 = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
        tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
        tls11.minimum_version = ssl.TLSVersion.TLSv1
        tls11.maximum_version = ssl.TLSVersion.TLSv1_1
        # The server aborts the handshake: the client sees an alert or a reset.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await tls_version(host, port, tls11)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
