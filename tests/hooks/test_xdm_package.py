"""IHE XDM packages: a packed package reads back; every broken package is refused by code."""

from __future__ import annotations

import datetime
import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.hooks import xdm

FIXTURES = Path(__file__).parent.parent / "fixtures" / "xdm"
CDA = (FIXTURES / "compte-rendu.xml").read_bytes()
PDF = (FIXTURES / "lettre.pdf").read_bytes()
INS = "279035121518989"
NOW = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.UTC)


def packed() -> bytes:
    return xdm.pack(
        [("cr.xml", CDA), ("lettre.pdf", PDF)],
        ins=INS,
        family="DUPONT",
        given="Marie",
        birthdate=datetime.date(1979, 3, 15),
        sex="F",
        author="Dr Martin",
        now=NOW,
    )


def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def rezip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def with_metadata(change: Callable[[str], str]) -> bytes:
    files = entries(packed())
    key = "IHE_XDM/SUBSET01/METADATA.XML"
    files[key] = change(files[key].decode()).encode()
    return rezip(files)


def codes(data: bytes, limits: xdm.XdmLimits | None = None) -> set[str]:
    return {problem.code for problem in xdm.check_package(data, limits)}


def refused(data: bytes, code: str, limits: xdm.XdmLimits | None = None) -> None:
    with pytest.raises(xdm.XdmError) as raised:
        xdm.read_package(data, limits)
    assert code in codes(data, limits), xdm.check_package(data, limits)
    assert str(raised.value).count("^") >= 1


def test_a_packed_package_reads_back_with_its_metadata() -> None:
    package = xdm.read_package(packed())
    assert package.patient_ins == INS and package.patient_oid == "1.2.250.1.213.1.4.8"
    assert {n for n in entries(packed())} >= {
        "README.TXT",
        "INDEX.HTM",
        "IHE_XDM/SUBSET01/METADATA.XML",
    }
    cda, pdf = package.documents
    assert cda.content == CDA and pdf.content == PDF
    assert cda.mime_type == "text/xml" and pdf.mime_type == "application/pdf"
    assert cda.unique_id == "1.2.250.1.999.1.1.42^CR0001"
    assert cda.creation_time == "20261202093000"  # CDA +0100 converted to UTC
    assert cda.format_code is not None and pdf.format_code is None
    assert cda.hash == hashlib.sha1(CDA).hexdigest() and cda.size == len(CDA)  # noqa: S324
    assert cda.type_code.code == "11488-4" and cda.confidentiality_code.code == "N"
    assert cda.title == "Compte rendu de consultation" and cda.author == "Dr Martin"
    assert all(d.patient_ins == INS for d in package.documents)
    assert package.submission.submission_time == "20261202100000"
    assert xdm.check_package(packed()) == []


def test_an_invalid_ins_cannot_be_packed() -> None:
    with pytest.raises(xdm.XdmError) as raised:
        xdm.pack(
            [("cr.xml", CDA)],
            ins="279035121518988",
            family="D",
            given="M",
            birthdate=datetime.date(1979, 3, 15),
            sex="F",
        )
    assert raised.value.code == "XDM_INS"


def test_a_wrong_hash_is_refused() -> None:
    refused(with_metadata(lambda m: m.replace(hashlib.sha1(PDF).hexdigest(), "0" * 40)), "XDM_HASH")  # noqa: S324


def test_a_wrong_size_is_refused() -> None:
    refused(
        with_metadata(
            lambda m: m.replace(f"<rim:Value>{len(PDF)}</rim:Value>", "<rim:Value>7</rim:Value>")
        ),
        "XDM_SIZE",
    )


def test_a_changed_document_is_refused_by_its_hash() -> None:
    files = entries(packed())
    files["IHE_XDM/SUBSET01/DOC0002.PDF"] = PDF.replace(b"Hygie", b"Hydra")
    refused(rezip(files), "XDM_HASH")


def test_two_patients_are_refused() -> None:
    # the first DocumentEntry.patientId names someone else, with a valid INS
    body = "1800175123456"
    other = body + f"{97 - int(body) % 97:02d}"
    changed = with_metadata(lambda m: m.replace(f'value="{INS}^^^', f'value="{other}^^^', 1))
    refused(changed, "XDM_TWO_PATIENTS")
    assert "XDM_INS" not in codes(changed)


def test_an_invalid_ins_in_the_metadata_is_refused() -> None:
    refused(with_metadata(lambda m: m.replace(INS, INS[:-2] + "00")), "XDM_INS")


