"""IHE XDM packages (`IHE_XDM.zip`): read them safely, check them, and build them.

Spec: IHE ITI TF-1 §16 (XDM) and ITI TF-2 §3.32 (Distribute Document Set on Media: a ZIP
holding README.TXT, INDEX.HTM and IHE_XDM/<subset>/METADATA.XML beside the documents);
ITI TF-3 §4.2 (ebRIM 3.0 SubmitObjectsRequest: ExtrinsicObject = DocumentEntry,
RegistryPackage = SubmissionSet, classifications and external identifiers named by the
scheme UUIDs of ITI TF-3 §4.2.5). ANS conventions (DMP / MSSanté "XDM"): one patient per
message, the patient identified by the matricule INS as CX
`matricule^^^&1.2.250.1.213.1.4.8&ISO^NH` (NIR) or OID 1.2.250.1.213.1.4.9 (NIA).

A package comes from outside the trust boundary, so every size is counted while reading
(never taken from the ZIP headers alone), every path is refused unless it is a plain
relative path, and the metadata is parsed with defusedxml (no DTD, no entities).
"""

from __future__ import annotations

import datetime
import email.message
import hashlib
import io
import stat
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as SafeET

from directory.ins import INS, NIA_OID, NIR_OID, InvalidINS

LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
HL7 = "urn:hl7-org:v3"

# ITI TF-3 §4.2.5.1 (DocumentEntry) and §4.2.5.2 (SubmissionSet): scheme UUIDs.
DOCUMENT_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"  # stable entry
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
OBJECT_REF_CLASSIFICATION = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
)

ATTACHMENT_NAME = "IHE_XDM.zip"
METADATA_NAME = "METADATA.XML"
_INS_OIDS = (NIR_OID, NIA_OID)

# Codes written by `pack` (ANS CI-SIS jeux de valeurs; IHE format codes).
CISIS_CLASS_SCHEME = "1.2.250.1.213.1.1.4.1"  # JDV_J06-XdsClassCode-CISIS
CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"  # HL7 Confidentiality
IHE_FORMAT_SCHEME = "1.3.6.1.4.1.19376.1.2.3"
CISIS_FORMAT_SCHEME = "1.2.250.1.213.1.1.4.2.282"  # TRE_A06-FormatCodeComplementaire
LOINC = "2.16.840.1.113883.6.1"
HYGIE_SOURCE_ID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_DNS, "hygie.xdm.source").int)


class XdmError(Exception):
    """A package refused: `code` for programs, `label` for people (MDN code^label)."""

    def __init__(self, code: str, label: str) -> None:
        super().__init__(f"{code}^{label}")
        self.code = code
        self.label = label

    def __str__(self) -> str:
        return f"{self.code}^{self.label}"


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class XdmDocument:
    entry_uuid: str
    unique_id: str
    patient_ins: str
    patient_oid: str
    class_code: Code
    type_code: Code
    confidentiality_code: Code
    format_code: Code | None
    author: str
    creation_time: str
    mime_type: str
    hash: str
    size: int
    uri: str
    title: str
    content: bytes = field(repr=False)
    confidentiality_codes: tuple[Code, ...] = ()


@dataclass(frozen=True)
class XdmSubmission:
    unique_id: str
    source_id: str
    submission_time: str
    patient_ins: str
    patient_oid: str
    author: str


@dataclass(frozen=True)
class XdmPackage:
    submission: XdmSubmission
    documents: tuple[XdmDocument, ...]
    metadata_xml: bytes = field(repr=False)

    @property
    def patient_ins(self) -> str:
        return self.submission.patient_ins

    @property
    def patient_oid(self) -> str:
        return self.submission.patient_oid


@dataclass(frozen=True)
class XdmLimits:
    max_zip_bytes: int = 25 * 1024 * 1024
    max_uncompressed_bytes: int = 100 * 1024 * 1024
    max_ratio: int = 100
    max_entries: int = 256
    #: the ratio is judged only once an entry has produced this much (tiny files compress well)
    ratio_floor_bytes: int = 1024 * 1024


_CHUNK = 64 * 1024


