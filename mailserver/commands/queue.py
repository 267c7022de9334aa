"""`hygie queue …`: what waits for other operators, and what became of it."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import click

from mailserver.commands.common import data_dir_option, fail, settings_for, with_runtime
from mailserver.service import Runtime
from storage.outbound import OutboundQueue

STATES = ("queued", "delivered", "failed")


def _queue(runtime: Runtime) -> OutboundQueue:
    return OutboundQueue(runtime.messages_db, runtime.keystore)


def _message_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not a message id (see `hygie queue list`)", 2)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("queue")
def group() -> None:
    """The outbound queue: mail for other operators, retried until it expires."""


@group.command("list")
@data_dir_option
@click.option("--state", type=click.Choice(STATES), help="Only recipients in this state.")
def list_queue(data_dir: Path, state: str | None) -> None:
    """One line per recipient: message id, sender, recipient, state, attempts, next
    attempt, last reply (tab-separated). Never the content."""

    async def work(runtime: Runtime) -> None:
        entries = await _queue(runtime).entries(state=state)
        if not entries:
            click.echo("the queue is empty", err=True)
            return
        click.echo("message\tsender\trecipient\tstate\tattempts\tnext attempt\tlast reply")
        for entry in entries:
            reply = " ".join(entry.last_reply.split()) or "-"
            click.echo(
                f"{entry.message_id}\t{entry.mail_from}\t{entry.recipient}\t{entry.state}\t"
                f"{entry.attempts}\t{_when(entry.next_attempt_at)}\t{reply}"
            )

    with_runtime(settings_for(data_dir), work)


@group.command("retry")
@data_dir_option
@click.argument("message_id", required=False)
def retry(data_dir: Path, message_id: str | None) -> None:
    """Make queued recipients due now: of MESSAGE_ID, or all of them."""
    wanted = _message_id(message_id) if message_id is not None else None

    async def work(runtime: Runtime) -> None:
        count = await _queue(runtime).retry_now(wanted)
        if wanted is not None and count == 0:
            fail(f"no queued recipient for message {wanted}")
        click.echo(f"{count} recipients due now")

    with_runtime(settings_for(data_dir), work)


@group.command("delete")
@data_dir_option
@click.argument("message_id")
def delete(data_dir: Path, message_id: str) -> None:
    """Drop MESSAGE_ID from the queue without sending it, and without a delivery report."""
    wanted = _message_id(message_id)

    async def work(runtime: Runtime) -> None:
        await _queue(runtime).delete(wanted)
        click.echo(f"deleted {wanted}")

    with_runtime(settings_for(data_dir), work)
