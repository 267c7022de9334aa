"""One stored message as IMAP FETCH sees it: ENVELOPE, BODYSTRUCTURE, BODY[...], BINARY[...].

Pure: no I/O, no database. `ParsedMessage(raw)` takes a message exactly as it was stored
(RFC 5322 octets, CRLF or bare-LF line ends, 8-bit headers allowed) and answers the
FETCH data items of RFC 9051 (IMAP4rev2) §6.4.5 / §7.5.2 and RFC 3501 (IMAP4rev1)
§6.4.5 / §7.4.2, plus what SEARCH, SORT and THREAD need: decoded header fields and body
text, the sent date and the RFC 5256 base subject.

FETCH item                      call
-----------------------------   -------------------------------------------------------
RFC822.SIZE                     `ParsedMessage.size`
ENVELOPE                        `ParsedMessage.envelope()`
BODYSTRUCTURE / BODY            `ParsedMessage.bodystructure(extensible=True / False)`
BODY[<section>]<<p>>, .PEEK     `ParsedMessage.section(section, partial)`
RFC822 / .HEADER / .TEXT        `section("")` / `section("HEADER")` / `section("TEXT")`
BINARY[<part>]<<p>>, .PEEK      `ParsedMessage.binary(part, partial)`
BINARY.SIZE[<part>]             `ParsedMessage.binary_size(part)`

`section` accepts `mailserver.imap.specials.Section` (anything with `part`, `text`,
`headers`), a `SectionSpec`, or the text between the brackets (`"1.2.HEADER.FIELDS
(From To)"`); `partial` accepts `specials.Partial` (anything with `start`, `length`) or
a `(start, length)` tuple.

Values
------
Structured items come back as a small neutral tree, in the types
`mailserver.imap.wire.render` already takes, plus one:

* ``None`` is NIL;
* ``bytes`` is an IMAP string (the renderer picks quoted or literal form; values taken
  from headers may hold 8-bit octets, RFC 6532, and are sent as they were received);
* ``int`` is a number;
* ``tuple`` is a parenthesised list, its items separated by one SP;
* `Adjacent` is a run of parenthesised lists written back to back, with *no* SP between
  them, where the grammar says ``1*body`` (body-type-mpart) or ``1*address`` (env-from,
  env-sender, ...) (RFC 9051 §9). A renderer writes it as
  ``b"".join(render(item) for item in run.lists)``. So a multipart is
  ``(Adjacent((part1, part2)), b"MIXED", ...)`` → ``((...)(...) "MIXED" ...)`` and an
  address list is ``(Adjacent((addr1, addr2)),)`` → ``((...)(...))``. (Addresses are
  `Address` named tuples, so plain tuples to a renderer.)

Offsets
-------
Every section is a slice of the stored octets, never a re-serialisation: BODY[] is the
message, BODY[HEADER] + BODY[TEXT] is too, and every BODY[n] is a substring of it. The
MIME structure is therefore located here, on the raw bytes, once per message (lazily, on
the first request that needs it; ENVELOPE and the top-level header sections only split
the top-level header):

1. An entity (the message, a body part, an encapsulated message) is a range
   ``[start, end)`` of a buffer. Its header ends at the first empty line (RFC 5322
   §2.1, RFC 2045 §3), found as the first ``LF LF`` or ``LF CR LF``; its body starts
   after that empty line. Without an empty line the whole range is header and the body
   is empty (RFC 9051 §6.4.5: no blank line is then returned with the header).
2. Header fields: a line starting with ``field-name *WSP ":"`` (RFC 5322 §3.6.8,
   obsolete WSP before the colon §4.5) starts a field, the lines after it that start
   with SP or HTAB continue it (RFC 5322 §2.2.3); any other line is malformed and
   matches no field name (HEADER and HEADER.FIELDS.NOT return it, HEADER.FIELDS does
   not). Fields are found with regular expressions run over the header octets, never by
   building an object per line, so a header of millions of lines stays cheap.
3. A multipart body (RFC 2046 §5.1.1) is cut at delimiter lines: at the start of a line,
   ``"--" boundary``, ``"--"`` for the close delimiter, optional transport padding (SP /
   HTAB), then the end of the line. The line break *before* a delimiter belongs to the
   delimiter, so a body part ends just before it. Without a close delimiter the last part
   runs to the end of the enclosing range. The enclosing multipart is cut first, so an
   outer delimiter also ends an inner part whose own close delimiter is missing (as the
   `email` package's feed parser does).
4. A message/rfc822 or message/global body (RFC 2046 §5.2.1, RFC 6532 §3.7) is parsed
   again from step 1 as the encapsulated message. If that body carries a base64 or
   quoted-printable encoding (allowed for message/global), the encapsulated message is
   parsed from the decoded octets, and its sections (``n.HEADER``, ``n.1``...) are
   slices of those decoded octets.

Work is bounded: nesting deeper than `MAX_DEPTH` and parts beyond `MAX_PARTS` are not
split further (such a multipart or message part is reported as an opaque
application/octet-stream leaf), structured field values (addresses, MIME parameters)
are parsed up to `MAX_FIELD_PARSE` octets, and nothing is quadratic in the input.

The `email` package is the reference rather than the engine: its parser cannot say
where a part starts in the stored octets, and its parameter parser loses RFC 2231
notation (and raises on some malformed continuations). The tests check this module
against ``BytesParser(policy=email.policy.default)`` on generated messages (same part
numbering and content types, every part's BINARY equals ``get_payload(decode=True)``);
at run time the module uses
its charset alias table (`email.charset.ALIASES`) and date parser
(`email.utils.parsedate_to_datetime`).

Errors
------
Whatever the octets, building a `ParsedMessage` and asking for its size, envelope,
bodystructure, header fields, text, sent date or base subject never raises. A request
the message cannot satisfy raises a `MessageError`: `SectionSyntaxError` (malformed
section: BAD), `NoSuchPartError` (the part does not exist, or HEADER / TEXT were asked
of a part that is not a message/rfc822; RFC 9051 does not say what to answer, common
servers send NIL or an empty string), `UnknownCTEError` (BINARY of a part whose
content-transfer-encoding cannot be decoded: ``NO [UNKNOWN-CTE]``, RFC 3516 §4.3, RFC
9051 §7.1).
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.charset import ALIASES as _CHARSET_ALIASES
from email.utils import parsedate_to_datetime
from typing import Final, NamedTuple, Protocol, TypeAlias

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELD_PARSE",
    "MAX_PARTS",
    "MISSING_HOST",
    "Address",
    "Adjacent",
    "HeaderField",
    "ImapList",
    "ImapValue",
    "MessageError",
    "NoSuchPartError",
    "ParsedMessage",
    "PartialLike",
    "SectionError",
    "SectionLike",
    "SectionSpec",
    "SectionSyntaxError",
    "UnknownCTEError",
    "decode_header_value",
    "parse_addresses",
]

# Nesting (multipart in multipart, message in message...) beyond which parts are opaque.
MAX_DEPTH: Final = 64
# Entities (message, body parts, encapsulated messages) split out of one message at most.
MAX_PARTS: Final = 10_000
# Octets of one structured field value (address list, Content-Type...) that are parsed;
# beyond that (some 1,500 addresses) the rest of the field is ignored.
MAX_FIELD_PARSE: Final = 64 * 1024
# addr-host for an address without a domain ("To: root"): NIL would mean a group marker
# (RFC 9051 §7.5.2), so a visibly invalid host is sent, as IMAP servers traditionally do.
MISSING_HOST: Final = b".MISSING-HOST-NAME."

ImapValue: TypeAlias = "bytes | int | Adjacent | tuple[ImapValue, ...] | None"
ImapList: TypeAlias = "tuple[ImapValue, ...]"


@dataclass(frozen=True, slots=True)
class Adjacent:
    """Parenthesised lists written back to back, no SP between them: ``1*body`` in
    body-type-mpart and ``1*address`` in env-from etc. (RFC 9051 §9)."""

    lists: tuple[ImapList, ...]


class Address(NamedTuple):
    """RFC 9051 §7.5.2 address structure: (name, adl, mailbox, host).

    Group syntax: host None; mailbox holds the group name at the start of a group and is
    None too at its end. Quoting (RFC 5322 quoted-string, quoted-pair) is removed from
    name and mailbox; encoded words (RFC 2047) are kept as they are.
    """

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


class HeaderField(NamedTuple):
    """One header field: its name as written, its unfolded raw value (surrounding
    whitespace removed), and that value with RFC 2047 encoded words decoded (RFC 6532:
    raw UTF-8 accepted)."""

    name: str
    raw: bytes
    value: str


class MessageError(Exception):
    """Base of the exceptions raised for a request this message cannot answer."""


class SectionError(MessageError, ValueError):
    """The section specification cannot be answered (see the subclasses)."""


class SectionSyntaxError(SectionError):
    """The section specification or partial range is malformed: answer BAD."""


class NoSuchPartError(SectionError):
    """The section names a part that this message does not have, or asks HEADER / TEXT
    of a part that is not a message/rfc822 or message/global (RFC 9051 §6.4.5)."""


class UnknownCTEError(MessageError):
    """BINARY of a part whose content-transfer-encoding is not one this module decodes:
    answer ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3, RFC 9051 §7.1)."""

    def __init__(self, encoding: bytes) -> None:
        super().__init__(f"unknown content-transfer-encoding {encoding!r}")
        self.encoding = encoding


class SectionLike(Protocol):
    """A section-spec (RFC 9051 §9): `mailserver.imap.specials.Section` or `SectionSpec`.

    `text` is None, or "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME", or
    an enum member whose value is one of those strings.
    """

    @property
    def part(self) -> Sequence[int]: ...

    @property
    def text(self) -> object: ...

    @property
    def headers(self) -> Sequence[str | bytes]: ...


class PartialLike(Protocol):
    """A partial range ``<start.length>`` (RFC 9051 §9), e.g. `specials.Partial`."""

    @property
    def start(self) -> int: ...

    @property
    def length(self) -> int: ...


_SECTION_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_SECTION: Final = re.compile(
    r"""\A(?P<part>[1-9][0-9]{0,17}(?:\.[1-9][0-9]{0,17})*)?
    (?:(?(part)\.)(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?
    (?:[ ]\((?P<names>[^()]*)\))?\Z""",
    re.VERBOSE | re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """RFC 9051 §9 section-spec: part numbers, an optional text specifier, and the field
    names of HEADER.FIELDS[.NOT]. `SectionSpec()` is the whole message (``BODY[]``)."""

    part: tuple[int, ...] = ()
    text: str | None = None
    headers: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str | bytes) -> SectionSpec:
        """The text between the brackets of ``BODY[...]``, e.g. ``"1.2.MIME"`` or
        ``"HEADER.FIELDS (From To)"`` (keywords are case-insensitive)."""
        text = spec.decode("latin-1") if isinstance(spec, bytes) else spec
        match = _SECTION.match(text.strip())
        if match is None:
            raise SectionSyntaxError(f"malformed section {text!r}")
        part = tuple(int(number) for number in (match["part"] or "").split(".") if number)
        name = match["text"].upper() if match["text"] else None
        names = match["names"]
        if name in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            # RFC 9051 §9 header-list = "(" header-fld-name *(SP header-fld-name) ")".
            fields = tuple(item.strip('"') for item in (names or "").split())
            if not fields:
                raise SectionSyntaxError(f"{name} needs a list of field names")
            return cls(part, name, fields)
        if names is not None:
            raise SectionSyntaxError("only HEADER.FIELDS takes a list of field names")
        return cls(part, name)


# -- the neutral representation of MIME parameters (RFC 2045 §5.1, RFC 2231) -------------


@dataclass(frozen=True, slots=True)
class _Params:
    """Parameters in order, names lower-cased. RFC 2231 continuations are joined (RFC
    2231 §3: "IMAP4 servers SHOULD decode parameter value continuations when generating
    the BODY and BODYSTRUCTURE fetch attributes"); an extended value stays in its
    ``charset'language'%xx`` form under the name ``name*`` (RFC 2231 §4), which keeps
    it 7-bit."""

    items: tuple[tuple[bytes, bytes], ...] = ()

    def get(self, name: bytes) -> bytes | None:
        """A parameter's value for our own use: plain, or an extended value decoded to
        its octets (charset ignored: boundary and charset values are ASCII)."""
        for key, value in self.items:
            if key == name:
                return value
        for key, value in self.items:
            if key == name + b"*":
                pieces = value.split(b"'", 2)
                return _percent_decode(pieces[2] if len(pieces) == 3 else value)
        return None

    def imap(self, utf8: bool = False) -> ImapValue:
        """RFC 9051 §9 body-fld-param: ``(name value name value ...)`` or NIL.

        With `utf8` (IMAP4rev2 or UTF8=ACCEPT in force), extended values are decoded too
        (RFC 9051 §7.5.2: "if the message contains parameters "foo*0*" and "foo*1*", the
        server should RFC2231-decode them, convert to UTF-8, concatenate and return the
        resulting value as a parameter "foo*""); otherwise they stay in 7-bit RFC 2231
        form, which an IMAP4rev1 client can decode itself.
        """
        if not self.items:
            return None
        flat: list[ImapValue] = []
        for name, value in self.items:
            if utf8 and name.endswith(b"*"):
                pieces = value.split(b"'", 2)
                octets = _percent_decode(pieces[-1])
                charset = pieces[0] if len(pieces) == 3 else None
                value = _decode_charset(octets, charset).encode("utf-8")
            flat += [name.upper(), value]
        return tuple(flat)


_NO_PARAMS: Final = _Params()
# RFC 2045 §5.2: no (or an invalid) Content-Type means "text/plain; charset=us-ascii".
_DEFAULT_TEXT_PARAMS: Final = _Params(((b"charset", b"us-ascii"),))


# -- header fields ---------------------------------------------------------------------

# One header field (module docstring, step 2): a line starting with field-name *WSP ":"
# (RFC 5322 §3.6.8: field-name = 1*ftext, %d33-57 / %d59-126; WSP before the colon is
# obsolete syntax, §4.5), then its continuation lines, those starting with WSP (§2.2.3),
# then the final line break. Group 1 is the name, group 2 the value, still folded. Fields
# are found by scanning with such patterns (in C), never by building per-line objects, so
# a huge header costs no memory and little time.
_FIELD_TAIL: Final = rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)\n?"
_ANY_FIELD: Final = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)" + _FIELD_TAIL, re.MULTILINE)
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# RFC 5322 §2.2.3: unfolding removes every CRLF immediately followed by WSP.
_FOLD: Final = re.compile(rb"\r?\n(?=[ \t])")


@functools.lru_cache(maxsize=512)
def _fields_pattern(names: frozenset[bytes]) -> re.Pattern[bytes] | None:
    """The fields named `names` (lower-case), matched case-insensitively; None when no
    name is a possible field-name."""
    valid = sorted(name for name in names if _FIELD_NAME.fullmatch(name))
    if not valid:
        return None
    alternatives = b"|".join(re.escape(name) for name in valid)
    return re.compile(rb"^(" + alternatives + rb")" + _FIELD_TAIL, re.MULTILINE | re.IGNORECASE)


# The fields ENVELOPE and BODYSTRUCTURE read: collected in one scan per entity.
_KNOWN_NAMES: Final = frozenset(
    {
        *(b"content-type", b"content-transfer-encoding", b"content-disposition"),
        *(b"content-language", b"content-location", b"content-id", b"content-description"),
        *(b"content-md5", b"date", b"subject", b"from", b"sender", b"reply-to", b"to"),
        *(b"cc", b"bcc", b"in-reply-to", b"message-id"),
    }
)
_KNOWN_FIELDS: Final = _fields_pattern(_KNOWN_NAMES)


def _header_bounds(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(offset of the empty line ending the header, offset of the body) for the entity
    [start, end); both `end` when there is no empty line (RFC 5322 §2.1)."""
    if start >= end:
        return end, end
    if buf[start] == 0x0A:
        return start, start + 1
    if buf.startswith(b"\r\n", start, end):
        return start, start + 2
    lf_lf = buf.find(b"\n\n", start, end)
    lf_crlf = buf.find(b"\n\r\n", start, end)
    if lf_lf >= 0 and (lf_crlf < 0 or lf_lf < lf_crlf):
        return lf_lf + 1, lf_lf + 2
    if lf_crlf >= 0:
        return lf_crlf + 1, lf_crlf + 3
    return end, end


def _unfold(value: bytes) -> bytes:
    return _FOLD.sub(b"", value).strip(b" \t\r\n")


# -- entities ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Entity:
    """A message, body part or encapsulated message: [start, end) of `buf`, its header
    up to `blank` (the empty line), its body from `body`. MIME attributes are filled in
    by `_Parser.fill`."""

    buf: bytes
    start: int
    blank: int
    body: int
    end: int
    maintype: bytes = b"text"
    subtype: bytes = b"plain"
    params: _Params = _DEFAULT_TEXT_PARAMS
    cte: bytes = b"7bit"
    children: list[_Entity] = field(default_factory=list)
    message: _Entity | None = None
    known: dict[bytes, bytes] | None = None

    def value(self, name: bytes) -> bytes | None:
        """The first `name` (lower-case) field's unfolded value, None when absent."""
        if name in _KNOWN_NAMES:
            if self.known is None:
                known: dict[bytes, bytes] = {}
                assert _KNOWN_FIELDS is not None
                for match in _KNOWN_FIELDS.finditer(self.buf, self.start, self.blank):
                    known.setdefault(match.group(1).lower(), match.group(2))
                self.known = known
            raw = self.known.get(name)
            return None if raw is None else _unfold(raw)
        pattern = _fields_pattern(frozenset((name,)))
        found = None if pattern is None else pattern.search(self.buf, self.start, self.blank)
        return None if found is None else _unfold(found.group(2))

    def fields(self, names: frozenset[bytes] | None = None) -> Iterator[re.Match[bytes]]:
        """The header fields (all, or those named) as matches: group 1 the name, group 2
        the folded value, the span the field with its line break."""
        pattern = _ANY_FIELD if names is None else _fields_pattern(names)
        if pattern is not None:
            yield from pattern.finditer(self.buf, self.start, self.blank)

    def header(self) -> bytes:
        return self.buf[self.start : self.body]

    def content(self) -> bytes:
        return self.buf[self.body : self.end]


@functools.lru_cache(maxsize=512)
def _other_lines_pattern(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """Lines that do not start a field named `names`, with their continuation lines:
    other fields and malformed lines."""
    valid = sorted(name for name in names if _FIELD_NAME.fullmatch(name))
    unwanted = b"(?!(?:" + b"|".join(re.escape(name) for name in valid) + rb")[ \t]*:)"
    return re.compile(
        rb"^" + (unwanted if valid else b"") + rb"[^ \t\n][^\n]*(?:\n[ \t][^\n]*)*\n?",
        re.MULTILINE | re.IGNORECASE,
    )


# Continuation lines before any field: malformed, never part of a field.
_ORPHAN_LINES: Final = re.compile(rb"(?:[ \t][^\n]*(?:\n|\Z))*")


def _select_fields(message: _Entity, names: frozenset[bytes], keep: bool) -> bytes:
    """RFC 9051 §6.4.5 HEADER.FIELDS (`keep`) / HEADER.FIELDS.NOT: the header with only
    (or without) the fields named `names`, each exactly as stored, then the empty line.
    Done by deleting what is not returned with one `re.sub`, so that a header of
    millions of fields costs no Python loop. Malformed lines never match a name: they
    are left out of HEADER.FIELDS and kept in HEADER.FIELDS.NOT."""
    block = message.buf[message.start : message.blank]
    if keep:
        orphans = _ORPHAN_LINES.match(block)
        assert orphans is not None  # the pattern matches the empty string
        block = block[orphans.end() :]
        selected = _other_lines_pattern(names).sub(b"", block)
    else:
        pattern = _fields_pattern(names)
        selected = block if pattern is None else pattern.sub(b"", block)
    return selected + message.buf[message.blank : message.body]


def _bare_entity(buf: bytes, start: int, end: int) -> _Entity:
    blank, body = _header_bounds(buf, start, end)
    return _Entity(buf, start, blank, body, end)


class _Parser:
    """Finds the MIME structure of one message (module docstring, steps 3 and 4)."""

    def __init__(self) -> None:
        self.parts_left = MAX_PARTS

    def entity(self, buf: bytes, start: int, end: int, depth: int, digest: bool) -> _Entity:
        entity = _bare_entity(buf, start, end)
        self.fill(entity, depth, digest)
        return entity

    def fill(self, entity: _Entity, depth: int, digest: bool) -> None:
        self.parts_left -= 1
        content_type = _content_type(entity.value(b"content-type"))
        if content_type is not None:
            entity.maintype, entity.subtype, entity.params = content_type
        elif digest:
            # RFC 2046 §5.1.5: in multipart/digest the default is message/rfc822.
            entity.maintype, entity.subtype, entity.params = b"message", b"rfc822", _NO_PARAMS
        entity.cte = _encoding(entity.value(b"content-transfer-encoding"))
        nested = entity.maintype == b"multipart" or (
            entity.maintype == b"message" and entity.subtype in (b"rfc822", b"global")
        )
        if not nested:
            return
        if depth >= MAX_DEPTH or self.parts_left <= 0:
            entity.maintype, entity.subtype = b"application", b"octet-stream"
        elif entity.maintype == b"multipart":
            self._multipart(entity, depth)
        elif entity.cte in (b"base64", b"quoted-printable"):
            inner = _decode_cte(entity.content(), entity.cte)
            entity.message = self.entity(inner, 0, len(inner), depth + 1, False)
        else:
            entity.message = self.entity(entity.buf, entity.body, entity.end, depth + 1, False)

    def _multipart(self, entity: _Entity, depth: int) -> None:
        boundary = entity.params.get(b"boundary")
        ranges = (
            _split_multipart(entity.buf, entity.body, entity.end, boundary, self.parts_left)
            if boundary
            else []
        )
        if not ranges:
            # RFC 2046 §5.1.1 requires a boundary and at least one body part; without
            # them the Content-Type is unusable and RFC 2045 §5.2 says to assume
            # text/plain.
            entity.maintype, entity.subtype, entity.params = b"text", b"plain", _DEFAULT_TEXT_PARAMS
            return
        digest = entity.subtype == b"digest"
        entity.children = [
            self.entity(entity.buf, start, end, depth + 1, digest) for start, end in ranges
        ]


def _split_multipart(
    buf: bytes, start: int, end: int, boundary: bytes, limit: int
) -> list[tuple[int, int]]:
    """The body parts of the multipart body [start, end), at most max(limit, 1) of them
    (the last one then runs to the end): RFC 2046 §5.1.1, module docstring step 3."""
    delimiter = re.compile(
        rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\r?\Z)", re.MULTILINE
    )
    ranges: list[tuple[int, int]] = []
    part_start = -1
    for match in delimiter.finditer(buf, start, end):
        if part_start >= 0:
            if len(ranges) + 1 >= limit:
                break
            # The line break before the delimiter is part of the delimiter.
            part_end = match.start()
            if part_end > part_start and buf[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and buf[part_end - 1] == 0x0D:
                    part_end -= 1
            ranges.append((part_start, part_end))
        if match.group(1) is not None:
            return ranges  # close delimiter: what follows is the epilogue
        part_start = match.end()
    if part_start >= 0:
        ranges.append((part_start, end))
    return ranges


# -- structured header values (RFC 2045 §5.1, RFC 5322 §3.2 and §3.4) ----------------

_ATOM, _QUOTED, _DOMAIN_LITERAL, _SPECIAL = 0, 1, 2, 3


class _Token(NamedTuple):
    kind: int
    text: bytes  # quoted strings without their quotes and quoted-pairs
    start: int
    end: int
    space: bool  # whitespace or a comment comes before it


# RFC 2045 §5.1 token: CHARs but SPACE, CTLs and tspecials (8-bit octets kept, RFC 6532).
_MIME_ATOM: Final = re.compile(rb'[^\x00-\x20()<>@,;:\\"/\[\]?=\x7f]+')
# RFC 5322 §3.2.3 atext, with RFC 6532 UTF-8 (any 8-bit octet).
_MAIL_ATOM: Final = re.compile(rb'[^\x00-\x20()<>\[\]:;@\\,."\x7f]+')
_QUOTED_STRING: Final = re.compile(rb'"((?:[^"\\]+|\\.)*)"?', re.DOTALL)
_QUOTED_PAIR: Final = re.compile(rb"\\(.)", re.DOTALL)
_COMMENT_STOP: Final = re.compile(rb"[()\\]")


def _skip_comment(value: bytes, pos: int) -> int:
    """The offset after the (nested) comment opening at `pos` (RFC 5322 §3.2.2)."""
    depth = 0
    while True:
        match = _COMMENT_STOP.search(value, pos)
        if match is None:
            return len(value)
        at = match.start()
        if value[at] == 0x5C:
            pos = at + 2
            continue
        depth += 1 if value[at] == 0x28 else -1
        pos = at + 1
        if depth == 0:
            return pos


def _tokens(value: bytes, *, mime: bool) -> list[_Token]:
    """Lexical tokens of a structured field value, comments and whitespace dropped:
    RFC 2045 §5.1 tokens and tspecials if `mime`, else RFC 5322 §3.2 atoms, specials and
    domain literals. Never fails: stray octets become specials. Only the first
    `MAX_FIELD_PARSE` octets are read (bounded work on hostile headers)."""
    atom = _MIME_ATOM if mime else _MAIL_ATOM
    value = value[:MAX_FIELD_PARSE]
    tokens: list[_Token] = []
    pos, length, space = 0, len(value), False
    while pos < length:
        octet = value[pos]
        if octet == 0x28:
            pos = _skip_comment(value, pos)
            space = True
            continue
        if octet == 0x22:
            quoted = _QUOTED_STRING.match(value, pos)
            assert quoted is not None  # the pattern matches any opening quote
            text = _QUOTED_PAIR.sub(rb"\1", quoted.group(1))
            tokens.append(_Token(_QUOTED, text, pos, quoted.end(), space))
            pos = quoted.end()
        elif octet == 0x5B and not mime:
            close = value.find(b"]", pos + 1)
            stop = length if close < 0 else close + 1
            tokens.append(_Token(_DOMAIN_LITERAL, value[pos:stop], pos, stop, space))
            pos = stop
        elif (word := atom.match(value, pos)) is not None:
            tokens.append(_Token(_ATOM, word.group(), pos, word.end(), space))
            pos = word.end()
        elif octet <= 0x20 or octet == 0x7F:
            pos += 1
            space = True
            continue
        else:
            tokens.append(_Token(_SPECIAL, value[pos : pos + 1], pos, pos + 1, space))
            pos += 1
        space = False
    return tokens


def _is(token: _Token, special: bytes) -> bool:
    return token.kind == _SPECIAL and token.text == special


# RFC 2231 §3/§4: name*  (extended), name*N (continuation), name*N* (both).
_RFC2231_NAME: Final = re.compile(rb"([^*]+)\*(?:([0-9]{1,4})(\*)?)?\Z")
_PERCENT: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
# RFC 2231 §7 attribute-char: what an extended value may hold without %-encoding.
_ATTRIBUTE_CHARS: Final = frozenset(range(0x21, 0x7F)) - frozenset(b"*'%()<>@,;:\\\"/[]?=")


def _percent_decode(value: bytes) -> bytes:
    return _PERCENT.sub(lambda match: bytes((int(match.group(1), 16),)), value)


def _percent_encode(value: bytes) -> bytes:
    return b"".join(
        bytes((octet,)) if octet in _ATTRIBUTE_CHARS else b"%%%02X" % octet for octet in value
    )


def _parse_params(value: bytes, tokens: Sequence[_Token]) -> _Params:
    """``*(";" attribute "=" value)`` (RFC 2045 §5.1), leniently: an unquoted value runs
    to the next ";" (so ``name=my file.pdf`` survives), junk is skipped; then RFC 2231
    continuations are joined (see `_Params`)."""
    plain: dict[bytes, bytes] = {}
    segments: dict[bytes, dict[int, tuple[bytes, bool]]] = {}
    pos, count = 0, len(tokens)
    while pos < count:
        token = tokens[pos]
        if not (token.kind == _ATOM and pos + 1 < count and _is(tokens[pos + 1], b"=")):
            pos += 1
            continue
        stop = pos + 2
        while stop < count and not _is(tokens[stop], b";"):
            stop += 1
        first = pos + 2
        if stop == first:
            text = b""
        elif tokens[first].kind == _QUOTED:
            text = tokens[first].text
        else:
            text = value[tokens[first].start : tokens[stop - 1].end]
        name = token.text.lower()
        continuation = _RFC2231_NAME.match(name)
        if continuation is not None and continuation.group(2) is not None:
            pieces = segments.setdefault(continuation.group(1), {})
            pieces.setdefault(int(continuation.group(2)), (text, bool(continuation.group(3))))
        else:
            plain.setdefault(name, text)
        pos = stop
    for base, pieces in segments.items():
        ordered = [pieces[index] for index in sorted(pieces)]
        if not any(extended for _text, extended in ordered):
            plain.setdefault(base, b"".join(text for text, _extended in ordered))
            continue
        joined = b"".join(text if extended else _percent_encode(text) for text, extended in ordered)
        plain.setdefault(base + b"*", joined if ordered[0][1] else b"''" + joined)
    return _Params(tuple(plain.items()))


def _content_type(value: bytes | None) -> tuple[bytes, bytes, _Params] | None:
    """RFC 2045 §5.1 ``type "/" subtype *(";" parameter)``, lower-cased; None when
    absent or unusable (the caller then applies the RFC 2045 §5.2 default)."""
    if value is None:
        return None
    tokens = _tokens(value, mime=True)
    if (
        len(tokens) < 3
        or tokens[0].kind != _ATOM
        or not _is(tokens[1], b"/")
        or tokens[2].kind != _ATOM
    ):
        return None
    return tokens[0].text.lower(), tokens[2].text.lower(), _parse_params(value, tokens[3:])


def _encoding(value: bytes | None) -> bytes:
    """RFC 2045 §6.1 mechanism, lower-cased; "7bit" when absent (RFC 2045 §6.1)."""
    tokens = _tokens(value, mime=True) if value else []
    return tokens[0].text.lower() if tokens and tokens[0].text else b"7bit"


def _disposition(value: bytes | None) -> ImapValue:
    """RFC 9051 §9 body-fld-dsp from Content-Disposition (RFC 2183 §2)."""
    if value is None:
        return None
    tokens = _tokens(value, mime=True)
    if not tokens or tokens[0].kind != _ATOM:
        return None
    return (tokens[0].text.upper(), _parse_params(value, tokens[1:]).imap())


def _languages(value: bytes | None) -> ImapValue:
    """RFC 9051 §9 body-fld-lang from Content-Language (RFC 3282 §2: tags separated by
    commas): one tag as a string, several as a list."""
    if value is None:
        return None
    tags = [token.text for token in _tokens(value, mime=True) if token.kind in (_ATOM, _QUOTED)]
    tags = [tag for tag in tags if tag]
    if not tags:
        return None
    return tags[0] if len(tags) == 1 else tuple(tags)


# -- addresses (RFC 5322 §3.4, obsolete forms §4.4) ----------------------------------------

_END_OF_GROUP: Final = Address(None, None, None, None)


def _words(tokens: Sequence[_Token], pos: int) -> int:
    """Past the run of atoms, quoted strings and dots at `pos` (a phrase or local-part)."""
    while pos < len(tokens) and (tokens[pos].kind in (_ATOM, _QUOTED) or _is(tokens[pos], b".")):
        pos += 1
    return pos


def _phrase(words: Sequence[_Token]) -> bytes | None:
    """A display name without its quoting: words joined by one space where the field had
    whitespace (or a comment) between them."""
    out = bytearray()
    for index, word in enumerate(words):
        if index and word.space:
            out += b" "
        out += word.text
    return bytes(out) or None


def _joined(tokens: Sequence[_Token]) -> bytes:
    return b"".join(token.text for token in tokens)


def _domain(tokens: Sequence[_Token], pos: int) -> tuple[bytes, int]:
    stop = pos
    while stop < len(tokens) and (
        tokens[stop].kind in (_ATOM, _DOMAIN_LITERAL) or _is(tokens[stop], b".")
    ):
        stop += 1
    return _joined(tokens[pos:stop]), stop


def _angle_address(
    tokens: Sequence[_Token], pos: int, name: bytes | None
) -> tuple[Address | None, int]:
    """The angle-addr whose "<" precedes `pos`: [obs-route] local-part "@" domain ">"."""
    count = len(tokens)
    adl = None
    if pos < count and _is(tokens[pos], b"@"):
        # RFC 5322 §4.4 obs-route = obs-domain-list ":", e.g. "@a.example,@b.example:".
        colon = pos
        while colon < count and not (_is(tokens[colon], b":") or _is(tokens[colon], b">")):
            colon += 1
        if colon < count and _is(tokens[colon], b":"):
            adl = _joined(tokens[pos:colon])
            pos = colon + 1
    stop = _words(tokens, pos)
    local = _joined(tokens[pos:stop])
    host = b""
    if stop < count and _is(tokens[stop], b"@"):
        host, stop = _domain(tokens, stop + 1)
    while stop < count and not any(_is(tokens[stop], mark) for mark in (b">", b",", b";")):
        stop += 1
    if stop < count and _is(tokens[stop], b">"):
        stop += 1
    if not local:
        return None, stop
    return Address(name, adl, local, host or MISSING_HOST), stop


def parse_addresses(value: bytes | None) -> list[Address]:
    """The address structures of an address-list field value (From, To, Cc, ...), RFC
    9051 §7.5.2 and RFC 5322 §3.4, leniently: never raises, skips what is not an address,
    closes a group left open."""
    if value is None:
        return []
    tokens = _tokens(value, mime=False)
    out: list[Address] = []
    in_group = False
    pos, count = 0, len(tokens)
    while pos < count:
        if _is(tokens[pos], b","):
            pos += 1
            continue
        if _is(tokens[pos], b";"):
            if in_group:
                out.append(_END_OF_GROUP)
                in_group = False
            pos += 1
            continue
        stop = _words(tokens, pos)
        words = tokens[pos:stop]
        following = tokens[stop] if stop < count else None
        if following is not None and _is(following, b":"):
            # RFC 5322 §3.4 group = display-name ":" [group-list] ";"
            if not in_group:
                out.append(Address(None, None, _phrase(words) or b"", None))
                in_group = True
            pos = stop + 1
            continue
        address: Address | None = None
        if following is not None and _is(following, b"<"):
            address, pos = _angle_address(tokens, stop + 1, _phrase(words))
        elif following is not None and _is(following, b"@"):
            host, pos = _domain(tokens, stop + 1)
            local = _joined(words)
            address = Address(None, None, local, host or MISSING_HOST) if local else None
        else:
            local = _joined(words)
            address = Address(None, None, local, MISSING_HOST) if local else None
            pos = stop if following is None or _is(following, b",") else stop + 1
        if address is not None:
            out.append(address)
        while pos < count and not (_is(tokens[pos], b",") or _is(tokens[pos], b";")):
            pos += 1
    if in_group:
        out.append(_END_OF_GROUP)
    return out


def _address_list(value: bytes | None) -> ImapValue:
    """RFC 9051 §9 env-from etc.: ``"(" 1*address ")"``, or NIL when absent or empty."""
    addresses = parse_addresses(value)
    return (Adjacent(tuple(addresses)),) if addresses else None


def _envelope(entity: _Entity) -> ImapList:
    """RFC 9051 §7.5.2 ENVELOPE of the message whose header `entity` holds.

    Date, Subject, In-Reply-To and Message-ID: the first field's unfolded raw value
    (encoded words kept), the empty string when present but empty, NIL when absent.
    From, To, Cc, Bcc: NIL when absent or empty. Sender and Reply-To: the From value
    when absent or empty ("the server sets the corresponding member of the envelope to
    be the same value as the from member").
    """
    from_ = _address_list(entity.value(b"from"))
    return (
        entity.value(b"date"),
        entity.value(b"subject"),
        from_,
        _address_list(entity.value(b"sender")) or from_,
        _address_list(entity.value(b"reply-to")) or from_,
        _address_list(entity.value(b"to")),
        _address_list(entity.value(b"cc")),
        _address_list(entity.value(b"bcc")),
        entity.value(b"in-reply-to"),
        entity.value(b"message-id"),
    )


# -- BODYSTRUCTURE ---------------------------------------------------------------------


def _lines(buf: bytes, start: int, end: int) -> int:
    """RFC 9051 §9 body-fld-lines: the lines of the encoded body as stored (a last line
    without line break counts)."""
    if start >= end:
        return 0
    count = buf.count(b"\n", start, end)
    return count if buf[end - 1] == 0x0A else count + 1


def _structure(entity: _Entity, extensible: bool, utf8: bool) -> ImapList:
    """RFC 9051 §7.5.2 / RFC 3501 §7.4.2 BODYSTRUCTURE (`extensible`) or BODY; `utf8`
    see `_Params.imap`."""
    items: list[ImapValue]
    if entity.children:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        items = [
            Adjacent(tuple(_structure(child, extensible, utf8) for child in entity.children)),
            entity.subtype.upper(),
        ]
        if extensible:
            # body-ext-mpart = body-fld-param [SP body-fld-dsp [SP body-fld-lang
            #                  [SP body-fld-loc *(SP body-extension)]]]
            items += [
                entity.params.imap(utf8),
                _disposition(entity.value(b"content-disposition")),
                _languages(entity.value(b"content-language")),
                entity.value(b"content-location"),
            ]
        return tuple(items)
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP
    #               body-fld-octets (octets of the body as stored, still encoded)
    params = entity.params
    if entity.maintype == b"text" and params.get(b"charset") is None:
        # RFC 2046 §4.1.2: "The default character set, which must be assumed in the
        # absence of a charset parameter, is US-ASCII." Said explicitly for clients.
        params = _Params(((b"charset", b"us-ascii"), *params.items))
    items = [
        entity.maintype.upper(),
        entity.subtype.upper(),
        params.imap(utf8),
        entity.value(b"content-id"),
        entity.value(b"content-description"),
        entity.cte.upper(),
        entity.end - entity.body,
    ]
    if entity.message is not None:
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        items += [
            _envelope(entity.message),
            _structure(entity.message, extensible, utf8),
            _lines(entity.buf, entity.body, entity.end),
        ]
    elif entity.maintype == b"text":
        # body-type-text = media-text SP body-fields SP body-fld-lines
        items.append(_lines(entity.buf, entity.body, entity.end))
    if extensible:
        # body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang
        #                  [SP body-fld-loc *(SP body-extension)]]]
        # body-fld-md5 is the Content-MD5 field (RFC 1864) as sent; we compute nothing.
        items += [
            entity.value(b"content-md5"),
            _disposition(entity.value(b"content-disposition")),
            _languages(entity.value(b"content-language")),
            entity.value(b"content-location"),
        ]
    return tuple(items)


# -- content-transfer-encodings and charsets ------------------------------------------------

_IDENTITY: Final = frozenset({b"7bit", b"8bit", b"binary"})
_BASE64_JUNK: Final = re.compile(rb"[^A-Za-z0-9+/]+")


def _decode_base64(data: bytes) -> bytes:
    """RFC 2045 §6.8, leniently: characters outside the alphabet are ignored, "=" is
    taken as the end of the data, a truncated last quantum is decoded as far as it
    goes. Never raises."""
    padding = data.find(b"=")
    clean = _BASE64_JUNK.sub(b"", data if padding < 0 else data[:padding])
    extra = len(clean) % 4
    if extra == 1:
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    return binascii.a2b_base64(clean)


def _decode_cte(data: bytes, cte: bytes) -> bytes:
    """The octets a content-transfer-encoding stands for (RFC 2045 §6, RFC 3516 §3)."""
    if cte in _IDENTITY:
        return data
    if cte == b"base64":
        return _decode_base64(data)
    if cte == b"quoted-printable":
        return binascii.a2b_qp(data)  # RFC 2045 §6.7, soft line breaks with CRLF or LF
    raise UnknownCTEError(cte)


def _decode_8bit(data: bytes) -> str:
    """Undeclared octets: UTF-8 (RFC 6532), else Latin-1 (never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_charset(data: bytes, charset: bytes | None) -> str:
    """Text in a declared charset (RFC 2046 §4.1.2, RFC 2047 §2), never failing: unknown
    charsets and us-ascii (often mislabelled 8-bit text) fall back to `_decode_8bit`."""
    name = (charset or b"").decode("ascii", "replace").strip().lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name in ("", "us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        return _decode_8bit(data)
    try:
        text = data.decode(name, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return _decode_8bit(data)
    # Some codecs (unicode-escape, utf-7...) can yield lone surrogates: not text.
    return _SURROGATES.sub("\ufffd", text)


_SURROGATES: Final = re.compile("[\ud800-\udfff]")


# RFC 2047 §2 encoded-word = "=?" charset ["*" language (RFC 2231 §5)] "?" encoding "?"
# encoded-text "?=", with no whitespace inside.
_ENCODED_WORD: Final = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")


def decode_header_value(value: bytes) -> str:
    """A header value as text: RFC 2047 encoded words decoded (adjacent words of one
    charset joined before decoding, whitespace between encoded words dropped, §6.2),
    other octets read as UTF-8 (RFC 6532) or Latin-1. Never raises."""
    out: list[str] = []
    pending = bytearray()
    pending_charset: bytes | None = None
    pos = 0
    for word in _ENCODED_WORD.finditer(value):
        gap = value[pos : word.start()]
        charset = word.group(1).split(b"*", 1)[0].lower()
        adjacent = pending_charset is not None and not gap.strip(b" \t\r\n")
        if pending_charset is not None and not (adjacent and charset == pending_charset):
            out.append(_decode_charset(bytes(pending), pending_charset))
            pending.clear()
        if not adjacent:
            out.append(_decode_8bit(gap))
        encoded = word.group(3)
        if word.group(2) in (b"b", b"B"):
            pending += _decode_base64(encoded)
        else:
            pending += binascii.a2b_qp(encoded, header=True)  # "_" is SP (RFC 2047 §4.2)
        pending_charset = charset
        pos = word.end()
    if pending_charset is not None:
        out.append(_decode_charset(bytes(pending), pending_charset))
    out.append(_decode_8bit(value[pos:]))
    return "".join(out)


# -- RFC 5256 §2.1 base subject -----------------------------------------------------------

_BLOB: Final = r"\[[^\[\]]*\][ \t]*"  # subj-blob = "[" *BLOBCHAR "]" *WSP
# subj-leader = (*subj-blob subj-refwd) / WSP ; subj-refwd = ("re" / ("fw" ["d"])) *WSP
# [subj-blob] ":"
_SUBJ_LEADERS: Final = re.compile(
    rf"(?:[ \t]|(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:)+", re.IGNORECASE
)
_SUBJ_BLOB: Final = re.compile(_BLOB)


def _without_trailers(text: str, start: int, end: int) -> int:
    """(2) The end of `text[start:end]` once trailing subj-trailer ("(fwd)" / WSP) are
    removed; scanning back from the end keeps this linear."""
    while end > start:
        if text[end - 1] in " \t":
            end -= 1
        elif end - start >= 5 and text[end - 5 : end].lower() == "(fwd)":
            end -= 5
        else:
            break
    return end


def _base_subject(subject: str) -> str:
    """RFC 5256 §2.1, steps numbered as there. Works with offsets so that long runs of
    prefixes cost linear time."""
    text = _WHITESPACE.sub(" ", subject)  # (1) encoded words already decoded
    start, end = 0, len(text)
    while True:
        end = _without_trailers(text, start, end)  # (2)
        while True:  # (5) repeat (3) and (4) until nothing changes
            before = start
            leaders = _SUBJ_LEADERS.match(text, start, end)  # (3)
            if leaders is not None:
                start = leaders.end()
            # (4) a subj-blob, if a non-empty subj-base remains (text[end - 1] is not
            # WSP after (2)). A run of blobs that (3) did not take is not followed by
            # subj-refwd, so the whole run can go at once but for its last blob.
            while (blob := _SUBJ_BLOB.match(text, start, end)) is not None and blob.end() < end:
                start = blob.end()
            if start == before:
                break
        # (6) "[fwd:" subject "]": unwrap and start again from (2).
        if end - start >= 6 and text[start : start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start, end = start + 5, end - 1
            continue
        return text[start:end]  # (7)


# -- sections -----------------------------------------------------------------------------


def _section_parts(
    spec: SectionLike | str | bytes,
) -> tuple[tuple[int, ...], str | None, frozenset[bytes]]:
    """(part numbers, text specifier, lower-cased field names), validated."""
    if isinstance(spec, (str, bytes)):
        spec = SectionSpec.parse(spec)
    text = spec.text
    if text is not None and not isinstance(text, str):
        text = getattr(text, "value", None)  # specials.SectionText
        if not isinstance(text, str):
            raise SectionSyntaxError(f"unknown section text {spec.text!r}")
    if text is not None:
        text = text.upper()
        if text not in _SECTION_TEXTS:
            raise SectionSyntaxError(f"unknown section text {text!r}")
    part = tuple(spec.part)
    for number in part:
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise SectionSyntaxError(f"part numbers are positive integers, not {number!r}")
    names = frozenset(
        (name.encode("utf-8") if isinstance(name, str) else bytes(name)).lower()
        for name in spec.headers
    )
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT") and not names:
        raise SectionSyntaxError(f"{text} needs a list of field names")
    if text == "MIME" and not part:
        raise SectionSyntaxError("MIME needs a body part number (RFC 9051 §6.4.5)")
    return part, text, names


def _cut(data: bytes, partial: PartialLike | tuple[int, int] | None) -> bytes:
    """RFC 9051 §6.4.5 partial ``<start.length>``: at most `length` octets from `start`;
    empty when `start` is past the end."""
    if partial is None:
        return data
    start, length = partial if isinstance(partial, tuple) else (partial.start, partial.length)
    if isinstance(start, bool) or isinstance(length, bool) or start < 0 or length < 0:
        raise SectionSyntaxError(f"invalid partial <{start}.{length}>")
    return data[start : start + length]


def _in_message(container: _Entity, number: int) -> _Entity:
    """Part `number` of a message (top-level or encapsulated): its body parts when it is
    multipart, else part 1 is the message's own body (RFC 9051 §6.4.5: "non-multipart
    [MIME-IMB] messages with no encapsulated message, only have a part 1")."""
    if container.children:
        if number > len(container.children):
            raise NoSuchPartError(f"no part {number}")
        return container.children[number - 1]
    if number != 1:
        raise NoSuchPartError(f"no part {number}")
    return container


# -- the message ---------------------------------------------------------------------------


class ParsedMessage:
    """One stored message and its FETCH data (module docstring). Cheap to build: the
    header is split on the first request that needs it, the MIME structure on the first
    that needs that, and ENVELOPE and BODYSTRUCTURE are computed once."""

    __slots__ = ("_binary_sizes", "_envelope", "_head", "_raw", "_structures", "_tree")

    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self._raw = bytes(raw)
        self._head: _Entity | None = None
        self._tree: _Entity | None = None
        self._envelope: ImapList | None = None
        self._structures: dict[tuple[bool, bool], ImapList] = {}
        self._binary_sizes: dict[tuple[int, ...], int] = {}

    # -- parsing, once ---------------------------------------------------------------------

    def _header(self) -> _Entity:
        """The top-level entity with its header split, MIME structure not (yet) known."""
        if self._head is None:
            self._head = _bare_entity(self._raw, 0, len(self._raw))
        return self._head

    def _root(self) -> _Entity:
        """The top-level entity with its MIME structure."""
        if self._tree is None:
            root = self._header()
            _Parser().fill(root, 0, False)
            self._tree = root
        return self._tree

    def _resolve(self, part: Sequence[int]) -> _Entity:
        """The entity a section-part names (RFC 9051 §6.4.5 part numbering)."""
        root = self._root()
        node = _in_message(root, part[0])
        for number in part[1:]:
            if node.children:
                node = _in_message(node, number)
            elif node.message is not None:
                # The parts of a message/rfc822 part are those of the message it holds.
                node = _in_message(node.message, number)
            else:
                raise NoSuchPartError(f"part {part} does not exist")
        return node

    # -- FETCH data items ------------------------------------------------------------------

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets of the message as stored (RFC 9051 §7.5.2)."""
        return len(self._raw)

    def envelope(self) -> ImapList:
        """ENVELOPE (RFC 9051 §7.5.2): date, subject, from, sender, reply-to, to, cc,
        bcc, in-reply-to, message-id."""
        if self._envelope is None:
            self._envelope = _envelope(self._header())
        return self._envelope

    def bodystructure(self, extensible: bool = True, *, utf8: bool = False) -> ImapList:
        """BODYSTRUCTURE (`extensible`, with extension data) or BODY (without). `utf8`
        once IMAP4rev2 or UTF8=ACCEPT is in force: RFC 2231 extended parameter values
        (``name*``) then come decoded to UTF-8, as RFC 9051 §7.5.2 asks."""
        key = (extensible, utf8)
        cached = self._structures.get(key)
        if cached is None:
            cached = self._structures[key] = _structure(self._root(), extensible, utf8)
        return cached

    def section(
        self,
        spec: SectionLike | str | bytes = "",
        partial: PartialLike | tuple[int, int] | None = None,
    ) -> bytes:
        """BODY[<section>]<<partial>> (RFC 9051 §6.4.5), octets exactly as stored.

        ``""``: the whole message (also RFC822). HEADER: the header with its empty line
        (RFC822.HEADER). TEXT: the body (RFC822.TEXT). HEADER.FIELDS (names) /
        HEADER.FIELDS.NOT (names): the fields whose name is (not) one of `names`, matched
        case-insensitively, in their stored order and form, then the empty line.
        ``n`` (a part path): that part's body; ``n.MIME``: its MIME header with the empty
        line; ``n.HEADER`` etc.: of the message a message/rfc822 part holds. "The blank
        line is included in all header fetches, except in the case of a message which
        has no body and no blank line."
        """
        part, text, names = _section_parts(spec)
        if text is None:
            data = self._resolve(part).content() if part else self._raw
        elif text == "MIME":
            data = self._resolve(part).header()
        else:
            if part:
                holder = self._resolve(part)
                if holder.message is None:
                    raise NoSuchPartError(f"part {part} is not a message/rfc822 part")
                message = holder.message
            else:
                message = self._header()
            if text == "HEADER":
                data = message.header()
            elif text == "TEXT":
                data = message.content()
            else:
                data = _select_fields(message, names, text == "HEADER.FIELDS")
        return _cut(data, partial)

    def binary(
        self,
        part: Sequence[int] = (),
        partial: PartialLike | tuple[int, int] | None = None,
    ) -> bytes:
        """BINARY[<part>]<<partial>> (RFC 3516 §4.2, RFC 9051 §6.4.5): the part's body
        with its content-transfer-encoding undone. ``BINARY[]`` is the message as
        stored. RFC 9051 only allows leaf parts; a multipart's body comes back as it is
        (its encoding must be an identity one, RFC 2045 §6.4). Raises `UnknownCTEError`
        for an encoding other than 7bit, 8bit, binary, base64 and quoted-printable."""
        numbers = tuple(part)
        if not numbers:
            return _cut(self._raw, partial)
        _section_parts(SectionSpec(numbers))
        node = self._resolve(numbers)
        return _cut(_decode_cte(node.content(), node.cte), partial)

    def binary_size(self, part: Sequence[int] = ()) -> int:
        """BINARY.SIZE[<part>] (RFC 3516 §4.2): the octets `binary(part)` returns."""
        numbers = tuple(part)
        size = self._binary_sizes.get(numbers)
        if size is None:
            size = self._binary_sizes[numbers] = len(self.binary(numbers))
        return size

    # -- for SEARCH, SORT and THREAD ------------------------------------------------------

    def addresses(self, name: str | bytes) -> list[Address]:
        """The address structures of the first `name` field (e.g. "From"), for SORT FROM
        / TO / CC (RFC 5256 §3: the addr-mailbox of the first address)."""
        key = (name.encode("ascii") if isinstance(name, str) else name).lower()
        return parse_addresses(self._header().value(key))

    def header_fields(self, names: Iterable[str | bytes] | None = None) -> list[HeaderField]:
        """The top-level header fields (all of them, or those named, case-insensitively),
        in order, for SEARCH HEADER / FROM / SUBJECT ... (RFC 9051 §6.4.4)."""
        wanted = (
            None
            if names is None
            else frozenset((n.encode("utf-8") if isinstance(n, str) else n).lower() for n in names)
        )
        out: list[HeaderField] = []
        for match in self._header().fields(wanted):
            raw = _unfold(match.group(2))
            out.append(HeaderField(match.group(1).decode("ascii"), raw, decode_header_value(raw)))
        return out

    def text(self) -> str:
        """The body as text for SEARCH BODY / TEXT (RFC 9051 §6.4.4): every text/* leaf
        with its transfer encoding undone and its charset decoded (unknown encodings are
        searched as they are), plus the header fields of encapsulated messages, joined
        by newlines. Other media types are left out."""
        chunks: list[str] = []

        def walk(entity: _Entity) -> None:
            if entity.children:
                for child in entity.children:
                    walk(child)
            elif entity.message is not None:
                inner = entity.message
                for match in inner.fields():
                    value = decode_header_value(_unfold(match.group(2)))
                    chunks.append(f"{match.group(1).decode('ascii')}: {value}")
                walk(inner)
            elif entity.maintype == b"text":
                data = entity.content()
                try:
                    data = _decode_cte(data, entity.cte)
                except UnknownCTEError:
                    pass
                chunks.append(_decode_charset(data, entity.params.get(b"charset")))

        walk(self._root())
        return "\n".join(chunks)

    def sent_date(self) -> datetime | None:
        """The Date field (RFC 5322 §3.6.1) for SORT DATE (RFC 5256 §2.2), None when
        absent or unreadable; naive when the zone is "-0000" (unknown)."""
        value = self._header().value(b"date")
        if value is None:
            return None
        try:
            return parsedate_to_datetime(_decode_8bit(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None

    def subject_base(self) -> str:
        """The base subject of RFC 5256 §2.1 for SORT SUBJECT and THREAD (decoded to
        text; compare it with i;unicode-casemap / i;ascii-casemap as the command says)."""
        value = self._header().value(b"subject")
        return "" if value is None else _base_subject(decode_header_value(value))