class _Fatal(Exception):
    """Stops the examination: the package cannot be looked at any further."""

    def __init__(self, error: XdmError) -> None:
        self.error = error


def _safe_name(name: str) -> str | None:
    """Why `name` is not a plain relative path, or None if it is."""
    if "\\" in name or "\x00" in name:
        return "contient une barre oblique inverse ou un caractère nul"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "chemin absolu"
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "chemin avec .. ou composant vide"
    return None


def _read_entries(data: bytes, limits: XdmLimits) -> dict[str, bytes]:
    """Every file of the ZIP, by upper-cased name, sizes counted while decompressing."""
    if len(data) > limits.max_zip_bytes:
        raise _Fatal(XdmError("XDM_SIZE", f"archive de {len(data)} octets, au-delà de la limite"))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
    ) as exc:
        raise _Fatal(XdmError("XDM_ZIP", f"archive ZIP illisible ({type(exc).__name__})")) from None
    if len(infos) > limits.max_entries:
        raise _Fatal(XdmError("XDM_ZIP_BOMB", f"{len(infos)} entrées, au-delà de la limite"))
    declared = 0
    seen: set[str] = set()
    for info in infos:
        reason = _safe_name(info.filename)
        if reason:
            raise _Fatal(XdmError("XDM_PATH", f"entrée refusée : {reason}"))
        if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
            raise _Fatal(XdmError("XDM_PATH", "entrée refusée : lien symbolique"))
        if info.flag_bits & 0x1:
            raise _Fatal(XdmError("XDM_ZIP", "entrée chiffrée"))
        key = info.filename.upper()
        if key in seen:
            raise _Fatal(XdmError("XDM_PATH", "deux entrées portent le même nom"))
        seen.add(key)
        declared += info.file_size
    if declared > limits.max_uncompressed_bytes:
        raise _Fatal(XdmError("XDM_ZIP_BOMB", "taille décompressée annoncée au-delà de la limite"))
    entries: dict[str, bytes] = {}
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        chunks: list[bytes] = []
        produced = 0
        try:
            with archive.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    produced += len(chunk)
                    total += len(chunk)
                    if total > limits.max_uncompressed_bytes:
                        raise _Fatal(
                            XdmError("XDM_ZIP_BOMB", "taille décompressée au-delà de la limite")
                        )
                    if produced > limits.ratio_floor_bytes and produced > limits.max_ratio * max(
                        info.compress_size, 1
                    ):
                        raise _Fatal(XdmError("XDM_ZIP_BOMB", "taux de compression suspect"))
                    chunks.append(chunk)
        except _Fatal:
            raise
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
            zlib.error,
            IndexError,
            KeyError,
            UnicodeDecodeError,
        ) as exc:
            raise _Fatal(XdmError("XDM_ZIP", f"entrée illisible ({type(exc).__name__})")) from None
        if produced != info.file_size:
            raise _Fatal(XdmError("XDM_ZIP", "taille d'entrée différente de celle annoncée"))
        entries[info.filename.upper()] = b"".join(chunks)
    return entries


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _slot(element: ET.Element, name: str) -> list[str]:
    for slot in element.findall(f"{{{RIM}}}Slot"):
        if slot.get("name") == name:
            return [v.text or "" for v in slot.iterfind(f"{{{RIM}}}ValueList/{{{RIM}}}Value")]
    return []


def _name(element: ET.Element) -> str:
    found = element.find(f"{{{RIM}}}Name/{{{RIM}}}LocalizedString")
    return (found.get("value") or "") if found is not None else ""


