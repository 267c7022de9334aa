"""Administrative commands: passwords, application passwords, master-key rotation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from mailserver import init
from mailserver.config import load_settings
from mailserver.service import Runtime
from storage.crypto import MasterKeyring
from storage.messages import AppendTarget

T = TypeVar("T")
FAST_ARGON2 = {
    "HYGIE_AUTH_ARGON2_TIME_COST": "1",
    "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
    "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in FAST_ARGON2.items():
        monkeypatch.setenv(key, value)
    data = tmp_path / "data"
    init.initialise(data, "hygie.test")
    return data


def hygie(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailserver", *args, "--data-dir", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


async def _with_runtime(data: Path, work: Callable[[Runtime], Awaitable[T]]) -> T:
    runtime = Runtime.open(load_settings(data))
    try:
        return await work(runtime)
    finally:
        await runtime.close()


def login(data: Path, address: str, secret: str) -> str:
    async def work(runtime: Runtime) -> str:
        result = await runtime.authenticate(address, secret, remote="127.0.0.1", protocol="test")
        return result.reason

    return asyncio.run(_with_runtime(data, work))


def test_password_and_app_password_lifecycle(data_dir: Path) -> None:
    async def create(runtime: Runtime) -> None:
        await runtime.store.create_mailbox("dr.martin@hygie.test", "PER")

    asyncio.run(_with_runtime(data_dir, create))

    short = hygie(
        data_dir,
        "auth",
        "set-password",
        "dr.martin@hygie.test",
        "--password-stdin",
        stdin="short\n",
    )
    assert short.returncode == 2 and "at least 12 characters" in short.stderr

    done = hygie(
        data_dir,
        "auth",
        "set-password",
        "dr.martin@hygie.test",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert done.returncode == 0, done.stderr
    assert login(data_dir, "dr.martin@hygie.test", "correct horse battery") == "ok"
    assert login(data_dir, "dr.martin@hygie.test", "wrong horse battery") == "bad-credentials"

    added = hygie(
        data_dir, "auth", "app-password-add", "dr.martin@hygie.test", "--device", "Thunderbird"
    )
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert login(data_dir, "dr.martin@hygie.test", secret) == "ok"

    listing = hygie(data_dir, "auth", "list", "dr.martin@hygie.test")
    assert listing.returncode == 0
    app_line = next(line for line in listing.stdout.splitlines() if "Thunderbird" in line)
    assert secret not in listing.stdout and "$argon2" not in listing.stdout
    revoked = hygie(data_dir, "auth", "revoke", app_line.split("\t")[0])
    assert revoked.returncode == 0, revoked.stderr
    assert login(data_dir, "dr.martin@hygie.test", secret) == "bad-credentials"

    unknown = hygie(data_dir, "auth", "list", "nobody@hygie.test")
    assert unknown.returncode == 1 and "no mailbox nobody@hygie.test" in unknown.stderr


def test_rotate_master_from_the_command_line(data_dir: Path) -> None:
    async def create(runtime: Runtime) -> tuple[int, int]:
        box = await runtime.store.create_mailbox("dr.martin@hygie.test", "PER")
        (appended,) = await runtime.store.append(
            b"Subject: kept\r\n\r\nreadable after rotation\r\n", [AppendTarget(box.id)]
        )
        return appended.folder_id, appended.uid

    folder_id, uid = asyncio.run(_with_runtime(data_dir, create))
    before = MasterKeyring.load(data_dir / "keys/master.key").active_id

    rotated = hygie(data_dir, "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    assert "1 mailbox keys rewrapped" in rotated.stdout and before in rotated.stdout
    after = MasterKeyring.load(data_dir / "keys/master.key").active_id
    assert after != before
    status = hygie(data_dir, "keys", "status")
    assert f"active master key {after}" in status.stdout and f"{after}: 1 mailbox keys" in (
        status.stdout
    )

    async def read(runtime: Runtime) -> bytes:
        return await runtime.store.read(folder_id, uid)

    assert b"readable after rotation" in asyncio.run(_with_runtime(data_dir, read))


def test_db_upgrade_and_config_check(data_dir: Path) -> None:
    upgraded = hygie(data_dir, "db", "upgrade")
    assert upgraded.returncode == 0 and "messages: at revision" in upgraded.stdout
    checked = hygie(data_dir, "config", "check")
    assert checked.returncode == 0 and "domain = 'hygie.test'" in checked.stdout
