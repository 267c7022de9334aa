"""Importing the national extraction: counts, idempotence, removals, bad lines, local
addresses, atomicity and the audit trail, on every configured backend."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from directory import national_import
from directory.extraction import ExtractionError
from directory.national_import import ImportRefused, ImportReport, import_extraction
from directory.trust import Directory
from storage import audit
from storage.models import (
    AuditRecord,
    DirectoryEntry,
    DirectoryImportRow,
    Organisation,
    Professional,
)

FIXTURE = (
    Path(__file__).parent.parent / "fixtures" / "Extraction_Correspondance_MSSante_202611230400.txt"
)
LOCAL_DOMAINS = ("hygie.test", "patient.hygie.test")
ACTOR = "test:importer"


def fixture_lines() -> list[str]:
    """The fixture's lines (header first), without line ends."""
    return FIXTURE.read_text(encoding="utf-8").splitlines()


def encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


def with_column(line: str, index: int, value: str) -> str:
    columns = line.split("|")
    columns[index] = value
    return "|".join(columns)


async def run_import(directory: Directory, lines: list[str], **options: Any) -> ImportReport:
    return await import_extraction(
        directory.database,
        io.BytesIO(encode(lines)),
        actor=ACTOR,
        local_domains=LOCAL_DOMAINS,
        **options,
    )


async def snapshot(directory: Directory) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the import may touch, to compare before and after."""
    tables: dict[str, Any] = {
        "entries": DirectoryEntry,
        "professionals": Professional,
        "organisations": Organisation,
        "staging": DirectoryImportRow,
        "audit": AuditRecord,
    }
    result: dict[str, list[tuple[Any, ...]]] = {}
    async with directory.database.read() as session:
        for name, model in tables.items():
            columns = list(model.__table__.columns)
            rows = await session.execute(select(*columns).order_by(*columns[:2]))
            result[name] = [tuple(row) for row in rows]
    return result


async def count(directory: Directory, model: Any, *conditions: Any) -> int:
    async with directory.database.read() as session:
        value = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    return int(value or 0)


async def test_import_of_the_fixture(directory: Directory) -> None:
    report = await run_import(directory, fixture_lines(), source=FIXTURE.name)

    assert report.applied
    assert (report.added, report.updated, report.unchanged, report.removed) == (300, 0, 0, 0)
    assert report.skipped_local == 0 and report.bad_lines == [] and report.records == 300
    assert report.professionals_added == 240 and report.organisations_added == 300
    assert report.summary() == ("added 300, updated 0, unchanged 0, removed 0, skipped (local) 0")
    assert await count(directory, DirectoryEntry, DirectoryEntry.kind == "PER") == 240
    assert await count(directory, DirectoryEntry, DirectoryEntry.kind == "ORG") == 60
    assert await count(directory, DirectoryEntry, DirectoryEntry.source != "national") == 0
    assert await count(directory, DirectoryEntry, DirectoryEntry.is_local.is_(True)) == 0
    assert await count(directory, DirectoryEntry, DirectoryEntry.red_list.is_(True)) == 0
    assert await count(directory, Professional, Professional.source == "national") == 240
    assert await count(directory, Organisation, Organisation.source == "national") == 300
    assert await count(directory, DirectoryImportRow) == 0

    entry = await directory.lookup("Elodie.Thomas.1@chu-exemple.test")
    assert entry is not None
    assert (entry.kind, entry.is_local, entry.source, entry.red_list) == (
        "PER",
        False,
        "national",
        False,
    )
    assert entry.display_name == "Élodie THOMAS"
    assert entry.professional_national_id == "810730699660"
    assert entry.organisation == "CENTRE HOSPITALIER TEST"
    assert entry.service == "Cardiologie"
    service = await directory.lookup("service0@chu-exemple.test")
    assert service is not None and service.kind == "ORG"
    assert service.display_name == "CENTRE HOSPITALIER TEST – Cardiologie"
    assert service.professional_national_id is None

    async with directory.database.read() as session:
        professional = await session.scalar(
            select(Professional).where(Professional.national_id == "810759233275")
        )
        organisation = await session.scalar(
            select(Organisation).where(
                Organisation.structure_id_type == "1", Organisation.structure_id == "170643907"
            )
        )
    assert professional is not None and organisation is not None
    assert (professional.id_type, professional.family_name, professional.given_name) == (
        "8",
        "N'DIAYE",
        "Élodie",
    )
    assert (professional.civility, professional.profession_code) == ("DR", "10")
    assert (professional.specialty_code, professional.specialty_label) == (
        "SM54",
        "Médecine générale",
    )
    assert organisation.address_lines == "131 R DE LA SANTE"
    assert (organisation.postal_code, organisation.locality, organisation.department) == (
        "75014",
        "PARIS",
        "75",
    )
    # Searchable like any other entry.
    found = await directory.search("thomas", kind="PER", local=False)
    assert "elodie.thomas.1@chu-exemple.test" in [e.address for e in found]


async def test_reimport_is_idempotent(directory: Directory) -> None:
    await run_import(directory, fixture_lines())
    before = await snapshot(directory)
    report = await run_import(directory, fixture_lines())
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 300, 0)
    assert (report.professionals_added, report.professionals_updated) == (0, 0)
    assert (report.organisations_added, report.organisations_updated) == (0, 0)
    after = await snapshot(directory)
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }
    assert len(after["audit"]) == len(before["audit"]) + 1


async def test_changed_lines_are_updated(directory: Directory) -> None:
    lines = fixture_lines()
    await run_import(directory, lines)
    assert lines[2].startswith("PER|elodie.thomas.1@")
    lines[2] = with_column(lines[2], 9, "THOMAS-MARTIN")  # Nom d'exercice
    assert lines[3].startswith("PER|elodie.ndiaye.2@")
    lines[3] = with_column(lines[3], 14, "Médecin généraliste")  # only the professional
    assert lines[1].startswith("ORG|service0@")
    lines[1] = with_column(lines[1], 7, "Cardiologie pédiatrique")  # the entry's service
    report = await run_import(directory, lines)

    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 3, 297, 0)
    assert report.professionals_updated == 2
    entry = await directory.lookup("elodie.thomas.1@chu-exemple.test")
    assert entry is not None and entry.display_name == "Élodie THOMAS-MARTIN"
    service = await directory.lookup("service0@chu-exemple.test")
    assert service is not None and service.service == "Cardiologie pédiatrique"
    async with directory.database.read() as session:
        label = await session.scalar(
            select(Professional.profession_label).where(Professional.national_id == "810759233275")
        )
    assert label == "Médecin généraliste"

    again = await run_import(directory, lines)
    assert (again.updated, again.unchanged) == (0, 300)


async def test_line_missing_from_the_file_is_removed(directory: Directory) -> None:
    lines = fixture_lines()
    await run_import(directory, lines)
    removed = lines.pop(2)
    assert removed.startswith("PER|elodie.thomas.1@")
    report = await run_import(directory, lines)

    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 299, 1)
    assert report.professionals_removed == 1 and report.organisations_removed == 1
    assert await directory.lookup("elodie.thomas.1@chu-exemple.test") is None
    assert await count(directory, Professional, Professional.national_id == "810730699660") == 0
    assert await count(directory, DirectoryEntry) == 299
    assert await count(directory, DirectoryImportRow) == 0

    back = await run_import(directory, fixture_lines())
    assert (back.added, back.unchanged, back.removed) == (1, 299, 0)


async def test_the_first_line_describing_a_professional_wins(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines that disagree about one professional: the first wins, in any batch, and a
    second import of the same file changes nothing."""
    monkeypatch.setattr(national_import, "BATCH_SIZE", 50)
    lines = fixture_lines()
    person = lines[2]  # line 3, first batch
    second = with_column(person, 1, "elodie.thomas@cabinet-exemple.test")
    lines.insert(100, with_column(second, 9, "AUTRE-NOM"))  # line 101, a later batch
    lines.insert(5, with_column(with_column(person, 1, "et@ailleurs.test"), 14, "Autre"))

    first = await run_import(directory, lines)
    assert (first.added, first.professionals_added) == (302, 240)
    again = await run_import(directory, lines)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 302)
    async with directory.database.read() as session:
        professional = await session.scalar(
            select(Professional).where(Professional.national_id == "810730699660")
        )
    assert professional is not None
    assert (professional.family_name, professional.profession_label) == ("THOMAS", "Sage-Femme")
    other = await directory.lookup("elodie.thomas@cabinet-exemple.test")
    assert other is not None and other.professional_national_id == "810730699660"
    assert other.display_name == "Élodie AUTRE-NOM"  # the entry's own name is its line's


