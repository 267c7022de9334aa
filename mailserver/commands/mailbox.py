"""`hygie mailbox …`: issue mailboxes for patients, professionals and structures."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from pathlib import Path

import click

from directory.ins import NIA_OID, NIR_OID, InvalidINS
from mailserver.commands.common import (
    MIN_PASSWORD_LENGTH,
    data_dir_option,
    fail,
    settings_for,
    with_runtime,
)
from mailserver.service import Runtime
from storage.messages import MailboxInfo


def cli_actor() -> str:
    """Who acts, for the audit trail: the operating-system user running the command."""
    return f"cli:{getpass.getuser()}"


password_option = click.option(
    "--password-stdin", is_flag=True, help="Also set a password, read from standard input."
)


def read_password(wanted: bool) -> str | None:
    if not wanted:
        return None
    secret = sys.stdin.readline().rstrip("\r\n")
    if len(secret) < MIN_PASSWORD_LENGTH:
        fail(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", 2)
    return secret


async def _finish(runtime: Runtime, mailbox: MailboxInfo, password: str | None) -> None:
    if password is not None:
        await runtime.authenticator.set_password(mailbox.id, password)
    click.echo(mailbox.address)


@click.group("mailbox")
def group() -> None:
    """Create mailboxes and manage their members and legal representatives."""


@group.command("create-patient")
@data_dir_option
@click.option("--ins", required=True, help="Matricule INS: NIR or NIA, 15 characters.")
@click.option("--nia", is_flag=True, help="The matricule is a NIA, not a NIR.")
@click.option("--family", required=True, help="Birth family name.")
@click.option("--given", required=True, help="First names.")
@click.option("--birthdate", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--sex", required=True, type=click.Choice(["M", "F"]))
@click.option("--birth-place", help="INSEE code of the birth place (5 characters).")
@password_option
def create_patient(
    data_dir: Path,
    ins: str,
    nia: bool,
    family: str,
    given: str,
    birthdate: dt.datetime,
    sex: str,
    birth_place: str | None,
    password_stdin: bool,
) -> None:
    """Issue a patient's mailbox, <matricule INS>@patient.<domain>; prints the address."""
    password = read_password(password_stdin)

    async def work(runtime: Runtime) -> None:
        try:
            mailbox, _ins = await runtime.directory.create_patient_mailbox(
                actor=cli_actor(),
                ins=ins,
                oid=NIA_OID if nia else NIR_OID,
                family_name=family,
                given_names=given,
                birth_date=birthdate.date(),
                sex=sex,
                birth_place_code=birth_place,
            )
        except InvalidINS as exc:
            fail(f"INS refused ({exc.reason}): {exc.message}", 2)
        await _finish(runtime, mailbox, password)

    with_runtime(settings_for(data_dir), work)


@group.command("create-professional")
@data_dir_option
@click.option("--address", required=True)
@click.option("--rpps", help="RPPS number (11 digits).")
@click.option("--adeli", help="ADELI number (9 characters), when the professional has no RPPS.")
@click.option("--family", required=True, help="Family name (nom d'exercice).")
@click.option("--given", required=True, help="First name (prénom d'exercice).")
@click.option("--profession", required=True, help="Profession code, e.g. 10 (médecin).")
@click.option("--profession-label")
@click.option("--specialty", help="Savoir-faire code.")
@click.option("--civility", help="Civilité d'exercice, e.g. DR.")
@click.option("--red-list", is_flag=True, help="Never publish this mailbox (liste rouge).")
@password_option
def create_professional(
    data_dir: Path,
    address: str,
    rpps: str | None,
    adeli: str | None,
    family: str,
    given: str,
    profession: str,
    profession_label: str | None,
    specialty: str | None,
    civility: str | None,
    red_list: bool,
    password_stdin: bool,
) -> None:
    """Create a professional's personal (PER) mailbox; prints the address."""
    if (rpps is None) == (adeli is None):
        fail("give exactly one of --rpps and --adeli", 2)
    password = read_password(password_stdin)

    async def work(runtime: Runtime) -> None:
        mailbox = await runtime.directory.create_professional_mailbox(
            actor=cli_actor(),
            address=address,
            id_type="8" if rpps else "0",
            identifier=rpps or adeli or "",
            family_name=family,
            given_name=given,
            profession_code=profession,
            profession_label=profession_label,
            specialty_code=specialty,
            civility=civility,
            red_list=red_list,
        )
        await _finish(runtime, mailbox, password)

    with_runtime(settings_for(data_dir), work)


