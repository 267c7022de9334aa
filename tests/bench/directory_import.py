"""Importing the national directory extraction: lines per second and peak memory.

Generates valid extraction files on the fly (written line by line to a temporary
file, never held in memory): 100,000 lines, then 500,000. Each is imported into a
fresh database on SQLite and, when HYGIE_TEST_DATABASE_URL is set, on PostgreSQL, then
imported again (every line unchanged), twice: the second time under tracemalloc, for
the Python heap peak (tracemalloc slows this code down about six times, so the other
imports are timed without it). Prints lines per second, that heap peak and the
process's peak resident set (ru_maxrss, for the whole run so far): neither peak should
grow with the size of the file.
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from directory.extraction import HEADER
from directory.national_import import ImportReport, import_extraction
from storage.db import Database, open_database
from tests.databases import Provisioner, backends

SIZES = (100_000, 500_000)
BALS_PER_STRUCTURE = 100
FAMILY_NAMES = ("MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS")
GIVEN_NAMES = ("Marie", "Jean", "Élodie", "Noël", "François", "Chloé", "Amélie", "Paul")
PROFESSIONS = (("10", "Médecin"), ("21", "Pharmacien"), ("50", "Sage-Femme"), ("60", "Infirmier"))


def extraction_lines(count: int) -> Iterator[str]:
    """The header and ``count`` valid lines: 4 PER for 1 ORG; every 20th professional
    has a second mailbox; 100 mailboxes per structure."""
    yield "|".join(HEADER)
    rpps = 10_000_000_000
    for n in range(count):
        structure = f"{170_000_000 + n // BALS_PER_STRUCTURE}"
        common = f"1|{structure}|Service {n % 7}"  # Type identifiant structure … Service
        place = (
            f"O|CENTRE HOSPITALIER {structure}|||Bâtiment B|{n % 200}||R|DE LA SANTE||"
            "75014 PARIS|75014|75|FRANCE"
        )
        if n % 5 == 0:
            yield f"ORG|service{n}@chu-{structure}.test||||{common}||||C|Civil|||||{place}"
            continue
        if n % 20 != 1:
            rpps += 1  # else: the previous professional's second mailbox
        family = FAMILY_NAMES[n % len(FAMILY_NAMES)]
        given = GIVEN_NAMES[(n // 8) % len(GIVEN_NAMES)]
        code, label = PROFESSIONS[n % len(PROFESSIONS)]
        yield (
            f"PER|pro{n}@chu-{structure}.test|8|{rpps}|8{rpps}|{common}|DR|{family}|{given}|"
            f"C|Civil|{code}|{label}|SM54|Médecine générale|{place}"
        )


def write_file(path: Path, count: int) -> int:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in extraction_lines(count):
            out.write(line + "\n")
    return path.stat().st_size


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def timed_import(
    database: Database, path: Path, *, traced: bool
) -> tuple[ImportReport, float, float | None]:
    """The report, the seconds it took and, if traced, the tracemalloc peak in MiB."""
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        with path.open("rb") as stream:
            report = await import_extraction(
                database, stream, actor="bench", local_domains=("hygie.test",)
            )
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else None
    finally:
        tracemalloc.stop()
    return report, elapsed, peak


def show(
    backend: str, label: str, report: ImportReport, elapsed: float, peak: float | None
) -> None:
    rate = f"{report.records / elapsed:,.0f} lines/s"
    memory = f"max RSS so far {max_rss_mib():.0f} MiB"
    if peak is not None:
        rate += " under tracemalloc"
        memory = f"heap peak {peak:.1f} MiB, {memory}"
    print(
        f"{backend}: {label} of {report.records:,} lines: {elapsed:.1f} s, {rate}; {memory} "
        f"({report.summary()})",
        flush=True,
    )


async def run(backend: str, workdir: Path, files: dict[int, Path]) -> None:
    provisioner = Provisioner(workdir / backend)
    provisioner.workdir.mkdir()
    try:
        for path in files.values():
            pair = await provisioner.fresh(backend)
            database = open_database(pair.messages_url)
            try:
                show(backend, "first import", *await timed_import(database, path, traced=False))
                show(backend, "re-import", *await timed_import(database, path, traced=False))
                show(backend, "re-import", *await timed_import(database, path, traced=True))
            finally:
                await database.dispose()
    finally:
        await provisioner.cleanup()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as tmp:
        workdir = Path(tmp)
        files: dict[int, Path] = {}
        for size in SIZES:
            path = workdir / f"Extraction_Correspondance_MSSante_{size}.txt"
            start = time.perf_counter()
            length = write_file(path, size)
            print(
                f"generated {size:,} lines ({length / 2**20:.0f} MiB) "
                f"in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            files[size] = path
        for backend in backends():
            asyncio.run(run(backend, workdir, files))
    if not os.environ.get("HYGIE_TEST_DATABASE_URL"):
        print("(set HYGIE_TEST_DATABASE_URL to measure PostgreSQL too)")
