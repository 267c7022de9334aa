"""The national directory extraction: streaming, validation, bad-line reporting."""

from __future__ import annotations

import io
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.extraction import (
    HEADER,
    MAX_LINE_BYTES,
    BadLine,
    ExtractionError,
    ExtractionRecord,
    iter_extraction,
)

FIXTURE = (
    Path(__file__).parent.parent
    / "fixtures"
    / ("Extraction_Correspondance_MSSante_202611230400.txt")
)
HEADER_LINE = "|".join(HEADER).encode() + b"\n"


def line(*fields: str) -> bytes:
    return "|".join(fields).encode() + b"\n"


def per(
    address: str = "jean.dupont@chu-exemple.test",
    id_type: str = "8",
    pp_id: str = "10000000001",
    national_id: str | None = None,
) -> bytes:
    national = id_type + pp_id if national_id is None else national_id
    fields = [
        "PER", address, id_type, pp_id, national, "1", "170643907", "Cardiologie", "DR",
        "DUPONT", "Jean", "C", "Civil", "10", "Médecin", "SM54", "Médecine générale", "O",
        "CENTRE HOSPITALIER TEST", "", "", "", "131", "", "R", "DE LA SANTE", "",
        "75014 PARIS", "75014", "75", "FRANCE",
    ]  # fmt: skip
    return line(*fields)


def org(address: str = "cardio@chu-exemple.test", mailbox_type: str = "ORG") -> bytes:
    return line(mailbox_type, address, *[""] * 4, "170643907", *[""] * 24)


def parse(*lines: bytes) -> list[ExtractionRecord | BadLine]:
    return list(iter_extraction([HEADER_LINE, *lines]))


def bad_lines(results: Iterable[ExtractionRecord | BadLine]) -> list[BadLine]:
    return [r for r in results if isinstance(r, BadLine)]


# --- The fixture --------------------------------------------------------------------


def test_fixture_yields_240_people_and_60_organisation_mailboxes() -> None:
    with FIXTURE.open("rb") as stream:
        results = list(iter_extraction(stream))

    assert bad_lines(results) == []
    counts = Counter(r.mailbox_type for r in results if isinstance(r, ExtractionRecord))
    assert counts == {"PER": 240, "ORG": 60}


def test_fixture_records_carry_every_column_with_empty_ones_as_none() -> None:
    with FIXTURE.open("rb") as stream:
        records = list(iter_extraction(stream))

    assert records[0] == ExtractionRecord(
        "ORG", "service0@chu-exemple.test", None, None, None, "1", "170643907",
        "Cardiologie", None, None, None, "C", "Civil", "40", "Chirurgien-Dentiste", None,
        None, "O", "CENTRE HOSPITALIER TEST", None, None, None, "131", None, "R",
        "DE LA SANTE", None, "75014 PARIS", "75014", "75", "FRANCE",
    )  # fmt: skip
    person = records[1]
    assert isinstance(person, ExtractionRecord)
    assert (person.family_name, person.given_name) == ("THOMAS", "Élodie")
    assert (person.pp_id_type, person.pp_id, person.pp_national_id) == (
        "8",
        "10730699660",
        "810730699660",
    )


def test_bom_and_crlf_file_gives_the_same_records_as_the_plain_file() -> None:
    plain = FIXTURE.read_bytes()
    windows = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")

    assert list(iter_extraction(io.BytesIO(windows))) == list(iter_extraction(io.BytesIO(plain)))


def test_input_split_in_arbitrary_chunks_gives_the_same_records() -> None:
    data = FIXTURE.read_bytes()
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]

    assert list(iter_extraction(chunks)) == list(iter_extraction(io.BytesIO(data)))


# --- Bad lines ----------------------------------------------------------------------


def test_bad_lines_are_reported_with_line_numbers_while_good_lines_flow() -> None:
    data = FIXTURE.read_bytes().splitlines(keepends=True)
    injected = {
        5: line("PER", "only@three.test", "fields"),
        10: per(address="no-at-sign.chu-exemple.test"),
        20: org(mailbox_type="XYZ"),
        30: per(pp_id="10000000001", national_id="810000000002"),
        40: per(address="caf\xe9@chu-exemple.test").replace(b"caf\xc3\xa9", b"caf\xe9"),
        50: per(id_type="3"),
    }
    source = iter(data)
    lines = [injected.get(n) or next(source) for n in range(1, len(data) + len(injected) + 1)]

    results = list(iter_extraction(lines))

    bad = {b.line_number: b.reason for b in bad_lines(results)}
    assert sorted(bad) == [5, 10, 20, 30, 40, 50]
    assert "has 3 columns instead of 31" in bad[5]
    assert "column 2 (Adresse BAL) 'no-at-sign.chu-exemple.test'" in bad[10]
    assert "column 1 (Type de BAL) is 'XYZ'" in bad[20]
    assert "'810000000002' but should be '810000000001'" in bad[30]
    assert "not valid UTF-8 (byte 0xe9" in bad[40]
    assert "is '3'; a PER mailbox needs 8 (RPPS) or 0 (ADELI)" in bad[50]
    assert sum(isinstance(r, ExtractionRecord) for r in results) == 300


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "must look like name@domain"),
        ("@chu-exemple.test", "must look like name@domain"),
        ("jean dupont@chu-exemple.test", "not allowed there"),
        ("jean..dupont@chu-exemple.test", "not allowed there"),
        ("jean@chu_exemple.test", "the domain 'chu_exemple.test' is invalid"),
        ("jean@localhost", "not fully qualified"),
        ("j" * 65 + "@chu-exemple.test", "longer than 64"),
    ],
)
def test_invalid_addresses_are_reported_with_the_reason(address: str, problem: str) -> None:
    [result] = parse(per(address=address))

    assert isinstance(result, BadLine)
    assert problem in result.reason