def file_with_bad_lines() -> tuple[list[str], list[int]]:
    """The fixture with bad lines, and their line numbers (the header is line 1)."""
    lines = fixture_lines()
    lines[4] = lines[4] + "|extra"  # line 5: 32 columns
    lines[9] = with_column(lines[9], 1, "not an address")  # line 10
    per = next(i for i in range(20, 40) if lines[i].startswith("PER|"))
    lines[per] = with_column(lines[per], 4, "899999999999")  # RPPS / national id mismatch
    lines[60] = with_column(lines[60], 18, "X" * 600)  # line 61: Raison Sociale too long
    lines.insert(150, lines[120])  # line 151: the address of line 121 again
    lines.append(lines[2])  # last line: the address of line 3 again (another batch)
    return lines, [5, 10, per + 1, 61, 151, len(lines)]


async def test_bad_lines_refuse_the_file_and_change_nothing(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(national_import, "BATCH_SIZE", 50)
    await run_import(directory, fixture_lines()[:200])
    before = await snapshot(directory)
    lines, bad = file_with_bad_lines()

    with pytest.raises(ImportRefused) as refused:
        await run_import(directory, lines)

    report = refused.value.report
    assert not report.applied
    assert [b.line_number for b in report.bad_lines] == bad
    reasons = [b.reason for b in report.bad_lines]
    assert "32 columns instead of 31" in reasons[0]
    assert "not a valid mailbox address" in reasons[1]
    assert "should be '8" in reasons[2]
    assert reasons[3] == (
        "column 19 (Raison Sociale structure BAL) has 600 characters; at most 512 are allowed"
    )
    assert "is already on line 121" in reasons[4]
    assert "is already on an earlier line" in reasons[5]
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 0, 0)
    assert "6 bad lines" in str(refused.value)
    assert await snapshot(directory) == before


