"""Debian's mutt and mbsync against the IMAP server, as professionals would use them."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.messages import AppendTarget
from tests.databases import DatabasePair
from tests.smtp.conftest import PASSWORD, Node, start_node

ALICE = "alice.martin@hygie.test"


def letter(n: int) -> bytes:
    return (
        f"From: Dr Bob Durand <bob.durand@hygie.test>\r\nTo: {ALICE}\r\n"
        f"Subject: Resultat {n}\r\nMessage-ID: <r{n}@hygie.test>\r\n"
        f"Date: Mon, 23 Nov 2026 10:0{n}:00 +0100\r\n\r\n"
        f"Resultat d'analyse numero {n}: glycemie normale.\r\n"
    ).encode()


@pytest.fixture
async def node(
    tmp_path: Path, databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Node]:
    running = await start_node(tmp_path / "data", "hygie.test", databases, monkeypatch)
    try:
        box_id = await running.professional(ALICE, "10001234567")
        for n in range(1, 4):
            await running.runtime.store.append(letter(n), [AppendTarget(box_id)])
        yield running
    finally:
        await running.service.stop()


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: .ci/run installs the Debian package")
    return path


async def run(*command: str, cwd: Path, within: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"HOME": str(cwd), "TERM": "xterm", "PATH": "/usr/bin:/bin"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), within)
    return process.returncode or 0, output.decode("utf-8", "replace")


async def test_mutt_reads_a_message_over_imaps(node: Node, tmp_path: Path) -> None:
    require("mutt")
    out = tmp_path / "displayed.txt"
    rc = tmp_path / "muttrc"
    rc.write_text(
        f'set ssl_ca_certificates_file="{node.ca_file}"\n'
        "set ssl_force_tls=yes\nset ssl_verify_host=no\n"
        f'set imap_user="{ALICE}"\nset imap_pass="{PASSWORD}"\n'
        f'set folder="imaps://127.0.0.1:{node.ports["imaps"]}/"\nset spoolfile="+INBOX"\n'
        f'set pager="cat > {out}"\nset prompt_after=no\nset quit=yes\nset sort=date\n'
        "set mail_check=0\nset timeout=5\nset imap_passive=no\n"
    )
    # `script` gives mutt the terminal it wants; the message goes to the pager file.
    code, output = await run(
        require("script"),
        "-qec",
        f"mutt -n -F {rc} -e 'push <last-entry><display-message><quit>'",
        "/dev/null",
        cwd=tmp_path,
    )
    assert code == 0, output
    shown = out.read_text()
    assert "Subject: Resultat 3" in shown and "glycemie normale" in shown
    mailbox = await node.runtime.store.mailbox_by_address(ALICE)
    assert mailbox is not None
    inbox = await node.runtime.store.folder(mailbox.id, "INBOX")
    seen = [e.uid for e in await node.runtime.store.entries(inbox.id) if "\\Seen" in e.flags]
    assert seen == [3]


async def test_mbsync_syncs_down_then_flags_and_deletions_back(node: Node, tmp_path: Path) -> None:
    require("mbsync")
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        "IMAPAccount hygie\nHost localhost\n"
        f'Port {node.ports["imaps"]}\nUser {ALICE}\nPass "{PASSWORD}"\n'
        f"SSLType IMAPS\nCertificateFile {node.ca_file}\n\n"
        "IMAPStore remote\nAccount hygie\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
        "Channel inbox\nFar :remote:INBOX\nNear :local:INBOX\nCreate Both\n"
        "Expunge Both\nSyncState *\nSync All\n"
    )
    code, output = await run(require("mbsync"), "-c", str(config), "-a", cwd=tmp_path)
    assert code == 0, output
    files = sorted((maildir / "INBOX" / "cur").iterdir()) + sorted(
        (maildir / "INBOX" / "new").iterdir()
    )
    assert len(files) == 3
    # mbsync stores messages with local (LF) line ends
    by_subject = {
        f.read_bytes().split(b"Subject: ")[1].split(b"\n")[0].rstrip(b"\r"): f for f in files
    }
    # flag message 1, delete message 2, locally (Maildir info flags: F flagged, T trashed)
    for subject, flag in ((b"Resultat 1", "F"), (b"Resultat 2", "T")):
        path = by_subject[subject]
        base = path.name.split(":2,")[0]
        current = path.name.split(":2,")[1] if ":2," in path.name else ""
        target = maildir / "INBOX" / "cur" / f"{base}:2,{''.join(sorted(current + flag))}"
        path.rename(target)
    code, output = await run(require("mbsync"), "-c", str(config), "-a", cwd=tmp_path)
    assert code == 0, output
    mailbox = await node.runtime.store.mailbox_by_address(ALICE)
    assert mailbox is not None
    inbox = await node.runtime.store.folder(mailbox.id, "INBOX")
    entries = await node.runtime.store.entries(inbox.id)
    raw = await node.runtime.store.read_many(inbox.id, [e.uid for e in entries])
    subjects = {raw[e.uid].split(b"Subject: ")[1].split(b"\r\n")[0]: e for e in entries}
    assert set(subjects) == {b"Resultat 1", b"Resultat 3"}  # 2 was deleted and expunged
    assert "\\Flagged" in subjects[b"Resultat 1"].flags
