"""The national operator whitelist (``ListeBlancheMSSante``): parse, check and write it.

The whitelist names the domains of the other operators of the trust space and, for
each, the subject DN of the TLS certificate its servers present. A domain may be
listed several times, once per certificate. This module only converts between the
XML document and :class:`Whitelist`; deciding whom to trust is the policy's job.

The document is untrusted input, so it is parsed with defusedxml and any DTD is
refused outright: no external entities (XXE), no entity expansion (billion laughs).

It also holds the two small name parsers the whitelist needs and the rest of the
directory shares: :func:`normalise_domain` and RFC 4514 DN strings
(:func:`parse_dn`, :func:`dn_matches`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

NAMESPACE = "https://listeblanche.mssante.fr/schema"

_ROOT = "ListeBlancheMSSante"
_GENERATED = "DateDeGeneration"
_DOMAINS = "ListeDomaines"
_DOMAIN = "Domaine"
_NAME = "Nom"
_DESCRIPTION = "Description"
_CERT_DN = "DNCertificatOperateur"
_RESPONSIBLE = "ResponsableContact"
_SUPPORT = "SupportContact"
_UPDATED = "DateMAJ"
_DOMAIN_CHILDREN = (_NAME, _DESCRIPTION, _CERT_DN, _RESPONSIBLE, _SUPPORT, _UPDATED)


class WhitelistError(ValueError):
    """The whitelist document is unusable; the message says what and where."""


# --- Domain names -----------------------------------------------------------------

# RFC 1035 §2.3.1 (as relaxed by RFC 1123 §2.1): letters, digits, hyphens; no hyphen
# at either end of a label.
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_MAX_LABEL = 63  # RFC 1035 §2.3.4
_MAX_NAME = 253  # RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written


def normalise_domain(name: str) -> str:
    """Return ``name`` lower-cased and in ASCII (IDNA A-labels), or raise ValueError.

    The name must be fully qualified (at least two labels), without a trailing dot.
    Non-ASCII names are converted with Python's ``idna`` codec (IDNA 2003, RFC 3490).
    """
    lowered = name.strip().lower()
    if not lowered:
        raise ValueError("the domain name is empty")
    if lowered.isascii():
        ascii_name = lowered
    else:
        try:
            ascii_name = lowered.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"cannot convert {name!r} to an IDNA name: {exc}") from None
    if len(ascii_name) > _MAX_NAME:
        raise ValueError(f"longer than {_MAX_NAME} characters")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError("not fully qualified (needs at least two labels, e.g. 'example.fr')")
    for label in labels:
        if not label:
            raise ValueError("has an empty label (a leading, trailing or doubled dot)")
        if len(label) > _MAX_LABEL:
            raise ValueError(f"label {label[:20]!r}… is longer than {_MAX_LABEL} characters")
        if not _LDH_LABEL.fullmatch(label):
            raise ValueError(f"label {label!r} may only hold letters, digits and inner hyphens")
    # RFC 3696 §2: a top-level domain is never all-numeric (that would be an IP address).
    if labels[-1].isdigit():
        raise ValueError("the top-level label is all digits")
    return ascii_name


# --- Distinguished names: RFC 4514 ------------------------------------------------

_AVA = tuple[str, str]
_RDN = tuple[_AVA, ...]

# RFC 4514 §3: attributeType = descr / numericoid (RFC 4512 §1.4).
_DESCR = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_NUMERICOID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")
# RFC 4514 §3: characters a value may carry only when escaped with a backslash.
_ESCAPABLE = frozenset('"+,;<>\\ #=')
_MUST_ESCAPE = frozenset('"+,;<>\\\x00')
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 4514 §3 table: the short names every implementation must know, so that
# "2.5.4.3=x" and "CN=x" compare equal.
_OID_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}


def _read_value(dn: str, pos: int) -> tuple[str, int]:
    """Read one attributeValue (RFC 4514 §3) from ``pos``; return it and the stop index.

    Unescaped spaces around the value are dropped (RFC 4514 §3 requires leading and
    trailing spaces of a value to be escaped, so they are never part of it).
    """
    n = len(dn)
    while pos < n and dn[pos] == " ":
        pos += 1
    if pos < n and dn[pos] == "#":
        # RFC 4514 §3: hexstring = SHARP 1*hexpair, the BER encoding of the value.
        end = pos + 1
        while end < n and dn[end] in _HEX:
            end += 1
        digits = dn[pos + 1 : end]
        if not digits or len(digits) % 2:
            raise ValueError(f"bad hex-encoded value at position {pos}")
        stop = end
        while stop < n and dn[stop] == " ":
            stop += 1
        if stop < n and dn[stop] not in ",+":
            raise ValueError(f"unexpected {dn[stop]!r} after hex-encoded value at {stop}")
        return "#" + digits.lower(), stop
    raw = bytearray()
    kept = 0  # length of raw up to the last character that is not an unescaped space
    while pos < n:
        char = dn[pos]
        if char in ",+":
            break
        if char == "\\":
            # RFC 4514 §3: pair = ESC ( ESC / special / hexpair )
            nxt = dn[pos + 1 : pos + 2]
            if nxt and nxt in _ESCAPABLE:
                raw += nxt.encode()
                pos += 2
            elif len(dn) >= pos + 3 and dn[pos + 1] in _HEX and dn[pos + 2] in _HEX:
                raw.append(int(dn[pos + 1 : pos + 3], 16))
                pos += 3
            else:
                raise ValueError(f"bad escape '\\{nxt}' at position {pos}")
            kept = len(raw)
            continue
        if char in _MUST_ESCAPE:
            raise ValueError(f"{char!r} at position {pos} must be escaped with '\\'")
        raw += char.encode()
        if char != " ":
            kept = len(raw)
        pos += 1
    try:
        value = bytes(raw[:kept]).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("escaped bytes in a value are not valid UTF-8") from None
    return value, pos


def _parse_rdns(dn: str) -> tuple[_RDN, ...]:
    """Split an RFC 4514 string into RDNs, each a tuple of (TYPE, value) pairs."""
    # RFC 4514 §3: distinguishedName = [ relativeDistinguishedName
    #     *( COMMA relativeDistinguishedName ) ]; the empty string is the empty DN.
    if not dn.strip():
        return ()
    rdns: list[_RDN] = []
    current: list[_AVA] = []
    pos, n = 0, len(dn)
    while True:
        # attributeTypeAndValue = attributeType EQUALS attributeValue
        equals = dn.find("=", pos)
        if equals < 0:
            raise ValueError(f"missing '=' after position {pos}")
        attr = dn[pos:equals].strip()
        if _DESCR.fullmatch(attr):
            attr = attr.upper()
        elif _NUMERICOID.fullmatch(attr):
            attr = _OID_NAMES.get(attr, attr)
        else:
            raise ValueError(f"bad attribute type {attr!r} at position {pos}")
        value, pos = _read_value(dn, equals + 1)
        current.append((attr, value))
        if pos >= n:
            rdns.append(tuple(current))
            return tuple(rdns)
        # relativeDistinguishedName = attributeTypeAndValue *( PLUS attributeTypeAndValue )
        if dn[pos] == ",":
            rdns.append(tuple(current))
            current = []
        pos += 1


def parse_dn(dn: str) -> tuple[tuple[str, str], ...]:
    """Split an RFC 4514 DN string into (ATTRIBUTE-TYPE, value) pairs, in written order.

    Attribute types are upper-cased (well-known OIDs become their short names);
    escapes (``\\,``, ``\\+``, ``\\2C``…) are decoded; unescaped spaces around types
    and values are dropped. The AVAs of a multi-valued RDN (``CN=a+UID=b``) come out
    one after the other; :func:`dn_matches` keeps them grouped. Raises ValueError.
    """
    return tuple(ava for rdn in _parse_rdns(dn) for ava in rdn)


def _fold(value: str) -> str:
    return " ".join(value.split()).casefold()


def _comparable(dn: str) -> tuple[tuple[_AVA, ...], ...]:
    # X.501: the AVAs of one RDN form a set, so their written order does not count;
    # the order of the RDNs does.
    return tuple(
        tuple(sorted((attr, _fold(value)) for attr, value in rdn)) for rdn in _parse_rdns(dn)
    )


def dn_matches(a: str, b: str) -> bool:
    """Whether two RFC 4514 DN strings name the same subject.

    RDNs are compared in order; attribute types case-insensitively; values
    case-insensitively after folding runs of whitespace. A malformed or empty DN
    matches nothing, so a peer can never be trusted through an unreadable DN.
    """
    try:
        left, right = _comparable(a), _comparable(b)
    except ValueError:
        return False
    return bool(left) and left == right


def normalise_dn_whitespace(dn: str) -> str:
    """Strip the DN and fold every run of whitespace into one space."""
    return " ".join(dn.split())


# --- The whitelist ----------------------------------------------------------------

# XML 1.0 §2.2 Char, less CR: XML parsers turn a raw CR into LF, so text holding one
# could not be written and read back unchanged.
_XML_TEXT = re.compile("[\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def _check_text(field: str, value: str) -> None:
    if value != value.strip():
        raise ValueError(f"{field} has leading or trailing whitespace")
    if not _XML_TEXT.fullmatch(value):
        raise ValueError(f"{field} holds a character XML cannot carry (control or CR)")


@dataclass(frozen=True)
class WhitelistEntry:
    """One ``Domaine`` element: a domain and one certificate DN of its operator."""

    domain: str
    description: str
    certificate_dn: str
    responsible_contact: str
    support_contact: str
    updated_at: datetime | None

    def __post_init__(self) -> None:
        # The invariants below make write_whitelist/parse_whitelist a faithful round trip.
        if normalise_domain(self.domain) != self.domain:
            raise ValueError(f"domain {self.domain!r} is not normalised")
        if normalise_dn_whitespace(self.certificate_dn) != self.certificate_dn:
            raise ValueError("certificate_dn has unnormalised whitespace")
        if not parse_dn(self.certificate_dn):
            raise ValueError("certificate_dn is empty")
        _check_text("description", self.description)
        _check_text("responsible_contact", self.responsible_contact)
        _check_text("support_contact", self.support_contact)


@dataclass(frozen=True)
class Whitelist:
    """A whole ``ListeBlancheMSSante`` document."""

    generated_at: datetime
    entries: tuple[WhitelistEntry, ...]

    def domains(self) -> dict[str, tuple[str, ...]]:
        """Map each domain to its certificate DNs, sorted and without duplicates."""
        collected: dict[str, set[str]] = {}
        for entry in self.entries:
            collected.setdefault(entry.domain, set()).add(entry.certificate_dn)
        return {domain: tuple(sorted(dns)) for domain, dns in collected.items()}


def _qualified(local: str) -> str:
    return f"{{{NAMESPACE}}}{local}"


def _describe(tag: str) -> str:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return f"<{local}> (namespace {namespace})"
    return f"<{tag}> (no namespace)"


def _children(parent: ET.Element, allowed: tuple[str, ...], where: str) -> dict[str, ET.Element]:
    """Index the children of ``parent`` by local name; refuse unknown or repeated ones."""
    found: dict[str, ET.Element] = {}
    for child in parent:
        local = next((name for name in allowed if child.tag == _qualified(name)), None)
        if local is None:
            raise WhitelistError(
                f"{where}: unexpected element {_describe(child.tag)}; "
                f"expected one of {', '.join(allowed)} in namespace {NAMESPACE}"
            )
        if local in found:
            raise WhitelistError(f"{where}: <{local}> appears more than once")
        found[local] = child
    return found


def _text(element: ET.Element | None) -> str:
    if element is None or element.text is None:
        return ""
    # A CR can only arrive as "&#13;"; fold it like a raw one so writing is faithful.
    return element.text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _datetime(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise WhitelistError(
            f"{what} {text!r} is not an ISO 8601 date-time (e.g. 2026-11-23T00:00:00)"
        ) from None


def _parse_entry(element: ET.Element, index: int) -> WhitelistEntry:
    where = f"Domaine #{index}"
    fields = _children(element, _DOMAIN_CHILDREN, where)
    raw_name = _text(fields.get(_NAME))
    if not raw_name:
        raise WhitelistError(f"{where}: <{_NAME}> is missing or empty")
    try:
        domain = normalise_domain(raw_name)
    except ValueError as exc:
        raise WhitelistError(
            f"{where}: <{_NAME}> {raw_name!r} is not a valid domain: {exc}"
        ) from None
    where = f"Domaine #{index} ({domain})"
    certificate_dn = normalise_dn_whitespace(_text(fields.get(_CERT_DN)))
    if not certificate_dn:
        raise WhitelistError(f"{where}: <{_CERT_DN}> is missing or empty")
    try:
        parse_dn(certificate_dn)
    except ValueError as exc:
        raise WhitelistError(
            f"{where}: <{_CERT_DN}> {certificate_dn!r} is not an RFC 4514 DN: {exc}"
        ) from None
    updated_text = _text(fields.get(_UPDATED))
    return WhitelistEntry(
        domain=domain,
        description=_text(fields.get(_DESCRIPTION)),
        certificate_dn=certificate_dn,
        responsible_contact=_text(fields.get(_RESPONSIBLE)),
        support_contact=_text(fields.get(_SUPPORT)),
        updated_at=_datetime(updated_text, f"{where}: <{_UPDATED}>") if updated_text else None,
    )


def _check_sha256(data: bytes, expected: str) -> None:
    wanted = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise WhitelistError(f"checksum {expected!r} is not a SHA-256 hex digest (64 hex digits)")
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, wanted):
        raise WhitelistError(
            f"checksum mismatch: the document's SHA-256 is {actual}, expected {wanted}; "
            "the download is incomplete or altered"
        )


def parse_whitelist(data: bytes, *, sha256: str | None = None) -> Whitelist:
    """Parse a ``ListeBlancheMSSante`` document; raise WhitelistError if unusable.

    When ``sha256`` (hex, any case) is given, the raw bytes are checked first.
    """
    if sha256 is not None:
        _check_sha256(data, sha256)
    try:
        root: ET.Element = _defused_fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise WhitelistError(
            f"refused: the document uses a DTD or entities ({type(exc).__name__}); "
            "the whitelist format has none, and they are a known attack (XXE, entity bombs)"
        ) from None
    except ET.ParseError as exc:
        raise WhitelistError(f"not well-formed XML: {exc}") from None
    if root.tag != _qualified(_ROOT):
        raise WhitelistError(
            f"root element is {_describe(root.tag)}; expected <{_ROOT}> in namespace {NAMESPACE}"
        )
    parts = _children(root, (_GENERATED, _DOMAINS), f"<{_ROOT}>")
    generated_text = _text(parts.get(_GENERATED))
    if not generated_text:
        raise WhitelistError(f"<{_GENERATED}> is missing or empty")
    generated_at = _datetime(generated_text, f"<{_GENERATED}>")
    domains = parts.get(_DOMAINS)
    if domains is None:
        raise WhitelistError(f"<{_DOMAINS}> is missing")
    entries: list[WhitelistEntry] = []
    for index, element in enumerate(domains, start=1):
        if element.tag != _qualified(_DOMAIN):
            raise WhitelistError(
                f"<{_DOMAINS}> child #{index}: unexpected element {_describe(element.tag)}; "
                f"expected <{_DOMAIN}>"
            )
        entries.append(_parse_entry(element, index))
    return Whitelist(generated_at=generated_at, entries=tuple(entries))


def write_whitelist(wl: Whitelist) -> bytes:
    """Write ``wl`` in the national format (UTF-8, default namespace)."""
    root = ET.Element(_qualified(_ROOT))
    ET.SubElement(root, _qualified(_GENERATED)).text = wl.generated_at.isoformat()
    domains = ET.SubElement(root, _qualified(_DOMAINS))
    for entry in wl.entries:
        element = ET.SubElement(domains, _qualified(_DOMAIN))
        for local, text in (
            (_NAME, entry.domain),
            (_DESCRIPTION, entry.description),
            (_CERT_DN, entry.certificate_dn),
            (_RESPONSIBLE, entry.responsible_contact),
            (_SUPPORT, entry.support_contact),
        ):
            ET.SubElement(element, _qualified(local)).text = text
        if entry.updated_at is not None:
            ET.SubElement(element, _qualified(_UPDATED)).text = entry.updated_at.isoformat()
    ET.indent(root)
    document: bytes = ET.tostring(
        root, encoding="UTF-8", xml_declaration=True, default_namespace=NAMESPACE
    )
    return document
