"""The `hygie` command: set up, run and administer an operator node."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from mailserver import init as init_module
from mailserver import logs
from mailserver.commands.common import (
    MIN_PASSWORD_LENGTH,
    data_dir_option,
    fail,
    settings_for,
    with_runtime,
)
from mailserver.config import ConfigError
from mailserver.service import Runtime, Service
from storage import migrate
from storage.crypto import MasterKeyError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hygie")
def main() -> None:
    """Hygie: a secure health-messaging operator (SMTP, IMAP, webmail) in a trust space."""
    os.umask(0o077)  # keys, databases and logs are for this service's user alone


@main.command()
@data_dir_option
@click.option("--domain", required=True, help="The operator domain, e.g. mssante.example.")
def init(data_dir: Path, domain: str) -> None:
    """Create (or complete) a data directory: configuration, keys, certificates, database.

    Safe to run again: nothing that exists is overwritten.
    """
    try:
        _settings, report = init_module.initialise(data_dir, domain)
    except (ConfigError, MasterKeyError) as exc:
        fail(str(exc), 2)
    for item in report.created:
        click.echo(f"created {item}")
    for item in report.kept:
        click.echo(f"kept    {item}")
    click.echo("databases at the latest schema")


@main.command()
@data_dir_option
def serve(data_dir: Path) -> None:
    """Run every listener and background task until SIGTERM."""
    settings = settings_for(data_dir)
    log_file = settings.path(settings.logging.file) if settings.logging.file else None
    logs.configure(settings.logging.level, log_file)

    async def run() -> None:
        await migrate.check_current("messages", settings.database_url)
        await migrate.check_current("keystore", settings.keystore_url)
        await Service(settings).run()

    try:
        asyncio.run(run())
    except (migrate.SchemaError, MasterKeyError, OSError) as exc:
        fail(str(exc))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@data_dir_option
def db_upgrade(data_dir: Path) -> None:
    """Migrate the message store and the key store to this version's schema."""
    settings = settings_for(data_dir)
    init_module.upgrade_databases(settings)
    for target in ("messages", "keystore"):
        click.echo(f"{target}: at revision {migrate.head_revision(target)}")

    async def move_keys(runtime: Runtime) -> None:
        moved = await runtime.store.move_data_keys()
        if moved:
            click.echo(f"{moved} data keys moved from the message store to the key store")

    with_runtime(settings, move_keys)


@main.group()
def keys() -> None:
    """Master key and mailbox keys."""


@keys.command("rotate-master")
@data_dir_option
def rotate_master(data_dir: Path) -> None:
    """Rewrap every mailbox key under a new master key (messages are not re-encrypted)."""
    settings = settings_for(data_dir)

    async def rotate(runtime: Runtime) -> None:
        report = await runtime.keystore.rotate_master()
        click.echo(f"new master key {report.new_kek_id}: {report.rewrapped} mailbox keys rewrapped")
        if report.retired:
            click.echo(f"retired master keys: {', '.join(report.retired)}")
        else:
            click.echo("some mailbox keys still use the old master key: run this again")

    with_runtime(settings, rotate)


@keys.command("status")
@data_dir_option
def keys_status(data_dir: Path) -> None:
    """Which master key is active and how many mailbox keys each one wraps."""
    settings = settings_for(data_dir)

    async def status(runtime: Runtime) -> None:
        ring = runtime.keystore.master.ring()
        click.echo(f"active master key {ring.active_id}")
        for kek_id, count in sorted((await runtime.keystore.count_by_kek()).items()):
            click.echo(f"{kek_id}: {count} mailbox keys")

    with_runtime(settings, status)


@main.group()
def config() -> None:
    """Configuration."""


@config.command("check")
@data_dir_option
def config_check(data_dir: Path) -> None:
    """Validate the configuration (file and HYGIE_* overrides) and print the result."""
    settings = settings_for(data_dir)
    for section, values in settings.model_dump().items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            if key in ("url", "keystore_url") and value:
                value = make_url(value).render_as_string(hide_password=True)
            click.echo(f"{key} = {value!r}")


@main.group()
def auth() -> None:
    """Passwords and per-device application passwords."""


async def _mailbox_id(runtime: Runtime, address: str) -> int:
    mailbox = await runtime.store.mailbox_by_address(address)
    if mailbox is None:
        fail(f"no mailbox {address}")
    return mailbox.id


@auth.command("set-password")
@data_dir_option
@click.argument("address")
@click.option("--password-stdin", is_flag=True, required=True, help="Read it from stdin.")
def set_password(data_dir: Path, address: str, password_stdin: bool) -> None:
    """Set ADDRESS's password (argon2id); the previous one stops working."""
    secret = sys.stdin.readline().rstrip("\r\n")
    if len(secret) < MIN_PASSWORD_LENGTH:
        fail(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", 2)

    async def work(runtime: Runtime) -> None:
        await runtime.authenticator.set_password(await _mailbox_id(runtime, address), secret)
        click.echo(f"password set for {address}")

    with_runtime(settings_for(data_dir), work)


@auth.command("app-password-add")
@data_dir_option
@click.argument("address")
@click.option("--device", required=True, help="Which device or client this password is for.")
def app_password_add(data_dir: Path, address: str, device: str) -> None:
    """Create an application password for one device; it is shown once."""

    async def work(runtime: Runtime) -> None:
        issued = await runtime.authenticator.add_app_password(
            await _mailbox_id(runtime, address), device
        )
        click.echo(f"application password {issued.credential.id} for {address} on {device}:")
        click.echo(issued.secret)

    with_runtime(settings_for(data_dir), work)


@auth.command("list")
@data_dir_option
@click.argument("address")
def auth_list(data_dir: Path, address: str) -> None:
    """ADDRESS's credentials (never their secrets)."""

    async def work(runtime: Runtime) -> None:
        credentials = runtime.authenticator.credentials
        for item in await credentials.list_credentials(await _mailbox_id(runtime, address)):
            state = "active" if item.active else f"revoked {item.revoked_at:%Y-%m-%d %H:%M}"
            used = f"{item.last_used_at:%Y-%m-%d %H:%M}" if item.last_used_at else "never"
            click.echo(f"{item.id}\t{item.kind}\t{item.label or '-'}\t{state}\tlast used {used}")

    with_runtime(settings_for(data_dir), work)


@auth.command("revoke")
@data_dir_option
@click.argument("credential_id", type=int)
def auth_revoke(data_dir: Path, credential_id: int) -> None:
    """Revoke one credential by its id (see `hygie auth list`)."""

    async def work(runtime: Runtime) -> None:
        revoked = await runtime.authenticator.revoke(credential_id)
        click.echo(f"credential {revoked.id} ({revoked.kind} {revoked.label}) revoked")

    with_runtime(settings_for(data_dir), work)


def _register_command_groups() -> None:
    """Command groups that live in their own modules (mailserver/commands/)."""
    from mailserver.commands import (
        admin,
        audit,
        directory_commands,
        dkim,
        mailbox,
        queue,
        retention,
        whitelist,
    )

    for group in (
        mailbox.group,
        whitelist.group,
        directory_commands.group,
        audit.group,
        admin.group,
        queue.group,
        dkim.group,
        retention.group,
    ):
        main.add_command(group)


_register_command_groups()
