"""Read the national directory extraction, ``Extraction_Correspondance_MSSante_*.txt``.

Source of the format: "Extraction publique de l'annuaire MSSanté", the public export
of the national MSSanté directory (Annuaire Santé, Agence du Numérique en Santé). It
is UTF-8 text, ``|``-separated, one header line and 31 columns per line; mailboxes
flagged "liste rouge" are not published in it.

The file holds hundreds of thousands of lines, so :func:`iter_extraction` streams it:
memory stays bounded by the longest line, whatever the file size. A bad line is
yielded as a :class:`BadLine` saying what to fix, and reading goes on; only an
unusable header stops the import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from directory.addresses import normalise_address

MailboxType = Literal["PER", "ORG", "APP", "CAB"]
_MAILBOX_TYPES: dict[str, MailboxType] = {"PER": "PER", "ORG": "ORG", "APP": "APP", "CAB": "CAB"}

# National identifier of a person: "8" + RPPS number, or "0" + ADELI number.
_PP_ID_TYPES = {"8": "RPPS", "0": "ADELI"}

HEADER: tuple[str, ...] = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION",
    "L3COMPLEMENTDISTRIBUTION",
    "L4NUMEROVOIE",
    "L4COMPLEMENTNUMEROVOIE",
    "NL4TYPEVOIE",
    "L4LIBELLEVOIE",
    "L5LIEUDITMENTION",
    "L6LIGNEACHEMINEMENT",
    "Code postal",
    "Département",
    "Pays",
)

# A real line is a few hundred bytes; a longer one is garbage and is not buffered.
MAX_LINE_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"


class ExtractionError(ValueError):
    """The file cannot be read as an extraction at all (empty, or wrong header)."""


@dataclass(frozen=True, slots=True)
class ExtractionRecord:
    """One mailbox of the extraction; empty columns are None."""

    mailbox_type: MailboxType  # Type de BAL
    address: str  # Adresse BAL, lower-cased
    pp_id_type: str | None  # Type Identifiant PP: 8 (RPPS) or 0 (ADELI)
    pp_id: str | None  # Identifiant PP
    pp_national_id: str | None  # Identification nationale PP
    structure_id_type: str | None  # Type identifiant structure
    structure_id: str | None  # Identification Structure
    service: str | None  # Service de rattachement
    civility: str | None  # Civilité d'exercice
    family_name: str | None  # Nom d'exercice
    given_name: str | None  # Prénom d'exercice
    profession_category: str | None  # Catégorie profession
    profession_category_label: str | None  # Libellé catégorie profession
    profession_code: str | None  # Code Profession
    profession_label: str | None  # Libellé Profession
    specialty_code: str | None  # Code savoir-faire
    specialty_label: str | None  # Libellé savoir-faire
    dematerialisation: str | None  # Dématérialisation
    structure_name: str | None  # Raison Sociale structure BAL
    structure_trade_name: str | None  # Enseigne commerciale structure BAL
    address_l2: str | None  # L2COMPLEMENTLOCALISATION
    address_l3: str | None  # L3COMPLEMENTDISTRIBUTION
    address_l4_number: str | None  # L4NUMEROVOIE
    address_l4_number_suffix: str | None  # L4COMPLEMENTNUMEROVOIE
    address_l4_street_type: str | None  # NL4TYPEVOIE
    address_l4_street_name: str | None  # L4LIBELLEVOIE
    address_l5: str | None  # L5LIEUDITMENTION
    address_l6: str | None  # L6LIGNEACHEMINEMENT
    postal_code: str | None  # Code postal
    department: str | None  # Département
    country: str | None  # Pays


@dataclass(frozen=True)
class BadLine:
    """A line that was skipped, and why."""

    line_number: int  # 1-based; the header is line 1
    reason: str


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _column(index: int) -> str:
    return f"column {index + 1} ({HEADER[index]})"


def _parse_line(raw: bytes) -> ExtractionRecord | str:
    """Return the record, or the reason the line is unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
            "re-export the file in UTF-8"
        )
    values = [value.strip() or None for value in text.split("|")]
    if len(values) != len(HEADER):
        return (
            f"has {len(values)} columns instead of {len(HEADER)}: "
            "a value holding '|', or a truncated line"
        )
    raw_type = values[0] or ""
    mailbox_type = _MAILBOX_TYPES.get(raw_type)
    if mailbox_type is None:
        return f"{_column(0)} is {raw_type!r}; expected one of {', '.join(_MAILBOX_TYPES)}"
    raw_address = values[1] or ""
    try:
        address = normalise_address(raw_address)
    except ValueError as exc:
        return f"{_column(1)} {raw_address!r} is not a valid mailbox address: {exc}"
    if mailbox_type == "PER":
        pp_type, pp_id, national_id = values[2], values[3], values[4]
        if pp_type not in _PP_ID_TYPES:
            return f"{_column(2)} is {pp_type or ''!r}; a PER mailbox needs 8 (RPPS) or 0 (ADELI)"
        if pp_id is None:
            return f"{_column(3)} is empty; a PER mailbox needs the {_PP_ID_TYPES[pp_type]} number"
        if national_id != pp_type + pp_id:
            return (
                f"{_column(4)} is {national_id!r} but should be {pp_type + pp_id!r} "
                f"({pp_type} followed by the {_PP_ID_TYPES[pp_type]} number)"
            )
    return ExtractionRecord(mailbox_type, address, *values[2:])


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    """Yield the lines of ``chunks`` without their LF; None for a line over the limit.

    Only the current line is buffered, and at most MAX_LINE_BYTES of it.
    """
    pending = bytearray()
    too_long = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not too_long:
                    pending += chunk[start:]
                    if len(pending) > MAX_LINE_BYTES:
                        too_long = True
                        pending.clear()
                break
            if too_long or len(pending) + end - start > MAX_LINE_BYTES:
                yield None
            elif pending:
                pending += chunk[start:end]
                yield bytes(pending)
            else:
                yield chunk[start:end]
            pending.clear()
            too_long = False
            start = end + 1
    if too_long:
        yield None
    elif pending:
        yield bytes(pending)