def test_a_patient_id_that_is_not_an_ins_oid_is_refused() -> None:
    refused(
        with_metadata(lambda m: m.replace("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.2")), "XDM_INS"
    )


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/passwd", "IHE_XDM\\SUBSET01\\X", "a/../../b"]
)
def test_paths_escaping_the_package_are_refused(name: str) -> None:
    files = entries(packed())
    files[name] = b"x"
    refused(rezip(files), "XDM_PATH")


def test_a_symlink_entry_is_refused() -> None:
    files = entries(packed())
    buffer = io.BytesIO(rezip(files))
    with zipfile.ZipFile(buffer, "a") as archive:
        info = zipfile.ZipInfo("IHE_XDM/link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    refused(buffer.getvalue(), "XDM_PATH")


def test_a_zip_bomb_is_refused_by_its_ratio() -> None:
    files = entries(packed())
    files["IHE_XDM/SUBSET01/BOMB.BIN"] = b"\0" * (20 * 1024 * 1024)
    refused(rezip(files), "XDM_ZIP_BOMB")


def test_a_header_that_lies_about_the_size_does_not_get_past_the_limit() -> None:
    files = entries(packed())
    files["IHE_XDM/SUBSET01/BIG.BIN"] = bytes(range(256)) * (8 * 1024)  # 2 MiB, incompressible-ish
    data = bytearray(rezip(files))
    # rewrite the central directory's uncompressed size of BIG.BIN to 100 bytes
    cd = data.rfind(b"PK\x01\x02", 0, data.find(b"PK\x05\x06"))
    while cd != -1 and b"BIG.BIN" not in data[cd + 46 : cd + 46 + 40]:
        cd = data.rfind(b"PK\x01\x02", 0, cd)
    data[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
    limits = xdm.XdmLimits(max_uncompressed_bytes=1024 * 1024)
    problems = xdm.check_package(bytes(data), limits)
    assert problems and problems[0].code in ("XDM_ZIP", "XDM_ZIP_BOMB")
    # and honestly declared, the same content is over the limit
    refused(rezip(files), "XDM_ZIP_BOMB", limits)


def test_too_many_entries_are_refused() -> None:
    files = entries(packed())
    files.update({f"EXTRA/{i}.TXT": b"x" for i in range(20)})
    refused(rezip(files), "XDM_ZIP_BOMB", xdm.XdmLimits(max_entries=10))


def test_malformed_metadata_is_refused() -> None:
    refused(with_metadata(lambda m: m[: len(m) // 2]), "XDM_XML")


def test_missing_metadata_is_refused() -> None:
    files = entries(packed())
    del files["IHE_XDM/SUBSET01/METADATA.XML"]
    refused(rezip(files), "XDM_MISSING")


def test_a_missing_document_is_refused() -> None:
    files = entries(packed())
    del files["IHE_XDM/SUBSET01/DOC0001.XML"]
    refused(rezip(files), "XDM_MISSING")


def test_entity_expansion_is_refused() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<lolz>&lol2;</lolz>"
    )
    refused(with_metadata(lambda m: laughs), "XDM_XML")


def test_not_a_zip_is_refused() -> None:
    refused(b"PK\x03\x04 not really", "XDM_ZIP")


def test_an_oversized_archive_is_refused() -> None:
    refused(packed(), "XDM_SIZE", xdm.XdmLimits(max_zip_bytes=100))


def test_check_lists_every_problem() -> None:
    def two_faults(m: str) -> str:
        m = m.replace(hashlib.sha1(PDF).hexdigest(), "0" * 40)  # noqa: S324
        return re.sub(r"<rim:Slot name=\"creationTime\">.*?</rim:Slot>", "", m, count=1)

    assert {"XDM_HASH", "XDM_MISSING"} <= codes(with_metadata(two_faults))


def test_the_xdm_attachment_is_found_in_a_message() -> None:
    message = EmailMessage()
    message["Subject"] = "XDM/1.0/DDM+CR DUPONT Marie 15/03/1979"
    message.set_content("Bonjour")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="lettre.pdf")
    message.add_attachment(packed(), maintype="application", subtype="zip", filename="IHE_XDM.zip")
    found = xdm.find_xdm_attachment(message)
    assert found is not None and xdm.read_package(found).patient_ins == INS
    plain = EmailMessage()
    plain.set_content("rien")
    assert xdm.find_xdm_attachment(plain) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_xdm_error(data: bytes) -> None:
    try:
        xdm.read_package(data)
    except xdm.XdmError:
        pass


BASE = packed()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_mutated_packages_only_ever_raise_xdm_error(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(BASE)
    for offset, value in mutations:
        data[offset] = value
    try:
        xdm.read_package(bytes(data))
    except xdm.XdmError:
        pass
