"""`hygie audit …`: check and read the tamper-evident audit trail."""

from __future__ import annotations

from pathlib import Path

import click

from mailserver.commands.common import data_dir_option, fail, settings_for, with_runtime
from mailserver.service import Runtime
from storage import audit
from storage.models import AuditRecord


@click.group("audit")
def group() -> None:
    """The audit trail: who did what, when (never any content)."""


@group.command("verify")
@data_dir_option
def verify(data_dir: Path) -> None:
    """Check the hash chain; exits 1 and names the first bad record if it was tampered with."""

    async def work(runtime: Runtime) -> audit.Verification:
        return await audit.verify(runtime.messages_db)

    result = with_runtime(settings_for(data_dir), work)
    if not result.ok:
        fail(
            f"audit trail broken at record {result.first_bad_id}: it {result.problem} "
            f"({result.records} records before it are intact)"
        )
    click.echo(f"audit trail intact: {result.records} records")


@group.command("list")
@data_dir_option
@click.option("--limit", default=50, show_default=True)
def list_records(data_dir: Path, limit: int) -> None:
    """The most recent records, newest last."""

    async def work(runtime: Runtime) -> list[AuditRecord]:
        return await audit.records(runtime.messages_db, limit=limit, newest=True)

    for row in with_runtime(settings_for(data_dir), work):
        click.echo(
            f"{row.id}\t{row.at:%Y-%m-%d %H:%M:%S}\t{row.actor}\t{row.action}\t"
            f"{row.target}\t{row.outcome}\t{row.details}"
        )
