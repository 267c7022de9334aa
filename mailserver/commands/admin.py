"""`hygie admin …`: bearer tokens for the admin API, one role each."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mailserver.commands.common import data_dir_option, settings_for, with_runtime
from mailserver.commands.mailbox import cli_actor
from mailserver.service import Runtime
from storage.admin_tokens import ROLES, AdminTokenInfo, AdminTokenStore
from storage.models import utcnow


@click.group("admin")
def group() -> None:
    """The admin API (HTTPS on the [admin] listener) and who may call it."""


@group.group("token")
def token() -> None:
    """Admin API tokens: directory-admin, operator-admin or auditor."""


def _when(value: dt.datetime | None, default: str) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else default


def _state(info: AdminTokenInfo) -> str:
    if info.revoked_at is not None:
        return f"revoked {_when(info.revoked_at, '')}"
    if not info.usable(utcnow()):
        return f"expired {_when(info.expires_at, '')}"
    return "active"


@token.command("create")
@data_dir_option
@click.option("--name", required=True, help="Who or what holds it, e.g. alice or audit-bot.")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What it may do.")
@click.option(
    "--expires-days", type=click.IntRange(min=1), default=None, help="Valid this many days."
)
def token_create(data_dir: Path, name: str, role: str, expires_days: int | None) -> None:
    """Create a token; it is printed once (last line) and cannot be shown again."""
    expires_at = utcnow() + dt.timedelta(days=expires_days) if expires_days else None

    async def work(runtime: Runtime) -> None:
        store = AdminTokenStore(runtime.messages_db)
        info, secret = await store.create(name, role, expires_at, actor=cli_actor())
        expiry = _when(info.expires_at, "never")
        click.echo(f"admin token {info.name} ({info.role}, expires {expiry}); keep it secret:")
        click.echo(secret)

    with_runtime(settings_for(data_dir), work)


@token.command("list")
@data_dir_option
def token_list(data_dir: Path) -> None:
    """Every token with its role and state (never the token itself)."""

    async def work(runtime: Runtime) -> None:
        for info in await AdminTokenStore(runtime.messages_db).list():
            click.echo(
                f"{info.name}\t{info.role}\t{_state(info)}\t"
                f"expires {_when(info.expires_at, 'never')}\t"
                f"last used {_when(info.last_used_at, 'never')}"
            )

    with_runtime(settings_for(data_dir), work)


@token.command("revoke")
@data_dir_option
@click.argument("name")
def token_revoke(data_dir: Path, name: str) -> None:
    """Revoke the token NAME: it stops working at once, on every node."""

    async def work(runtime: Runtime) -> None:
        info = await AdminTokenStore(runtime.messages_db).revoke(name, actor=cli_actor())
        click.echo(f"admin token {info.name} ({info.role}) revoked")

    with_runtime(settings_for(data_dir), work)
