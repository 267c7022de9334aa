"""`hygie serve`: announced listeners, operations endpoints, graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mailserver import init
from mailserver.config import load_settings
from mailserver.service import Service
from storage.messages import AppendTarget
from tests.databases import DatabasePair

LISTENING = re.compile(r"^listening (\S+) (\S+):(\d+) (starttls|tls|none)$")


@pytest.fixture
async def data_dir(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("HYGIE_OPS_PORT", "0")
    monkeypatch.setenv("HYGIE_ADMIN_PORT", "0")
    if databases.backend == "postgresql":
        monkeypatch.setenv("HYGIE_DATABASE_URL", databases.messages_url)
        monkeypatch.setenv("HYGIE_DATABASE_KEYSTORE_URL", databases.keystore_url)
    await asyncio.to_thread(init.initialise, data, "hygie.test")
    return data


async def test_serve_announces_listeners_answers_ops_and_stops_on_sigterm(data_dir: Path) -> None:
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
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().rstrip("\n")
        match = LISTENING.match(line)
        assert match, line
        name, host, port, mode = match.groups()
        assert (name, host, mode) == ("ops", "127.0.0.1", "none") and int(port) > 0
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "checks": {"database": "ok", "keystore": "ok"}}
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert 'hygie_listeners{name="ops"} 1.0' in metrics.text
            assert 'hygie_database_up{database="database"} 1.0' in metrics.text
            assert (await client.get("/nothing-here")).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (data_dir / "logs" / "hygie.log").read_text()
    assert "stopped" in log


async def test_sigterm_waits_for_in_flight_deliveries(data_dir: Path) -> None:
    settings = load_settings(data_dir)
    service = Service(settings, out=io.StringIO())
    await service.start()
    store = service.runtime.store
    box = await store.create_mailbox("alice@hygie.test", "PER")

    async def slow_delivery() -> None:
        await asyncio.sleep(0.5)
        await store.append(b"Subject: late\r\n\r\nstill stored\r\n", [AppendTarget(box.id)])

    delivery = asyncio.create_task(service.runtime.track(slow_delivery()))
    await asyncio.sleep(0.05)
    await service.stop()  # what SIGTERM triggers
    await delivery

    service = Service(settings, out=io.StringIO())
    try:
        inbox = await service.runtime.store.folder(box.id, "INBOX")
        assert await service.runtime.store.read(inbox.id, 1) == (
            b"Subject: late\r\n\r\nstill stored\r\n"
        )
    finally:
        await service.runtime.close()


async def test_health_reports_stopping_while_draining(data_dir: Path) -> None:
    settings = load_settings(data_dir)
    out = io.StringIO()
    service = Service(settings, out=out)
    await service.start()
    port = int(out.getvalue().split()[2].rsplit(":", 1)[1])
    release = asyncio.Event()
    delivery = asyncio.create_task(service.runtime.track(release.wait()))
    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        health = await client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    release.set()
    await stopping
    await delivery


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init.initialise(data, "hygie.test")
    (data / "hygie.db").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "mailserver", "serve", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "run `hygie db upgrade` first" in result.stderr
