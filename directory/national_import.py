"""Import the national extraction (``Extraction_Correspondance_MSSante_*.txt``) into the
trust space: the other operators' mailboxes, their professionals and their structures.

The import is all or nothing. Everything happens in one write transaction: the file is
streamed in batches of :data:`BATCH_SIZE` records, each batch upserted with a few bulk
statements (an ``IN`` lookup per table, then ``INSERT``/``UPDATE`` with executemany), and
the addresses seen are staged in ``directory_import_rows`` under a fresh import id, so
that the national entries absent from the file can be deleted at the end without
keeping every address in memory. The professionals and structures seen are staged
there too, under keys that are not addresses (``#professional …``, ``#structure …``),
so that the first line describing one wins, whatever the batch. The staging rows are
deleted before the commit. Memory is bounded by one batch (plus the bad lines),
whatever the size of the file. An exception anywhere (a database error, a failing
progress callback, a cancelled task) rolls the transaction back: the directory stays as
it was. On SQLite the import holds the write lock while it runs: other writers wait,
up to the busy timeout.

Rules:

* An address is identified by itself: a national entry is added, updated or left
  unchanged; national entries missing from the file are removed.
* Addresses in our own domains (``local_domains``), and any entry we did not import
  (``source`` other than ``national``), are ours: the national file never overwrites
  them (``skipped_local``).
* Professionals are keyed by their national id (``8``+RPPS, ``0``+ADELI), structures by
  (id type, id). When several lines describe the same professional or structure
  differently, the first line wins. Professionals and structures created locally are
  linked to, never modified. National ones left without any entry are deleted.
* The extraction is public, so every imported entry has ``red_list=False``.
* Bad lines: when the file has any and ``skip_bad_lines`` is False, nothing is changed
  and :class:`ImportRefused` is raised, its report listing every bad line; with
  ``skip_bad_lines`` the good lines are imported and the report lists the others. An
  address that appears twice is a bad line (the first occurrence is kept). A header
  that is not the national one raises :class:`~directory.extraction.ExtractionError`.
* One audit record, action ``directory.import``, with the counts and the file's SHA-256,
  is written in the same transaction.
"""

from __future__ import annotations

import hashlib
import operator
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, BinaryIO

from sqlalchemy import (
    Insert,
    String,
    Table,
    Update,
    bindparam,
    delete,
    exists,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from directory.extraction import HEADER, BadLine, ExtractionRecord, iter_extraction
from directory.whitelist_xml import normalise_domain
from storage import audit
from storage.db import Database
from storage.models import (
    DirectoryEntry,
    DirectoryImportRow,
    MessageBase,
    Organisation,
    Professional,
    utcnow,
)

BATCH_SIZE = 1000
# Staging keys of professionals and structures (an address always holds an "@").
_PERSON_KEY = "#professional {}"
_STRUCTURE_KEY = "#structure {}|{}"
READ_BYTES = 64 * 1024
SOURCE = "national"
AUDIT_ACTION = "directory.import"

Progress = Callable[[int], object]


@dataclass
class ImportReport:
    """What an import did (or, when ``applied`` is False, why it did nothing).

    ``added``/``updated``/``unchanged`` count the file's lines (directory entries); a
    line is ``updated`` when its entry, its professional or its structure changed.
    """

    import_id: str
    applied: bool = False
    records: int = 0  # good lines read
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped_local: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    professionals_added: int = 0
    professionals_updated: int = 0
    professionals_removed: int = 0
    organisations_added: int = 0
    organisations_updated: int = 0
    organisations_removed: int = 0
    bytes_read: int = 0
    sha256: str = ""

    def summary(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"removed {self.removed}, skipped (local) {self.skipped_local}"
        )

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped_local": self.skipped_local,
            "bad_lines": len(self.bad_lines),
            "professionals_added": self.professionals_added,
            "professionals_updated": self.professionals_updated,
            "professionals_removed": self.professionals_removed,
            "organisations_added": self.organisations_added,
            "organisations_updated": self.organisations_updated,
            "organisations_removed": self.organisations_removed,
        }

    def _nothing_applied(self) -> None:
        for name in self.counts():
            if name not in ("records", "bad_lines"):
                setattr(self, name, 0)
        self.applied = False