class _Examiner:
    def __init__(self) -> None:
        self.problems: list[XdmError] = []

    def problem(self, code: str, label: str) -> None:
        self.problems.append(XdmError(code, label))

    def external_ids(self, element: ET.Element, scheme: str) -> list[str]:
        return [
            e.get("value") or ""
            for e in element.iter(f"{{{RIM}}}ExternalIdentifier")
            if e.get("identificationScheme") == scheme
        ]

    def one_id(self, element: ET.Element, scheme: str, what: str) -> str:
        values = self.external_ids(element, scheme)
        if len(values) != 1:
            self.problem("XDM_MISSING", f"{what} absent ou répété ({len(values)})")
            return values[0] if values else ""
        return values[0]

    def codes(
        self, element: ET.Element, scheme: str, classifications: list[ET.Element]
    ) -> list[Code]:
        owner = element.get("id")
        found = []
        for c in [*element.findall(f"{{{RIM}}}Classification"), *classifications]:
            if c.get("classificationScheme") != scheme:
                continue
            if c.get("classifiedObject") not in (None, owner):
                continue
            values = _slot(c, "codingScheme")
            found.append(
                Code(c.get("nodeRepresentation") or "", values[0] if values else "", _name(c))
            )
        return found

    def required_code(
        self, element: ET.Element, scheme: str, what: str, extra: list[ET.Element]
    ) -> Code:
        found = self.codes(element, scheme, extra)
        if not found or not found[0].code:
            self.problem("XDM_MISSING", f"{what} absent")
            return Code("", "", "")
        return found[0]

    def author(self, element: ET.Element, scheme: str) -> str:
        for c in element.findall(f"{{{RIM}}}Classification"):
            if c.get("classificationScheme") == scheme:
                persons = _slot(c, "authorPerson") or _slot(c, "authorInstitution")
                return persons[0] if persons else ""
        return ""

    def patient(self, value: str, what: str) -> tuple[str, str]:
        """(matricule, oid) from a CX patient id; ANS: the INS as NIR or NIA."""
        components = value.split("^")
        authority = components[3].split("&") if len(components) > 3 else []
        if (
            len(components) < 4
            or components[1:3] != ["", ""]
            or len(authority) != 3
            or authority[2] != "ISO"
            or authority[1] not in _INS_OIDS
        ):
            self.problem(
                "XDM_INS", f"{what} : identifiant patient qui n'est pas un INS (NIR ou NIA)"
            )
            return value, ""
        try:
            INS(components[0], authority[1])
        except InvalidINS as exc:
            self.problem("XDM_INS", f"{what} : INS invalide ({exc.reason})")
        return components[0], authority[1]


