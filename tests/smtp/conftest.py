"""A running node on fresh databases, with its SMTP listeners, for protocol tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from directory.trust import Directory
from mailserver import init
from mailserver.config import load_settings
from mailserver.service import Runtime, Service
from tests.databases import DatabasePair

LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (\S+)$", re.MULTILINE)
PASSWORD = "correct horse battery staple"
ACTOR = "test:admin"


@dataclass
class Node:
    data_dir: Path
    service: Service
    ports: dict[str, int]

    @property
    def runtime(self) -> Runtime:
        return self.service.runtime

    @property
    def directory(self) -> Directory:
        return self.service.runtime.directory

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def professional(self, address: str, rpps: str, *, password: str = PASSWORD) -> int:
        box = await self.directory.create_professional_mailbox(
            actor=ACTOR,
            address=address,
            id_type="8",
            identifier=rpps,
            family_name="Martin",
            given_name="Alice",
            profession_code="10",
        )
        await self.runtime.authenticator.set_password(box.id, password)
        return box.id

    async def patient(self, ins: str, birth: dt.date, sex: str) -> tuple[int, str]:
        box, _ins = await self.directory.create_patient_mailbox(
            actor=ACTOR,
            ins=ins,
            family_name="Dupont",
            given_names="Camille",
            birth_date=birth,
            sex=sex,
        )
        await self.runtime.authenticator.set_password(box.id, PASSWORD)
        return box.id, box.address

    async def inbox(self, mailbox_id: int) -> list[bytes]:
        store = self.runtime.store
        folder = await store.folder(mailbox_id, "INBOX")
        entries = await store.entries(folder.id)
        found = await store.read_many(folder.id, [e.uid for e in entries])
        return [found[e.uid] for e in entries]


async def start_node(
    data_dir: Path,
    domain: str,
    databases: DatabasePair | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    trusted_cas: tuple[bytes, ...] = (),
    dkim_records: dict[str, str] | None = None,
    **overrides: str,
) -> Node:
    """`hygie init` then start a node; other operators' CAs and DKIM records first."""
    env = {
        "HYGIE_SMTP_PORT": "0",
        "HYGIE_SUBMISSION_PORT": "0",
        "HYGIE_SUBMISSIONS_PORT": "0",
        "HYGIE_IMAP_PORT": "0",
        "HYGIE_IMAPS_PORT": "0",
        "HYGIE_WEB_PORT": "0",
        "HYGIE_ADMIN_PORT": "0",
        "HYGIE_OPS_PORT": "0",
        "HYGIE_AUTH_ARGON2_TIME_COST": "1",
        "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
        "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
        **overrides,
    }
    if databases is not None and databases.backend == "postgresql":
        env["HYGIE_DATABASE_URL"] = databases.messages_url
        env["HYGIE_DATABASE_KEYSTORE_URL"] = databases.keystore_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    await asyncio.to_thread(init.initialise, data_dir, domain)
    bundle = data_dir / "tls" / "trusted-cas.pem"
    bundle.write_bytes(bundle.read_bytes() + b"".join(trusted_cas))
    if dkim_records:
        lines = "".join(f"{name} {value}\n" for name, value in dkim_records.items())
        (data_dir / "dkim" / "trusted-keys.txt").write_text(lines, encoding="utf-8")
    out = io.StringIO()
    service = Service(load_settings(data_dir), out=out)
    await service.start()
    ports = {m[0]: int(m[2]) for m in LISTENING.findall(out.getvalue())}
    return Node(data_dir, service, ports)


@pytest.fixture
async def node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Node]:
    running = await start_node(tmp_path / "data", "hygie.test", databases, monkeypatch)
    try:
        yield running
    finally:
        await running.service.stop()