def test_addresses_are_lower_cased() -> None:
    [record] = parse(org(address="Cardio.Service@CHU-Exemple.TEST"))

    assert isinstance(record, ExtractionRecord)
    assert record.address == "cardio.service@chu-exemple.test"


def test_adeli_identified_person_is_accepted() -> None:
    [record] = parse(per(id_type="0", pp_id="751234567"))

    assert isinstance(record, ExtractionRecord)
    assert record.pp_national_id == "0751234567"


def test_person_without_pp_identifier_is_reported() -> None:
    [result] = parse(per(pp_id="", national_id="8"))

    assert isinstance(result, BadLine)
    assert "column 4 (Identifiant PP) is empty" in result.reason


def test_app_and_cab_mailboxes_need_no_person_identifier() -> None:
    results = parse(org(mailbox_type="APP"), org(mailbox_type="CAB"))

    assert [r.mailbox_type for r in results if isinstance(r, ExtractionRecord)] == ["APP", "CAB"]


def test_whitespace_only_fields_become_none() -> None:
    [record] = parse(org().replace(b"170643907", b"   "))

    assert isinstance(record, ExtractionRecord)
    assert record.structure_id is None


def test_blank_lines_at_the_end_are_ignored() -> None:
    results = parse(org(), b"\n", b"\r\n", b"   \n", b"")

    assert [type(r) for r in results] == [ExtractionRecord]


def test_blank_lines_in_the_middle_are_reported() -> None:
    results = parse(org(), b"\n", b"\r\n", org())

    assert bad_lines(results) == [
        BadLine(3, "empty line in the middle of the file"),
        BadLine(4, "empty line in the middle of the file"),
    ]
    assert sum(isinstance(r, ExtractionRecord) for r in results) == 2


def test_overlong_line_is_reported_without_stopping_the_import() -> None:
    huge = b"PER|" + b"x" * (MAX_LINE_BYTES + 10) + b"\n"
    chunks = [HEADER_LINE, huge[:1000], huge[1000:], org()]

    results = list(iter_extraction(chunks))

    assert results[0] == BadLine(2, f"longer than {MAX_LINE_BYTES} bytes")
    assert isinstance(results[1], ExtractionRecord)


def test_last_line_without_newline_is_read() -> None:
    [record] = parse(org().rstrip(b"\n"))

    assert isinstance(record, ExtractionRecord)


@given(st.lists(st.binary(max_size=120), max_size=8))
def test_arbitrary_lines_after_a_valid_header_never_raise(lines: list[bytes]) -> None:
    results = list(iter_extraction([HEADER_LINE, b"\n".join(lines)]))

    assert all(isinstance(r, ExtractionRecord | BadLine) for r in results)


# --- The header ---------------------------------------------------------------------


def test_header_with_a_different_column_is_refused_naming_it() -> None:
    header = HEADER_LINE.replace("Civilité".encode(), b"Civilite")

    with pytest.raises(ExtractionError, match=r"header column 9 is \"Civilite d'exercice\""):
        list(iter_extraction([header, org()]))


def test_header_missing_the_last_column_is_refused() -> None:
    header = HEADER_LINE.replace(b"|Pays", b"")

    with pytest.raises(
        ExtractionError, match=r"30 columns, expected 31; column 31 should be 'Pays'"
    ):
        list(iter_extraction([header]))


def test_header_with_an_extra_column_is_refused() -> None:
    header = HEADER_LINE.replace(b"Pays", b"Pays|Courriel")

    with pytest.raises(ExtractionError, match=r"column 32 \('Courriel'\) is unexpected"):
        list(iter_extraction([header]))


def test_empty_file_is_refused() -> None:
    with pytest.raises(ExtractionError, match="empty"):
        list(iter_extraction(io.BytesIO(b"")))


# --- Streaming ----------------------------------------------------------------------


def test_records_arrive_before_the_input_is_exhausted() -> None:
    def source() -> Iterator[bytes]:
        yield HEADER_LINE
        yield org()
        raise AssertionError("read beyond the first record")

    assert isinstance(next(iter_extraction(source())), ExtractionRecord)


def test_memory_stays_flat_while_streaming_200000_lines() -> None:
    lines = 200_000
    block = b"".join(per(address=f"p{i}@chu-exemple.test") for i in range(999)) + per(id_type="3")

    def source() -> Iterator[bytes]:
        yield HEADER_LINE
        for _ in range(lines // 1000):
            yield block

    total_bytes = len(block) * (lines // 1000)
    counts: Counter[type] = Counter()
    tracemalloc.start()
    try:
        for result in iter_extraction(source()):
            counts[type(result)] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert counts == {ExtractionRecord: 199_800, BadLine: 200}
    assert total_bytes > 40_000_000
    # Holding the input alone would take total_bytes; the parser keeps about one line,
    # so even a few bytes kept per line (200,000 lines) would break this bound.
    assert peak < 256 * 1024
