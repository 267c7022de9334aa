"""`hygie retention …` and the mailbox lifecycle commands (`hygie mailbox close|reopen|
hold|release`): the retention rules run by hand, closures and legal holds.

The lifecycle commands join the existing `mailbox` group from here.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click
from sqlalchemy import func, select

from mailserver.commands.common import data_dir_option, fail, settings_for, with_runtime
from mailserver.commands.mailbox import cli_actor
from mailserver.commands.mailbox import group as mailbox_group
from mailserver.config import Settings
from mailserver.service import Runtime
from retention.jobs import Report, RetentionJobs
from retention.lifecycle import Lifecycle, MailboxLifecycle
from retention.policy import ClosureKind, RetentionPolicy
from retention.scheduler import RunLock, run_recorded
from storage.models import Mailbox, RetentionRun, utcnow

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


def policy_of(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy.from_mapping(settings.retention.model_dump())


def jobs_of(runtime: Runtime, actor: str) -> RetentionJobs:
    settings = runtime.settings
    return RetentionJobs(
        runtime.store, policy_of(settings), domain=settings.server.domain, actor=actor
    )


def _day(when: dt.datetime | None) -> str:
    return f"{when:%Y-%m-%d}" if when is not None else "-"


def _describe(box: MailboxLifecycle) -> None:
    click.echo(f"{box.address}: {box.state}")
    if box.state == "closed":
        click.echo(f"  closed on {_day(box.closed_at)} ({box.closure_kind})")
        click.echo(f"  data deleted on {_day(box.deletion_due_at)} unless reopened before")
    if box.legal_hold:
        click.echo(f"  legal hold since {_day(box.legal_hold_at)} by {box.legal_hold_by}")


@click.group("retention")
def group() -> None:
    """Retention rules: ten-year purge, closures, inactive mailboxes, log expiry."""


@group.command("run")
@data_dir_option
@click.option("--dry-run", is_flag=True, help="Show what is due; change nothing.")
@click.option(
    "--now",
    "as_of",
    type=click.DateTime(DATE_FORMATS),
    help="Apply the rules as of this date (UTC) instead of the current time.",
)
def run(data_dir: Path, dry_run: bool, as_of: dt.datetime | None) -> None:
    """Run every retention job once, as `hygie serve` does periodically.

    `--now` in the past applies the rules as of then (less is due than today). A date in
    the future is only a simulation: it needs `--dry-run`, so that no one can destroy data
    before its time.
    """
    now = as_of.replace(tzinfo=dt.UTC) if as_of is not None else utcnow()
    if now > utcnow() and not dry_run:
        fail("--now is in the future: add --dry-run to see what would then be due", 2)

    async def work(runtime: Runtime) -> Report:
        jobs = jobs_of(runtime, cli_actor())
        plan = await jobs.plan(now)
        if dry_run:
            return plan
        with click.progressbar(length=max(plan.work, 1), label="retention", file=sys.stderr) as bar:
            tick = await run_recorded(jobs, RunLock(runtime.messages_db), now, progress=bar.update)
        if tick.report is None:
            fail("another node or process is running the retention jobs: try again later")
        return tick.report

    report = with_runtime(settings_for(data_dir), work)
    for line in report.lines():
        click.echo(line)


@group.command("status")
@data_dir_option
def status(data_dir: Path) -> None:
    """The rules in force, the last runs, and mailboxes closed or on legal hold."""
    settings = settings_for(data_dir)
    policy = policy_of(settings)
    click.echo(
        f"messages kept {policy.message_years} years; closed mailboxes deleted after "
        f"{policy.deletion_months} months (deletion request) or {policy.archive_months} "
        f"months (other closures); inactive after {policy.inactivity_months} months, closed "
        f"{policy.grace_days} days after the warning; functional logs kept "
        f"{policy.functional_log_months} months"
    )

    async def work(runtime: Runtime) -> None:
        async with runtime.messages_db.read() as session:
            runs = list(
                await session.scalars(
                    select(RetentionRun).order_by(RetentionRun.id.desc()).limit(5)
                )
            )
            closed = await session.scalar(select(func.count()).where(Mailbox.state == "closed"))
            held = list(
                await session.scalars(
                    select(Mailbox.address).where(Mailbox.legal_hold).order_by(Mailbox.address)
                )
            )
        for item in runs:
            click.echo(
                f"run {item.id} on {item.node} as of {item.as_of:%Y-%m-%d %H:%M}: "
                f"{item.outcome} {item.summary}"
            )
        if not runs:
            click.echo("no run yet")
        click.echo(f"closed mailboxes awaiting deletion: {closed or 0}")
        click.echo(f"on legal hold: {', '.join(held) if held else 'none'}")

    with_runtime(settings, work)


def _lifecycle(runtime: Runtime) -> Lifecycle:
    return Lifecycle(runtime.messages_db, policy_of(runtime.settings))


@mailbox_group.command("close")
@data_dir_option
@click.argument("address")
@click.option(
    "--reason",
    type=click.Choice(["deletion", "archive"]),
    required=True,
    help="deletion: the holder asked for it (data deleted after the deletion delay); "
    "archive: data kept for the archive period.",
)
def close(data_dir: Path, address: str, reason: str) -> None:
    """Close ADDRESS: no more mail or logins; its data is deleted at the due date."""

    async def work(runtime: Runtime) -> None:
        kind: ClosureKind = "deletion" if reason == "deletion" else "archive"
        _describe(await _lifecycle(runtime).close(address, kind, actor=cli_actor(), now=utcnow()))

    with_runtime(settings_for(data_dir), work)


@mailbox_group.command("reopen")
@data_dir_option
@click.argument("address")
def reopen(data_dir: Path, address: str) -> None:
    """Cancel the closure of ADDRESS (only before its data is deleted)."""

    async def work(runtime: Runtime) -> None:
        _describe(await _lifecycle(runtime).reopen(address, actor=cli_actor(), now=utcnow()))

    with_runtime(settings_for(data_dir), work)


@mailbox_group.command("hold")
@data_dir_option
@click.argument("address")
@click.option("--reason", default="", help="e.g. a case reference, kept in the audit trail.")
def hold(data_dir: Path, address: str, reason: str) -> None:
    """Put ADDRESS on legal hold: retention deletes none of its data until released."""

    async def work(runtime: Runtime) -> None:
        _describe(
            await _lifecycle(runtime).hold(address, actor=cli_actor(), now=utcnow(), reason=reason)
        )

    with_runtime(settings_for(data_dir), work)


@mailbox_group.command("release")
@data_dir_option
@click.argument("address")
def release(data_dir: Path, address: str) -> None:
    """Lift the legal hold on ADDRESS: what expired meanwhile goes at the next run."""

    async def work(runtime: Runtime) -> None:
        _describe(await _lifecycle(runtime).release(address, actor=cli_actor(), now=utcnow()))

    with_runtime(settings_for(data_dir), work)
