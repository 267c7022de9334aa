"""`hygie directory …`: the national directory extraction and directory search."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from directory.extraction import ExtractionError
from directory.national_import import ImportRefused, ImportReport, import_extraction
from mailserver.commands.common import data_dir_option, fail, settings_for, with_runtime
from mailserver.commands.mailbox import cli_actor
from mailserver.service import Runtime

KINDS = ("PER", "ORG", "APP", "CAB", "PAT")


@click.group("directory")
def group() -> None:
    """The national directory: import the extraction, search entries."""


@group.command("import")
@data_dir_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--skip-bad-lines",
    is_flag=True,
    help="Import the good lines even if some are bad (by default a bad line refuses the file).",
)
def import_command(data_dir: Path, file: Path, skip_bad_lines: bool) -> None:
    """Replace the other operators' entries with the national extraction FILE.

    One transaction: every line is applied, or none. Addresses in this operator's
    domains are skipped. Exit status 1, with nothing changed, when FILE has bad lines
    and --skip-bad-lines is not given.
    """
    settings = settings_for(data_dir)
    size = file.stat().st_size

    async def work(runtime: Runtime) -> ImportReport:
        directory = runtime.directory
        with (
            file.open("rb") as stream,
            click.progressbar(length=size, label="importing", file=sys.stderr) as bar,
        ):
            shown = 0

            def progress(done: int) -> None:
                nonlocal shown
                bar.update(done - shown)
                shown = done

            try:
                return await import_extraction(
                    runtime.messages_db,
                    stream,
                    actor=cli_actor(),
                    local_domains=(directory.domain, directory.patient_domain),
                    skip_bad_lines=skip_bad_lines,
                    progress=progress,
                    source=file.name,
                )
            except ImportRefused as refused:
                return refused.report

    try:
        report = with_runtime(settings, work)
    except ExtractionError as exc:
        fail(f"{file}: {exc}", 2)
    if report.applied:
        click.echo(report.summary())
    for bad in report.bad_lines:
        click.echo(f"line {bad.line_number}: {bad.reason}")
    count = len(report.bad_lines)
    if not report.applied:
        fail(
            f"{file}: {count} bad line{'s' if count != 1 else ''}; nothing was imported "
            "(fix them, or run again with --skip-bad-lines)"
        )
    if count:
        click.echo(f"{count} bad line{'s' if count != 1 else ''} skipped", err=True)


@group.command("search")
@data_dir_option
@click.argument("text", required=False, default="")
@click.option("--kind", type=click.Choice(KINDS, case_sensitive=False), help="Mailbox type.")
@click.option(
    "--local/--remote",
    "local",
    default=None,
    help="Only this operator's mailboxes, or only the other operators' (default: both).",
)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
def search_command(
    data_dir: Path, text: str, kind: str | None, local: bool | None, limit: int
) -> None:
    """Entries whose address, name, structure or national id contain TEXT.

    One line per entry: address, type, name, local or remote (and "red-list" for an
    entry never published).
    """

    async def work(runtime: Runtime) -> None:
        entries = await runtime.directory.search(
            text, kind=kind.upper() if kind else None, local=local, limit=limit
        )
        for entry in entries:
            name = entry.display_name or entry.organisation or ""
            where = "local" if entry.is_local else "remote"
            line = f"{entry.address}\t{entry.kind}\t{name}\t{where}"
            click.echo(line + ("\tred-list" if entry.red_list else ""))

    with_runtime(settings_for(data_dir), work)