def _check_header(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExtractionError("line 1 (header) is not valid UTF-8; expected a UTF-8 file") from None
    found = tuple(text.split("|"))
    for index, (got, wanted) in enumerate(zip(found, HEADER, strict=False)):
        if got != wanted:
            raise ExtractionError(
                f"header column {index + 1} is {got!r}, expected {wanted!r}; "
                "this is not an Extraction_Correspondance_MSSante file, or its format changed"
            )
    if len(found) < len(HEADER):
        raise ExtractionError(
            f"header has {len(found)} columns, expected {len(HEADER)}; "
            f"column {len(found) + 1} should be {HEADER[len(found)]!r}"
        )
    if len(found) > len(HEADER):
        raise ExtractionError(
            f"header has {len(found)} columns, expected {len(HEADER)}; "
            f"column {len(HEADER) + 1} ({found[len(HEADER)]!r}) is unexpected"
        )


def iter_extraction(stream: BinaryIO | Iterable[bytes]) -> Iterator[ExtractionRecord | BadLine]:
    """Stream the records of an extraction, with a BadLine for each unusable line.

    ``stream`` is a binary file, or any iterable of byte chunks (lines or blocks of
    any size: lines are delimited by LF, a CR before it is dropped). A UTF-8 BOM is
    accepted; blank lines at the end are ignored. Raises ExtractionError when the
    header is missing or differs from the national one.
    """
    chunks: Iterable[bytes]
    if isinstance(stream, _Readable):
        reader = stream
        chunks = iter(lambda: reader.read(_CHUNK_BYTES), b"")
    else:
        chunks = stream
    lines = _split_lines(chunks)
    header = next(lines, None)
    if header is None:
        raise ExtractionError("the file is empty; expected a header line")
    if header.startswith(_BOM):
        header = header[len(_BOM) :]
    _check_header(header.removesuffix(b"\r"))
    blank_run_start = 0
    blank_run_length = 0  # blank lines seen since the last non-blank one
    for line_number, raw in enumerate(lines, start=2):
        if raw is None:
            result: ExtractionRecord | str = f"longer than {MAX_LINE_BYTES} bytes"
        else:
            raw = raw.removesuffix(b"\r")
            if not raw.strip():
                if not blank_run_length:
                    blank_run_start = line_number
                blank_run_length += 1
                continue
            result = _parse_line(raw)
        # Blank lines are only tolerated at the end of the file.
        for blank in range(blank_run_start, blank_run_start + blank_run_length):
            yield BadLine(blank, "empty line in the middle of the file")
        blank_run_length = 0
        yield BadLine(line_number, result) if isinstance(result, str) else result