def _examine(data: bytes, limits: XdmLimits) -> tuple[XdmPackage | None, list[XdmError]]:
    examiner = _Examiner()
    try:
        entries = _read_entries(data, limits)
    except _Fatal as fatal:
        return None, [fatal.error]
    metadata_keys = [
        k
        for k in entries
        if k.startswith("IHE_XDM/") and k.count("/") == 2 and k.endswith("/" + METADATA_NAME)
    ]
    if not metadata_keys:
        return None, [XdmError("XDM_MISSING", "IHE_XDM/SUBSET01/METADATA.XML absent")]
    if len(metadata_keys) > 1:
        return None, [XdmError("XDM_METADATA", "plusieurs lots (SUBSET) dans un même message")]
    metadata_key = metadata_keys[0]
    subset = metadata_key.rsplit("/", 1)[0]
    metadata_xml = entries[metadata_key]
    try:
        root = SafeET.fromstring(metadata_xml, forbid_dtd=True)
    except Exception as exc:
        return None, [
            XdmError(
                "XDM_XML", f"METADATA.XML n'est pas un XML sûr et bien formé ({type(exc).__name__})"
            )
        ]
    if root.tag != f"{{{LCM}}}SubmitObjectsRequest":
        return None, [XdmError("XDM_XML", "METADATA.XML n'est pas un lcm:SubmitObjectsRequest")]
    objects = root.find(f"{{{RIM}}}RegistryObjectList")
    if objects is None:
        return None, [XdmError("XDM_XML", "RegistryObjectList absent")]
    loose = objects.findall(f"{{{RIM}}}Classification")
    packages = objects.findall(f"{{{RIM}}}RegistryPackage")
    submission_ids = {
        c.get("classifiedObject")
        for c in [*loose, *(c for p in packages for c in p.findall(f"{{{RIM}}}Classification"))]
        if c.get("classificationNode") == SUBMISSION_SET_NODE
    }
    sets = [p for p in packages if p.get("id") in submission_ids]
    if len(sets) != 1:
        return None, [XdmError("XDM_METADATA", f"{len(sets)} lots de soumission au lieu d'un")]
    ss = sets[0]
    patients: set[tuple[str, str]] = set()

    ss_patients = examiner.external_ids(ss, SS_PATIENT_ID)
    if len(ss_patients) > 1:
        examiner.problem("XDM_TWO_PATIENTS", "le lot de soumission nomme plusieurs patients")
    if not ss_patients:
        examiner.problem("XDM_MISSING", "patient du lot de soumission absent")
    ss_patient = ("", "")
    for value in ss_patients:
        ss_patient = examiner.patient(value, "lot de soumission")
        patients.add(ss_patient)
    times = _slot(ss, "submissionTime")
    submission = XdmSubmission(
        unique_id=examiner.one_id(ss, SS_UNIQUE_ID, "XDSSubmissionSet.uniqueId"),
        source_id=examiner.one_id(ss, SS_SOURCE_ID, "XDSSubmissionSet.sourceId"),
        submission_time=times[0] if times else "",
        patient_ins=ss_patient[0],
        patient_oid=ss_patient[1],
        author=examiner.author(ss, SS_AUTHOR),
    )
    members = {
        a.get("targetObject")
        for a in objects.findall(f"{{{RIM}}}Association")
        if a.get("associationType") == HAS_MEMBER and a.get("sourceObject") == ss.get("id")
    }
    documents = []
    entries_elements = objects.findall(f"{{{RIM}}}ExtrinsicObject")
    if not entries_elements:
        examiner.problem("XDM_MISSING", "aucun document dans le lot")
    for number, entry in enumerate(entries_elements, start=1):
        what = f"document {number}"
        entry_id = entry.get("id") or ""
        if entry.get("objectType") != DOCUMENT_ENTRY_TYPE:
            examiner.problem("XDM_METADATA", f"{what} : objectType inconnu")
        if entry_id not in members:
            examiner.problem("XDM_METADATA", f"{what} : pas membre du lot de soumission")
        ids = examiner.external_ids(entry, DE_PATIENT_ID)
        patient = ("", "")
        if len(ids) > 1:
            examiner.problem("XDM_TWO_PATIENTS", f"{what} : plusieurs patients")
        if not ids:
            examiner.problem("XDM_MISSING", f"{what} : patient absent")
        for value in ids:
            patient = examiner.patient(value, what)
            patients.add(patient)
        uri_values = _slot(entry, "URI")
        uri = "".join(v.split("|", 1)[1] if "|" in v[:4] else v for v in uri_values)
        content = b""
        if not uri:
            examiner.problem("XDM_MISSING", f"{what} : URI absent")
        elif _safe_name(uri) or ":" in uri:
            examiner.problem("XDM_PATH", f"{what} : URI refusé")
        elif f"{subset}/{uri}".upper() not in entries:
            examiner.problem("XDM_MISSING", f"{what} : fichier {uri} absent de l'archive")
        else:
            content = entries[f"{subset}/{uri}".upper()]
        hashes, sizes = _slot(entry, "hash"), _slot(entry, "size")
        declared_hash = hashes[0].strip().lower() if hashes else ""
        declared_size = int(sizes[0]) if sizes and sizes[0].strip().isdigit() else -1
        if content or uri:
            if declared_hash != hashlib.sha1(content).hexdigest():  # noqa: S324 - ITI TF-3 hash is SHA-1
                examiner.problem("XDM_HASH", f"{what} : empreinte SHA-1 différente du fichier")
            if declared_size != len(content):
                examiner.problem("XDM_SIZE", f"{what} : taille différente du fichier")
        unique = examiner.one_id(entry, DE_UNIQUE_ID, f"{what} : XDSDocumentEntry.uniqueId")
        class_code = examiner.required_code(entry, DE_CLASS_CODE, f"{what} : classCode", loose)
        type_code = examiner.required_code(entry, DE_TYPE_CODE, f"{what} : typeCode", loose)
        confidentiality = examiner.codes(entry, DE_CONFIDENTIALITY_CODE, loose)
        if not confidentiality:
            examiner.problem("XDM_MISSING", f"{what} : confidentialityCode absent")
        formats = examiner.codes(entry, DE_FORMAT_CODE, loose)
        created = _slot(entry, "creationTime")
        if not created:
            examiner.problem("XDM_MISSING", f"{what} : creationTime absent")
        mime = entry.get("mimeType") or ""
        if not mime:
            examiner.problem("XDM_MISSING", f"{what} : mimeType absent")
        documents.append(
            XdmDocument(
                entry_uuid=entry_id,
                unique_id=unique,
                patient_ins=patient[0],
                patient_oid=patient[1],
                class_code=class_code,
                type_code=type_code,
                confidentiality_code=confidentiality[0] if confidentiality else Code("", "", ""),
                format_code=formats[0] if formats else None,
                author=examiner.author(entry, DE_AUTHOR),
                creation_time=created[0] if created else "",
                mime_type=mime,
                hash=declared_hash,
                size=declared_size,
                uri=uri,
                title=_name(entry),
                content=content,
                confidentiality_codes=tuple(confidentiality),
            )
        )
    if len(patients) > 1:
        examiner.problem("XDM_TWO_PATIENTS", "le message concerne plusieurs patients")
    package = XdmPackage(submission, tuple(documents), metadata_xml)
    return package, examiner.problems