async def test_skip_bad_lines_applies_the_good_ones(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(national_import, "BATCH_SIZE", 50)
    lines, bad = file_with_bad_lines()

    report = await run_import(directory, lines, skip_bad_lines=True)

    assert report.applied
    assert [b.line_number for b in report.bad_lines] == bad
    # 300 lines, four of them bad; the two repeated addresses keep their first line.
    assert (report.added, report.updated, report.unchanged, report.removed) == (296, 0, 0, 0)
    assert await count(directory, DirectoryEntry) == 296
    assert await count(directory, DirectoryImportRow) == 0
    thomas = await directory.lookup("elodie.thomas.1@chu-exemple.test")
    assert thomas is not None and thomas.display_name == "Élodie THOMAS"


async def test_header_that_is_not_the_national_one(directory: Directory) -> None:
    lines = fixture_lines()
    lines[0] = lines[0].replace("Adresse BAL", "Adresse")
    with pytest.raises(ExtractionError, match="header column 2"):
        await run_import(directory, lines)
    assert await count(directory, DirectoryEntry) == 0
    assert await count(directory, AuditRecord) == 0


async def test_local_addresses_are_skipped_and_kept(directory: Directory) -> None:
    await directory.create_professional_mailbox(
        actor="admin",
        address="dr.martin@hygie.test",
        id_type="8",
        identifier="10000000001",
        family_name="MARTIN",
        given_name="Paul",
        profession_code="10",
    )
    local_before = await directory.lookup("dr.martin@hygie.test")
    lines = fixture_lines()
    theirs = with_column(lines[2], 1, "dr.martin@hygie.test")
    theirs = with_column(with_column(theirs, 3, "10000000001"), 4, "810000000001")
    theirs = with_column(theirs, 9, "IMPOSTEUR")
    lines.append(theirs)
    lines.append(with_column(lines[1], 1, "service@patient.hygie.test"))

    report = await run_import(directory, lines)

    assert report.skipped_local == 2
    assert (report.added, report.removed) == (300, 0)
    assert await directory.lookup("dr.martin@hygie.test") == local_before
    assert await directory.lookup("service@patient.hygie.test") is None
    async with directory.database.read() as session:
        professional = await session.scalar(
            select(Professional).where(Professional.national_id == "810000000001")
        )
    assert professional is not None
    assert (professional.family_name, professional.source) == ("MARTIN", "local")

    # Absent from the next file, the local entry stays: only national entries go.
    again = await run_import(directory, fixture_lines())
    assert (again.removed, again.skipped_local) == (0, 0)
    assert await directory.lookup("dr.martin@hygie.test") == local_before


async def test_a_failure_in_the_middle_changes_nothing(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(national_import, "BATCH_SIZE", 50)
    await run_import(directory, fixture_lines())
    before = await snapshot(directory)
    lines = fixture_lines()
    del lines[100:150]  # would be removed
    lines = [with_column(line, 9, "CHANGED") if line.startswith("PER|") else line for line in lines]
    calls: list[int] = []

    def progress(done: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise RuntimeError("the operator pressed ^C")

    with pytest.raises(RuntimeError, match="pressed"):
        await run_import(directory, lines, progress=progress)

    assert len(calls) == 3 and calls == sorted(calls)
    assert await snapshot(directory) == before


async def test_a_read_error_changes_nothing(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(national_import, "BATCH_SIZE", 50)
    await run_import(directory, fixture_lines()[:120])
    before = await snapshot(directory)
    data = encode(fixture_lines())

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data) // 2, 4096):
            yield data[start : start + 4096]
        raise OSError("I/O error reading the file")

    with pytest.raises(OSError, match="I/O error"):
        await import_extraction(
            directory.database, chunks(), actor=ACTOR, local_domains=LOCAL_DOMAINS
        )
    assert await snapshot(directory) == before


async def test_progress_reports_every_byte(directory: Directory) -> None:
    calls: list[int] = []
    await run_import(directory, fixture_lines(), progress=calls.append)
    assert calls and calls[-1] == len(encode(fixture_lines()))


async def test_the_audit_trail_records_the_import(directory: Directory) -> None:
    report = await run_import(directory, fixture_lines(), source=FIXTURE.name)
    async with directory.database.read() as session:
        records = list(
            await session.scalars(
                select(AuditRecord).where(AuditRecord.action == "directory.import")
            )
        )
    assert len(records) == 1
    (record,) = records
    assert (record.actor, record.target) == (ACTOR, FIXTURE.name)
    details = json.loads(record.details)
    assert (details["added"], details["removed"], details["bad_lines"]) == (300, 0, 0)
    assert details["sha256"] == report.sha256 and len(report.sha256) == 64
    assert (await audit.verify(directory.database)).ok