def _structure_command(kind: str, summary: str) -> click.Command:
    @data_dir_option
    @click.option("--address", required=True)
    @click.option("--structure-id", required=True, help="e.g. the FINESS number.")
    @click.option(
        "--structure-type",
        default="1",
        show_default=True,
        help="Structure id type as the national directory writes it (1: FINESS).",
    )
    @click.option("--name", required=True, help="Name of the structure.")
    @click.option("--service", help="The service (service de rattachement).")
    @click.option("--red-list", is_flag=True, help="Never publish this mailbox (liste rouge).")
    @password_option
    def command(
        data_dir: Path,
        address: str,
        structure_id: str,
        structure_type: str,
        name: str,
        service: str | None,
        red_list: bool,
        password_stdin: bool,
    ) -> None:
        password = read_password(password_stdin)

        async def work(runtime: Runtime) -> None:
            mailbox = await runtime.directory.create_structure_mailbox(
                actor=cli_actor(),
                address=address,
                kind=kind,
                structure_id_type=structure_type,
                structure_id=structure_id,
                name=name,
                service=service,
                red_list=red_list,
            )
            await _finish(runtime, mailbox, password)

        with_runtime(settings_for(data_dir), work)

    command.__doc__ = f"{summary}; prints the address."
    return click.command(f"create-{kind.lower()}")(command)


group.add_command(_structure_command("ORG", "Create a service's shared (ORG) mailbox"))
group.add_command(_structure_command("APP", "Create a software (APP) mailbox"))
group.add_command(_structure_command("CAB", "Create a practice's (CAB) mailbox"))


@group.command("add-member")
@data_dir_option
@click.argument("shared")
@click.argument("member")
def add_member(data_dir: Path, shared: str, member: str) -> None:
    """Let the professional MEMBER use the ORG or CAB mailbox SHARED."""

    async def work(runtime: Runtime) -> None:
        await runtime.directory.add_member(actor=cli_actor(), shared=shared, member=member)
        click.echo(f"{member} is a member of {shared}")

    with_runtime(settings_for(data_dir), work)


@group.command("remove-member")
@data_dir_option
@click.argument("shared")
@click.argument("member")
def remove_member(data_dir: Path, shared: str, member: str) -> None:
    """Stop MEMBER from using SHARED."""

    async def work(runtime: Runtime) -> None:
        await runtime.directory.remove_member(actor=cli_actor(), shared=shared, member=member)
        click.echo(f"{member} is no longer a member of {shared}")

    with_runtime(settings_for(data_dir), work)


@group.command("members")
@data_dir_option
@click.argument("shared")
def members(data_dir: Path, shared: str) -> None:
    """List the members of an ORG or CAB mailbox."""

    async def work(runtime: Runtime) -> None:
        for address in await runtime.directory.members(shared):
            click.echo(address)

    with_runtime(settings_for(data_dir), work)


@group.command("add-representative")
@data_dir_option
@click.argument("patient")
@click.argument("representative")
def add_representative(data_dir: Path, patient: str, representative: str) -> None:
    """Let REPRESENTATIVE (a patient mailbox) see the mailbox of the minor PATIENT."""

    async def work(runtime: Runtime) -> None:
        await runtime.directory.add_legal_representative(
            actor=cli_actor(), patient=patient, representative=representative
        )
        click.echo(f"{representative} represents {patient}")

    with_runtime(settings_for(data_dir), work)


@group.command("show")
@data_dir_option
@click.argument("address")
def show(data_dir: Path, address: str) -> None:
    """What the directory knows of ADDRESS (never any message)."""

    async def work(runtime: Runtime) -> None:
        entry = await runtime.directory.lookup(address)
        if entry is None:
            fail(f"{address} is not in the directory")
        click.echo(f"address: {entry.address}")
        click.echo(f"type: {entry.kind}")
        click.echo(f"name: {entry.display_name}")
        click.echo(f"local: {'yes' if entry.is_local else 'no'}")
        if entry.mailbox_state:
            click.echo(f"state: {entry.mailbox_state}")
        if entry.professional_national_id:
            click.echo(f"national id: {entry.professional_national_id}")
        if entry.organisation:
            click.echo(f"organisation: {entry.organisation}")
        if entry.service:
            click.echo(f"service: {entry.service}")
        click.echo(f"red list: {'yes' if entry.red_list else 'no'}")

    with_runtime(settings_for(data_dir), work)