def read_package(data: bytes, limits: XdmLimits | None = None) -> XdmPackage:
    """The package in `data`; raises XdmError (the first problem found) if it is not valid."""
    package, problems = _examine(data, limits or XdmLimits())
    if problems:
        raise problems[0]
    assert package is not None
    return package


def check_package(data: bytes, limits: XdmLimits | None = None) -> list[XdmError]:
    """Every problem found in the package, [] if it is valid."""
    return _examine(data, limits or XdmLimits())[1]


def find_xdm_attachment(message: email.message.EmailMessage) -> bytes | None:
    """The decoded `IHE_XDM.zip` part of `message` (ANS MSSanté convention), if any."""
    for part in message.walk():
        if part.is_multipart():
            continue
        if (part.get_filename() or "").strip().lower() == ATTACHMENT_NAME.lower():
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


# -- building ---------------------------------------------------------------------


def _dtm(moment: datetime.datetime) -> str:
    """ITI TF-3 §4.2.3.1.7: DTM in UTC, YYYYMMDDHHMMSS."""
    return moment.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%S")


def _uuid_oid() -> str:
    return "2.25." + str(uuid.uuid4().int)  # ISO/IEC 9834-8 UUID-derived OID


@dataclass
class _Described:
    name: str
    content: bytes
    mime: str
    title: str
    unique_id: str
    type_code: Code
    format_code: Code | None
    confidentiality: Code
    creation_time: str


def _describe(number: int, filename: str, content: bytes, now: datetime.datetime) -> _Described:
    normal = Code("N", CONFIDENTIALITY_SCHEME, "Normal")
    if content.startswith(b"%PDF-"):
        return _Described(
            f"DOC{number:04d}.PDF",
            content,
            "application/pdf",
            filename,
            _uuid_oid(),
            Code("11488-4", LOINC, "Note de consultation"),
            None,
            normal,
            _dtm(now),
        )
    try:
        cda = SafeET.fromstring(content, forbid_dtd=True)
    except Exception:
        raise XdmError("XDM_FORMAT", f"{filename} : ni CDA R2 ni PDF") from None
    if cda.tag != f"{{{HL7}}}ClinicalDocument":
        raise XdmError("XDM_FORMAT", f"{filename} : ni CDA R2 ni PDF")
    code = cda.find(f"{{{HL7}}}code")
    title = cda.findtext(f"{{{HL7}}}title") or filename
    ident = cda.find(f"{{{HL7}}}id")
    unique = _uuid_oid()
    if ident is not None and ident.get("root"):
        root, ext = ident.get("root") or "", ident.get("extension")
        unique = f"{root}^{ext}" if ext else root  # ITI TF-3 §4.2.3.2.26
    effective = cda.find(f"{{{HL7}}}effectiveTime")
    created = _dtm(now)
    if effective is not None and (value := effective.get("value")):
        digits = value[:14]
        if len(value) > 14 and value[14] in "+-":
            moment = datetime.datetime.strptime(value[:14] + value[14:19], "%Y%m%d%H%M%S%z")
            digits = _dtm(moment)
        created = digits
    confidentiality = cda.find(f"{{{HL7}}}confidentialityCode")
    body = cda.find(f"{{{HL7}}}component/{{{HL7}}}nonXMLBody/{{{HL7}}}text")
    if body is not None:
        media = body.get("mediaType", "")
        fmt = {
            "application/pdf": "urn:ihe:iti:xds-sd:pdf:2008",
            "text/plain": "urn:ihe:iti:xds-sd:text:2008",
        }.get(media, "urn:ihe:iti:xds-sd:pdf:2008")
        format_code = Code(fmt, IHE_FORMAT_SCHEME, "Document à corps non structuré")
    else:
        format_code = Code("urn:asip:ci-sis:2010", CISIS_FORMAT_SCHEME, "Document CI-SIS")
    return _Described(
        f"DOC{number:04d}.XML",
        content,
        "text/xml",
        title,
        unique,
        Code(code.get("code", ""), code.get("codeSystem", LOINC), code.get("displayName", ""))
        if code is not None and code.get("code")
        else Code("11488-4", LOINC, "Note de consultation"),
        format_code,
        Code(
            confidentiality.get("code", "N"),
            confidentiality.get("codeSystem", CONFIDENTIALITY_SCHEME),
            confidentiality.get("displayName", "Normal"),
        )
        if confidentiality is not None
        else normal,
        created,
    )


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{RIM}}}{tag}", attributes)