class ImportRefused(Exception):
    """The file has bad lines and ``skip_bad_lines`` was not given: nothing was changed."""

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        count = len(report.bad_lines)
        super().__init__(
            f"{count} bad line{'s' if count != 1 else ''}; nothing was imported "
            "(fix them, or skip them explicitly)"
        )


# -- checking and converting one record -------------------------------------------------

_COLUMN_INDEX = {f.name: index for index, f in enumerate(fields(ExtractionRecord))}


def _max_length(attribute: InstrumentedAttribute[Any]) -> int:
    column_type = attribute.type
    assert isinstance(column_type, String) and column_type.length is not None
    return column_type.length


# Columns copied as they are, with the size of the column that stores them.
_LIMITS_ALL = {
    "service": _max_length(DirectoryEntry.service),
    "structure_id_type": _max_length(Organisation.structure_id_type),
    "structure_id": _max_length(Organisation.structure_id),
    "structure_name": _max_length(Organisation.name),
    "structure_trade_name": _max_length(Organisation.trade_name),
    "postal_code": _max_length(Organisation.postal_code),
    "address_l6": _max_length(Organisation.locality),
    "department": _max_length(Organisation.department),
    "country": _max_length(Organisation.country),
}
_LIMITS_PER = {
    "pp_national_id": _max_length(Professional.national_id),
    "civility": _max_length(Professional.civility),
    "family_name": _max_length(Professional.family_name),
    "given_name": _max_length(Professional.given_name),
    "profession_category": _max_length(Professional.category_code),
    "profession_category_label": _max_length(Professional.category_label),
    "profession_code": _max_length(Professional.profession_code),
    "profession_label": _max_length(Professional.profession_label),
    "specialty_code": _max_length(Professional.specialty_code),
    "specialty_label": _max_length(Professional.specialty_label),
}
_DISPLAY_NAME_LENGTH = _max_length(DirectoryEntry.display_name)
_ADDRESS_LINES_LENGTH = _max_length(Organisation.address_lines)


