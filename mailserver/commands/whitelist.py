"""`hygie whitelist …`: the operator whitelist in the national ListeBlancheMSSante format."""

from __future__ import annotations

from pathlib import Path

import click

from directory.whitelist_xml import WhitelistError, parse_whitelist
from mailserver.commands.common import data_dir_option, fail, settings_for, with_runtime
from mailserver.commands.mailbox import cli_actor
from mailserver.service import Runtime


@click.group("whitelist")
def group() -> None:
    """The operator whitelist: the other operators' domains and certificate DNs."""


@group.command("import")
@data_dir_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sha256", help="Expected SHA-256 of the file, as published with it.")
def import_whitelist(data_dir: Path, file: Path, sha256: str | None) -> None:
    """Replace the national whitelist with FILE, atomically; prints what changed."""
    try:
        whitelist = parse_whitelist(file.read_bytes(), sha256=sha256)
    except WhitelistError as exc:
        fail(f"{file}: {exc}", 2)

    async def work(runtime: Runtime) -> None:
        change = await runtime.directory.replace_whitelist(
            whitelist, actor=cli_actor(), sha256=sha256
        )
        click.echo(f"{change.entries} entries for {len(whitelist.domains())} domains")
        for domain in change.added:
            click.echo(f"added   {domain}")
        for domain in change.removed:
            click.echo(f"removed {domain}")

    with_runtime(settings_for(data_dir), work)


@group.command("add")
@data_dir_option
@click.argument("domain")
@click.option("--cert-dn", required=True, help="Subject DN of the operator's certificate.")
@click.option("--description", default="")
def add(data_dir: Path, domain: str, cert_dn: str, description: str) -> None:
    """Trust DOMAIN's operator presenting a certificate with this subject DN."""

    async def work(runtime: Runtime) -> None:
        added = await runtime.directory.add_trusted_domain(
            actor=cli_actor(), domain=domain, certificate_dn=cert_dn, description=description
        )
        click.echo(f"trusted {added.domain} with {added.certificate_dn}")

    with_runtime(settings_for(data_dir), work)


@group.command("remove")
@data_dir_option
@click.argument("domain")
@click.option("--cert-dn", help="Only this certificate DN (default: every entry of DOMAIN).")
def remove(data_dir: Path, domain: str, cert_dn: str | None) -> None:
    """Stop trusting DOMAIN (or one of its certificates)."""

    async def work(runtime: Runtime) -> None:
        count = await runtime.directory.remove_trusted_domain(
            actor=cli_actor(), domain=domain, certificate_dn=cert_dn
        )
        click.echo(f"removed {count} entries for {domain}")

    with_runtime(settings_for(data_dir), work)


@group.command("list")
@data_dir_option
def list_whitelist(data_dir: Path) -> None:
    """Every trusted domain with its certificate DN, one per line."""

    async def work(runtime: Runtime) -> None:
        for entry in await runtime.directory.trusted_domains():
            click.echo(f"{entry.domain}\t{entry.certificate_dn}\t{entry.source}")

    with_runtime(settings_for(data_dir), work)