def _add_slot(parent: ET.Element, name: str, *values: str) -> None:
    slot = _sub(parent, "Slot", name=name)
    value_list = _sub(slot, "ValueList")
    for value in values:
        _sub(value_list, "Value").text = value


def _add_name(parent: ET.Element, value: str) -> None:
    _sub(_sub(parent, "Name"), "LocalizedString", value=value, charset="UTF-8")


def _add_classification(
    parent: ET.Element, scheme: str, owner: str, node: str, n: list[int]
) -> ET.Element:
    n[0] += 1
    return _sub(
        parent,
        "Classification",
        id=f"cl{n[0]:02d}",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation=node,
        objectType=OBJECT_REF_CLASSIFICATION,
    )


def _add_code(parent: ET.Element, scheme: str, owner: str, code: Code, n: list[int]) -> None:
    element = _add_classification(parent, scheme, owner, code.code, n)
    _add_slot(element, "codingScheme", code.scheme)
    _add_name(element, code.display)


def _add_author(parent: ET.Element, scheme: str, owner: str, author: str, n: list[int]) -> None:
    element = _add_classification(parent, scheme, owner, "", n)
    _add_slot(element, "authorPerson", author)


def _add_id(
    parent: ET.Element, scheme: str, owner: str, value: str, name: str, n: list[int]
) -> None:
    n[0] += 1
    element = _sub(
        parent,
        "ExternalIdentifier",
        id=f"ei{n[0]:02d}",
        identificationScheme=scheme,
        registryObject=owner,
        value=value,
    )
    _add_name(element, name)