class _Limits:
    """The checks of one kind of line: a getter of the values, and their limits."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.names = tuple(limits)
        self.limits = tuple(limits.values())
        self.values = operator.attrgetter(*self.names)


_CHECK_PER = _Limits(_LIMITS_ALL | _LIMITS_PER)
_CHECK_OTHERS = _Limits(_LIMITS_ALL)


def _too_long(record: ExtractionRecord) -> str | None:
    """Why a value of ``record`` does not fit in the directory, if one does not."""
    check = _CHECK_PER if record.mailbox_type == "PER" else _CHECK_OTHERS
    values: tuple[str | None, ...] = check.values(record)
    for name, value, limit in zip(check.names, values, check.limits, strict=True):
        if value is not None and len(value) > limit:
            index = _COLUMN_INDEX[name]
            return (
                f"column {index + 1} ({HEADER[index]}) has {len(value)} characters; "
                f"at most {limit} are allowed"
            )
    return None


def _organisation_key(record: ExtractionRecord) -> tuple[str, str] | None:
    if record.structure_id_type is None or record.structure_id is None:
        return None
    return record.structure_id_type, record.structure_id


def _professional_values(record: ExtractionRecord) -> dict[str, Any]:
    return {
        "id_type": record.pp_id_type,
        "civility": record.civility,
        "family_name": record.family_name or "",
        "given_name": record.given_name or "",
        "category_code": record.profession_category,
        "category_label": record.profession_category_label,
        "profession_code": record.profession_code,
        "profession_label": record.profession_label,
        "specialty_code": record.specialty_code,
        "specialty_label": record.specialty_label,
    }


def _organisation_values(record: ExtractionRecord) -> dict[str, Any]:
    street = " ".join(
        part
        for part in (
            record.address_l4_number,
            record.address_l4_number_suffix,
            record.address_l4_street_type,
            record.address_l4_street_name,
        )
        if part
    )
    lines = (record.address_l2, record.address_l3, street, record.address_l5)
    address_lines = "\n".join(line for line in lines if line)[:_ADDRESS_LINES_LENGTH]
    locality = record.address_l6
    # L6 is the delivery line, "75014 PARIS": keep the locality.
    if locality and record.postal_code and locality.startswith(record.postal_code + " "):
        locality = locality[len(record.postal_code) + 1 :].strip() or None
    return {
        "name": record.structure_name or record.structure_trade_name or "",
        "trade_name": record.structure_trade_name,
        "address_lines": address_lines or None,
        "postal_code": record.postal_code,
        "locality": locality,
        "department": record.department,
        "country": record.country,
    }


def _display_name(record: ExtractionRecord) -> str:
    if record.mailbox_type == "PER":
        name = f"{record.given_name or ''} {record.family_name or ''}".strip()
    else:
        structure = record.structure_name or record.structure_trade_name or ""
        if structure and record.service:
            name = f"{structure} – {record.service}"
        else:
            name = structure or record.service or ""
    return name[:_DISPLAY_NAME_LENGTH]


def _dematerialisation(value: str | None) -> bool | None:
    return {"O": True, "N": False}.get((value or "").upper())


_PROFESSIONAL_FIELDS = (
    "id_type",
    "civility",
    "family_name",
    "given_name",
    "category_code",
    "category_label",
    "profession_code",
    "profession_label",
    "specialty_code",
    "specialty_label",
)
_ORGANISATION_FIELDS = (
    "name",
    "trade_name",
    "address_lines",
    "postal_code",
    "locality",
    "department",
    "country",
)
_ENTRY_FIELDS = (
    "kind",
    "is_local",
    "mailbox_id",
    "professional_id",
    "organisation_id",
    "service",
    "display_name",
    "red_list",
    "dematerialisation",
)


# -- statements (Core, for executemany: the ORM's bulk insert splits rows with None) --


def _table(model: type[MessageBase]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_ENTRIES = _table(DirectoryEntry)
_PROFESSIONALS = _table(Professional)
_ORGANISATIONS = _table(Organisation)
_STAGING = _table(DirectoryImportRow)


def _update_by_id(table: Table) -> Update:
    """UPDATE … WHERE id = :row_id; the SET clause is every other key of the parameters."""
    return table.update().where(table.c.id == bindparam("row_id"))


def _stage(dialect: str) -> Insert:
    """INSERT staging rows, returning the keys (addresses…) that were not there yet."""
    if dialect == "postgresql":
        statement: Insert = postgresql.insert(_STAGING).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(_STAGING).on_conflict_do_nothing()
    else:  # pragma: no cover - the store runs on SQLite and PostgreSQL only
        raise NotImplementedError(f"no national import on {dialect}")
    return statement.returning(_STAGING.c.address)


# -- reading the stream -----------------------------------------------------------------


class _Reader:
    """The stream as chunks, counting the bytes and hashing them on the way."""

    def __init__(self, stream: BinaryIO | Iterable[bytes]) -> None:
        self.stream = stream
        self.bytes_read = 0
        self.digest = hashlib.sha256()

    def _raw(self) -> Iterator[bytes]:
        read = getattr(self.stream, "read", None)
        if callable(read):
            while chunk := read(READ_BYTES):
                yield bytes(chunk)
        else:
            yield from self.stream

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._raw():
            self.bytes_read += len(chunk)
            self.digest.update(chunk)
            yield chunk


# -- the import ---------------------------------------------------------------------


class _Import:
    """One import inside its transaction."""

    def __init__(
        self,
        session: AsyncSession,
        report: ImportReport,
        *,
        local_domains: frozenset[str],
        skip_bad_lines: bool,
        now: datetime,
    ) -> None:
        self.session = session
        self.stage = _stage(session.get_bind().dialect.name)
        self.report = report
        self.local_domains = local_domains
        self.skip_bad_lines = skip_bad_lines
        self.now = now
        # False once the import is bound to be refused: batches are then only staged,
        # to find the remaining duplicate addresses, not applied.
        self.applying = True

    def bad(self, line: BadLine) -> None:
        self.report.bad_lines.append(line)
        if not self.skip_bad_lines:
            self.applying = False

    async def batch(self, items: Sequence[tuple[int, ExtractionRecord]]) -> None:
        kept: dict[str, tuple[int, ExtractionRecord]] = {}
        for line, record in items:
            if record.address.rpartition("@")[2] in self.local_domains:
                self.report.skipped_local += 1
            elif record.address in kept:
                first = kept[record.address][0]
                self.bad(BadLine(line, f"address {record.address} is already on line {first}"))
            else:
                kept[record.address] = (line, record)
        if not kept:
            return
        new = await self._first_seen(kept)
        fresh: list[tuple[int, ExtractionRecord]] = []
        for address, (line, record) in kept.items():
            if address in new:
                fresh.append((line, record))
            else:
                self.bad(BadLine(line, f"address {address} is already on an earlier line"))
        if self.applying and fresh:
            await self._apply(fresh)

    async def _first_seen(self, keys: Iterable[str]) -> set[str]:
        """Stage ``keys``; return those not staged before by this import.

        Staging is also the check for keys seen in an earlier batch: the primary key
        refuses them, and RETURNING names the new ones.
        """
        rows = [{"import_id": self.report.import_id, "address": key} for key in keys]
        if not rows:
            return set()
        return set(await self.session.scalars(self.stage, rows))

    async def _apply(self, items: list[tuple[int, ExtractionRecord]]) -> None:
        columns = [getattr(DirectoryEntry, name) for name in ("id", "address", "source")]
        columns += [getattr(DirectoryEntry, name) for name in _ENTRY_FIELDS]
        rows = await self.session.execute(
            select(*columns).where(DirectoryEntry.address.in_([r.address for _l, r in items]))
        )
        existing = {row.address: row for row in rows}
        records: list[ExtractionRecord] = []
        for _line, record in items:
            row = existing.get(record.address)
            if row is not None and row.source != SOURCE:
                self.report.skipped_local += 1  # one of ours, outside our domains
            else:
                records.append(record)
        # Professionals and structures are staged too (under keys that are not
        # addresses), so that only the first line describing one, in the whole file,
        # may change it: later lines, in this batch or another, are not compared.
        persons = [r for r in records if r.mailbox_type == "PER" and r.pp_national_id]
        structures = [key for r in records if (key := _organisation_key(r)) is not None]
        first_seen = await self._first_seen(
            {_PERSON_KEY.format(r.pp_national_id): None for r in persons}
            | {_STRUCTURE_KEY.format(*key): None for key in structures}
        )
        professionals, changed_professionals = await self._professionals(persons, first_seen)
        organisations, changed_organisations = await self._organisations(records, first_seen)

        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for record in records:
            professional_id = (
                professionals[record.pp_national_id]
                if record.mailbox_type == "PER" and record.pp_national_id is not None
                else None
            )
            key = _organisation_key(record)
            organisation_id = organisations[key] if key is not None else None
            values: dict[str, Any] = {
                "kind": record.mailbox_type,
                "is_local": False,
                "mailbox_id": None,
                "professional_id": professional_id,
                "organisation_id": organisation_id,
                "service": record.service,
                "display_name": _display_name(record),
                "red_list": False,  # the extraction is public
                "dematerialisation": _dematerialisation(record.dematerialisation),
            }
            row = existing.get(record.address)
            if row is None:
                values.update(
                    address=record.address, source=SOURCE, created_at=self.now, updated_at=self.now
                )
                inserts.append(values)
                self.report.added += 1
            elif (
                tuple(row[3:]) != tuple(values[name] for name in _ENTRY_FIELDS)
                or professional_id in changed_professionals
                or organisation_id in changed_organisations
            ):
                values.update(row_id=row.id, updated_at=self.now)
                updates.append(values)
                self.report.updated += 1
            else:
                self.report.unchanged += 1
        if inserts:
            await self.session.execute(_ENTRIES.insert(), inserts)
        if updates:
            await self.session.execute(_update_by_id(_ENTRIES), updates)

    async def _professionals(
        self, records: list[ExtractionRecord], first_seen: set[str]
    ) -> tuple[dict[str, int], set[int]]:
        """Upsert the batch's professionals; their ids, and those changed by this import."""
        wanted: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.pp_national_id is not None and record.pp_national_id not in wanted:
                wanted[record.pp_national_id] = _professional_values(record)
        ids: dict[str, int] = {}
        changed: set[int] = set()
        if not wanted:
            return ids, changed
        columns = [getattr(Professional, name) for name in _PROFESSIONAL_FIELDS]
        rows = await self.session.execute(
            select(
                Professional.id,
                Professional.national_id,
                Professional.source,
                Professional.updated_at,
                *columns,
            ).where(Professional.national_id.in_(list(wanted)))
        )
        updates: list[dict[str, Any]] = []
        for row in rows:
            ids[row.national_id] = row.id
            if row.source != SOURCE:
                continue  # created locally: linked to, never modified
            if _PERSON_KEY.format(row.national_id) not in first_seen:
                # An earlier line described this professional: it wins.
                if row.updated_at == self.now:
                    changed.add(row.id)  # and changed it
                continue
            values = wanted[row.national_id]
            if tuple(row[4:]) != tuple(values[name] for name in _PROFESSIONAL_FIELDS):
                updates.append({"row_id": row.id, "updated_at": self.now, **values})
                changed.add(row.id)
        if updates:
            await self.session.execute(_update_by_id(_PROFESSIONALS), updates)
            self.report.professionals_updated += len(updates)
        new = [
            {"national_id": national_id, "source": SOURCE, "updated_at": self.now, **values}
            for national_id, values in wanted.items()
            if national_id not in ids
        ]
        if new:
            inserted = await self.session.execute(
                _PROFESSIONALS.insert().returning(
                    _PROFESSIONALS.c.national_id, _PROFESSIONALS.c.id
                ),
                new,
            )
            for national_id, professional_id in inserted:
                ids[national_id] = professional_id
                changed.add(professional_id)
            self.report.professionals_added += len(new)
        return ids, changed

    async def _organisations(
        self, records: list[ExtractionRecord], first_seen: set[str]
    ) -> tuple[dict[tuple[str, str], int], set[int]]:
        """Upsert the batch's structures; their ids, and those changed by this import."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            key = _organisation_key(record)
            if key is not None and key not in wanted:
                wanted[key] = _organisation_values(record)
        ids: dict[tuple[str, str], int] = {}
        changed: set[int] = set()
        by_type: dict[str, list[str]] = {}
        for id_type, structure_id in wanted:
            by_type.setdefault(id_type, []).append(structure_id)
        columns = [getattr(Organisation, name) for name in _ORGANISATION_FIELDS]
        updates: list[dict[str, Any]] = []
        for id_type, structure_ids in by_type.items():
            # One query per id type, so that the (type, id) unique index is used.
            rows = await self.session.execute(
                select(
                    Organisation.id,
                    Organisation.structure_id,
                    Organisation.source,
                    Organisation.updated_at,
                    *columns,
                ).where(
                    Organisation.structure_id_type == id_type,
                    Organisation.structure_id.in_(structure_ids),
                )
            )
            for row in rows:
                key = (id_type, row.structure_id)
                ids[key] = row.id
                if row.source != SOURCE:
                    continue
                if _STRUCTURE_KEY.format(*key) not in first_seen:
                    if row.updated_at == self.now:
                        changed.add(row.id)
                    continue
                values = wanted[key]
                if tuple(row[4:]) != tuple(values[name] for name in _ORGANISATION_FIELDS):
                    updates.append({"row_id": row.id, "updated_at": self.now, **values})
                    changed.add(row.id)
        if updates:
            await self.session.execute(_update_by_id(_ORGANISATIONS), updates)
            self.report.organisations_updated += len(updates)
        new = [
            {
                "structure_id_type": id_type,
                "structure_id": structure_id,
                "source": SOURCE,
                "updated_at": self.now,
                **values,
            }
            for (id_type, structure_id), values in wanted.items()
            if (id_type, structure_id) not in ids
        ]
        if new:
            inserted = await self.session.execute(
                _ORGANISATIONS.insert().returning(
                    _ORGANISATIONS.c.structure_id_type,
                    _ORGANISATIONS.c.structure_id,
                    _ORGANISATIONS.c.id,
                ),
                new,
            )
            for id_type, structure_id, organisation_id in inserted:
                ids[(id_type, structure_id)] = organisation_id
                changed.add(organisation_id)
            self.report.organisations_added += len(new)
        return ids, changed

    async def finish(self, *, actor: str, source: str) -> None:
        """Remove what the file no longer lists, drop the staging rows, audit."""
        session, import_id = self.session, self.report.import_id
        no_sync = {"synchronize_session": False}
        removed = await session.execute(
            delete(DirectoryEntry)
            .where(
                DirectoryEntry.source == SOURCE,
                ~exists().where(
                    DirectoryImportRow.import_id == import_id,
                    DirectoryImportRow.address == DirectoryEntry.address,
                ),
            )
            .execution_options(**no_sync)
        )
        self.report.removed = _rowcount(removed)
        await session.execute(
            delete(DirectoryImportRow)
            .where(DirectoryImportRow.import_id == import_id)
            .execution_options(**no_sync)
        )
        orphan_professionals = await session.execute(
            delete(Professional)
            .where(
                Professional.source == SOURCE,
                ~exists().where(DirectoryEntry.professional_id == Professional.id),
            )
            .execution_options(**no_sync)
        )
        self.report.professionals_removed = _rowcount(orphan_professionals)
        orphan_organisations = await session.execute(
            delete(Organisation)
            .where(
                Organisation.source == SOURCE,
                ~exists().where(DirectoryEntry.organisation_id == Organisation.id),
            )
            .execution_options(**no_sync)
        )
        self.report.organisations_removed = _rowcount(orphan_organisations)
        await audit.record(
            session,
            actor=actor,
            action=AUDIT_ACTION,
            target=source,
            details={
                **self.report.counts(),
                "bad_lines_skipped": len(self.report.bad_lines),
                "bytes": self.report.bytes_read,
                "sha256": self.report.sha256,
                "import_id": import_id,
            },
        )


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def import_extraction(
    database: Database,
    stream: BinaryIO | Iterable[bytes],
    *,
    actor: str,
    local_domains: Iterable[str],
    skip_bad_lines: bool = False,
    progress: Progress | None = None,
    source: str = "",
) -> ImportReport:
    """Import the extraction read from ``stream`` in one transaction; see the module.

    ``stream`` is a binary file or an iterable of byte chunks. ``local_domains`` are
    this operator's domains (addresses there are skipped). ``progress``, if given, is
    called with the total number of bytes read so far, after each batch and at the end;
    an exception it raises aborts the import (nothing is changed). ``source`` names the
    file in the audit trail.

    Returns the report of an applied import. Raises :class:`ImportRefused` (nothing
    changed) when the file has bad lines and ``skip_bad_lines`` is False, and
    :class:`~directory.extraction.ExtractionError` when the header is not the national one.
    """
    domains = frozenset(normalise_domain(domain) for domain in local_domains)
    report = ImportReport(import_id=str(uuid.uuid4()))
    reader = _Reader(stream)
    async with database.write() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # The tables grow inside this transaction, where the planner's statistics
            # cannot follow (autovacuum does not see uncommitted rows): left alone, it
            # plans the batch lookups (IN lists on unique indexes) as sequential scans,
            # and the import becomes quadratic. Index scans are always right here.
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        run = _Import(
            session, report, local_domains=domains, skip_bad_lines=skip_bad_lines, now=utcnow()
        )
        batch: list[tuple[int, ExtractionRecord]] = []
        line_number = 1  # the header
        for item in iter_extraction(reader.chunks()):
            if isinstance(item, BadLine):
                line_number = item.line_number
                run.bad(item)
                continue
            line_number += 1  # a record follows the previous line, good or bad
            problem = _too_long(item)
            if problem is not None:
                run.bad(BadLine(line_number, problem))
                continue
            report.records += 1
            batch.append((line_number, item))
            if len(batch) >= BATCH_SIZE:
                await run.batch(batch)
                batch = []
                if progress is not None:
                    progress(reader.bytes_read)
        if batch:
            await run.batch(batch)
        report.bytes_read = reader.bytes_read
        report.sha256 = reader.digest.hexdigest()
        if progress is not None:
            progress(reader.bytes_read)
        report.bad_lines.sort(key=lambda bad: bad.line_number)
        if report.bad_lines and not skip_bad_lines:
            report._nothing_applied()
            raise ImportRefused(report)  # leaving the block rolls everything back
        await run.finish(actor=actor, source=source)
    report.applied = True
    return report
