"""`hygie dkim …`: the DKIM record other operators need to verify our signatures."""

from __future__ import annotations

from pathlib import Path

import click

from mailserver.commands.common import data_dir_option, fail, settings_for
from mailserver.smtp.dkim import public_record, record_name

TXT_STRING = 255  # RFC 1035 §3.3: a character-string holds at most 255 octets


def txt_strings(value: str, size: int = TXT_STRING) -> str:
    """`value` as quoted DNS character-strings of at most `size` characters each."""
    return " ".join(f'"{value[i : i + size]}"' for i in range(0, len(value), size))


@click.group("dkim")
def group() -> None:
    """Our DKIM signing key (RFC 6376)."""


@group.command("show")
@data_dir_option
@click.option(
    "--trusted-keys-line",
    is_flag=True,
    help="Print the line another operator adds to its dkim/trusted-keys.txt instead.",
)
def show(data_dir: Path, trusted_keys_line: bool) -> None:
    """Print the DNS TXT record that publishes our public DKIM key."""
    settings = settings_for(data_dir)
    key_path = settings.path(settings.dkim.private_key)
    try:
        record = public_record(key_path.read_bytes())
    except OSError as exc:
        fail(f"cannot read the DKIM key {key_path}: {exc.strerror or exc}")
    except ValueError as exc:
        fail(f"{key_path}: {exc}")
    name = record_name(settings.dkim.selector, settings.server.domain)
    if trusted_keys_line:
        click.echo(f"{name} {record}")
    else:
        click.echo(f"{name} IN TXT {txt_strings(record)}")