def pack(
    documents: Sequence[tuple[str, bytes]],
    *,
    ins: str,
    family: str,
    given: str,
    birthdate: datetime.date,
    sex: str,
    author: str = "Hygie",
    now: datetime.datetime | None = None,
    oid: str = NIR_OID,
) -> bytes:
    """An `IHE_XDM.zip` for one patient holding `documents` ((file name, bytes): CDA R2 or PDF)."""
    from directory.ins import parse_ins

    try:
        patient = parse_ins(ins, oid=oid, sex=sex, birthdate=birthdate)
    except (InvalidINS, ValueError) as exc:
        raise XdmError("XDM_INS", f"INS refusé : {exc}") from None
    if not documents:
        raise XdmError("XDM_MISSING", "aucun document à empaqueter")
    moment = now or datetime.datetime.now(datetime.UTC)
    described = [
        _describe(i, name, content, moment) for i, (name, content) in enumerate(documents, 1)
    ]
    # ANS CI-SIS: the INS as CX with assigning authority OID and type NH.
    cx = f"{patient.matricule}^^^&{patient.oid}&ISO^NH"
    n = [0]
    root = ET.Element(f"{{{LCM}}}SubmitObjectsRequest")
    objects = _sub(root, "RegistryObjectList")
    for number, doc in enumerate(described, 1):
        owner = f"Document{number:02d}"
        entry = _sub(
            objects, "ExtrinsicObject", id=owner, mimeType=doc.mime, objectType=DOCUMENT_ENTRY_TYPE
        )
        _add_slot(entry, "creationTime", doc.creation_time)
        _add_slot(entry, "languageCode", "fr-FR")
        _add_slot(entry, "sourcePatientId", cx)
        _add_slot(
            entry,
            "sourcePatientInfo",
            f"PID-3|{cx}",
            f"PID-5|{family}^{given}^^^^^L",
            f"PID-7|{birthdate:%Y%m%d}",
            f"PID-8|{sex.upper()}",
        )
        _add_slot(entry, "hash", hashlib.sha1(doc.content).hexdigest())  # noqa: S324 - ITI TF-3
        _add_slot(entry, "size", str(len(doc.content)))
        _add_slot(entry, "URI", doc.name)
        _add_name(entry, doc.title)
        _add_author(entry, DE_AUTHOR, owner, author, n)
        _add_code(entry, DE_CLASS_CODE, owner, Code("10", CISIS_CLASS_SCHEME, "Compte rendu"), n)
        _add_code(entry, DE_CONFIDENTIALITY_CODE, owner, doc.confidentiality, n)
        if doc.format_code:
            _add_code(entry, DE_FORMAT_CODE, owner, doc.format_code, n)
        _add_code(entry, DE_TYPE_CODE, owner, doc.type_code, n)
        _add_id(entry, DE_PATIENT_ID, owner, cx, "XDSDocumentEntry.patientId", n)
        _add_id(entry, DE_UNIQUE_ID, owner, doc.unique_id, "XDSDocumentEntry.uniqueId", n)
    ss = _sub(objects, "RegistryPackage", id="SubmissionSet01")
    _add_slot(ss, "submissionTime", _dtm(moment))
    _add_name(ss, f"{family} {given}")
    _add_author(ss, SS_AUTHOR, "SubmissionSet01", author, n)
    _add_id(ss, SS_UNIQUE_ID, "SubmissionSet01", _uuid_oid(), "XDSSubmissionSet.uniqueId", n)
    _add_id(ss, SS_SOURCE_ID, "SubmissionSet01", HYGIE_SOURCE_ID, "XDSSubmissionSet.sourceId", n)
    _add_id(ss, SS_PATIENT_ID, "SubmissionSet01", cx, "XDSSubmissionSet.patientId", n)
    _sub(
        objects,
        "Classification",
        id="clSS",
        classificationNode=SUBMISSION_SET_NODE,
        classifiedObject="SubmissionSet01",
    )
    for number in range(1, len(described) + 1):
        _sub(
            objects,
            "Association",
            id=f"as{number:02d}",
            associationType=HAS_MEMBER,
            sourceObject="SubmissionSet01",
            targetObject=f"Document{number:02d}",
        )
        _add_slot(objects[-1], "SubmissionSetStatus", "Original")
    ET.register_namespace("lcm", LCM)
    ET.register_namespace("rim", RIM)
    metadata = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    stamp = moment.astimezone(datetime.UTC).timetuple()[:6]
    buffer = io.BytesIO()
    listing = "".join(
        f'<li><a href="IHE_XDM/SUBSET01/{d.name}">{_html(d.title)}</a></li>' for d in described
    )
    files = [
        (
            "README.TXT",
            b"Hygie - paquet IHE XDM (ITI TF-1 16, ITI TF-2 3.32).\r\n"
            b"Contenu : IHE_XDM/SUBSET01/METADATA.XML et les documents.\r\n",
        ),
        ("INDEX.HTM", f"<html><body><ul>{listing}</ul></body></html>".encode()),
        ("IHE_XDM/SUBSET01/METADATA.XML", metadata),
        *((f"IHE_XDM/SUBSET01/{d.name}", d.content) for d in described),
    ]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=stamp), content, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
