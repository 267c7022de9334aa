"""The structured arguments of IMAP commands, parsed from a `Reader` into typed values.

Sequence sets, search keys, fetch and store attributes, LIST options, STATUS items, SORT
criteria, THREAD algorithms and ESEARCH return options: the vocabulary the commands in
`mailserver.imap.commands` are made of. Each parser reads exactly its production and
leaves the cursor after it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, TypeAlias, TypeVar

from mailserver.imap.wire import Encoded, ParseError, Reader, printable, render_astring

_DIGITS: Final = b"0123456789"

# -- sequence sets (RFC 9051 §9 sequence-set, RFC 5182 "$") ------------------------------


@dataclass(frozen=True, slots=True)
class SequenceRange:
    """RFC 9051 §9 seq-range (or a single seq-number when first == last); None is "*"."""

    first: int | None
    last: int | None

    def bounds(self, largest: int) -> tuple[int, int]:
        """The range as (low, high) once "*" means `largest`; "4:2" is "2:4"."""
        first = largest if self.first is None else self.first
        last = largest if self.last is None else self.last
        return (first, last) if first <= last else (last, first)

    def encode(self) -> bytes:
        first = b"*" if self.first is None else b"%d" % self.first
        if self.first == self.last:
            return first
        return first + b":" + (b"*" if self.last is None else b"%d" % self.last)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 9051 §9 sequence-set, for message sequence numbers or UIDs alike.

    "*" stands for the largest number in use: the number of messages for sequence
    numbers, the highest UID for UIDs (RFC 9051 §9: `559:*` includes the last UID even
    when 559 is higher). Numbers above the largest do not exist, so they are never
    contained nor iterated.
    """

    ranges: tuple[SequenceRange, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("a sequence set cannot be empty")

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The shortest set of ascending ranges holding exactly `numbers` (for COPYUID,
        VANISHED and ESEARCH ALL responses)."""
        ordered = sorted(set(numbers))
        if not ordered or ordered[0] < 1:
            raise ValueError("a sequence set holds one or more positive numbers")
        ranges: list[SequenceRange] = []
        start = previous = ordered[0]
        for number in ordered[1:]:
            if number != previous + 1:
                ranges.append(SequenceRange(start, previous))
                start = number
            previous = number
        ranges.append(SequenceRange(start, previous))
        return cls(tuple(ranges))

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Disjoint ascending (low, high) intervals within 1..largest."""
        clipped = sorted(
            (max(low, 1), min(high, largest))
            for low, high in (each.bounds(largest) for each in self.ranges)
        )
        merged: list[tuple[int, int]] = []
        for low, high in clipped:
            if low > high:
                continue
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        if not 1 <= number <= largest:
            return False
        return any(
            low <= number <= high for low, high in (each.bounds(largest) for each in self.ranges)
        )

    def iterate(self, largest: int) -> Iterator[int]:
        """Each contained number once, ascending."""
        for low, high in self.intervals(largest):
            yield from range(low, high + 1)

    def highest_explicit(self) -> int:
        """The largest number written out; a sequence number above the mailbox's message
        count is an invalid reference (RFC 9051 §9 seq-number)."""
        return max(
            (bound for each in self.ranges for bound in (each.first, each.last) if bound),
            default=0,
        )

    def encode(self) -> Encoded:
        return Encoded(b",".join(each.encode() for each in self.ranges))


@dataclass(frozen=True, slots=True)
class SavedResult:
    """RFC 5182 seq-last-command "$": the result saved by the last SEARCH RETURN (SAVE)."""

    def encode(self) -> Encoded:
        return Encoded(b"$")


MessageSet: TypeAlias = SequenceSet | SavedResult


def parse_seq_number(reader: Reader) -> int | None:
    """RFC 9051 §9 seq-number = nz-number / "*"."""
    if reader.try_consume(b"*"):
        return None
    return reader.nz_number("a message number or *")


def parse_sequence_set(reader: Reader) -> SequenceSet:
    """RFC 9051 §9 sequence-set = (seq-number / seq-range) ["," sequence-set]."""
    ranges = []
    while True:
        first = parse_seq_number(reader)
        last = parse_seq_number(reader) if reader.try_consume(b":") else first
        ranges.append(SequenceRange(first, last))
        if not reader.try_consume(b","):
            return SequenceSet(tuple(ranges))


def parse_message_set(reader: Reader) -> MessageSet:
    """A sequence-set, or "$" (RFC 5182 seq-last-command)."""
    if reader.try_consume(b"$"):
        return SavedResult()
    return parse_sequence_set(reader)


def parse_known_set(reader: Reader) -> SequenceSet:
    """RFC 7162 §7 known-uids / known-sequence-set: a sequence-set without "*"."""
    numbers = parse_sequence_set(reader)
    if any(None in (each.first, each.last) for each in numbers.ranges):
        raise ParseError('"*" is not allowed in QRESYNC known UIDs or sequence numbers')
    return numbers


# -- search keys (RFC 9051 §6.4.4, RFC 3501 §6.4.4, RFC 7162 §3.1.5, RFC 5182) -------------


@dataclass(frozen=True, slots=True)
class AllKey:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class FlagKey:
    """ANSWERED, SEEN, KEYWORD x, ... (`present`) and UNANSWERED, UNKEYWORD x, ... (not)."""

    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """HEADER field value, and its shorthands BCC, CC, FROM, SUBJECT, TO. An empty value
    matches every message that has the field."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyKey:
    """BODY: the text is in the message body."""

    value: str


@dataclass(frozen=True, slots=True)
class TextKey:
    """TEXT: the text is in the header or the body."""

    value: str


DateRelation: TypeAlias = Literal["before", "on", "since"]


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE / ON / SINCE (internal date) and SENTBEFORE / SENTON / SENTSINCE (the Date:
    header, `sent`); dates compare without time or timezone."""

    relation: DateRelation
    date: date
    sent: bool


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER n (`larger`) / SMALLER n, on RFC822.SIZE."""

    size: int
    larger: bool


@dataclass(frozen=True, slots=True)
class SequenceKey:
    """A sequence-set, `UID sequence-set`, or "$" (RFC 5182)."""

    messages: MessageSet
    uid: bool


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """RFC 7162 §3.1.5 MODSEQ [entry-name entry-type-req] mod-sequence-valzer: messages
    whose mod-sequence (of `flag`'s metadata item when given) is at least `modseq`."""

    modseq: int
    flag: str | None = None
    entry_type: EntryType | None = None


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    """Several keys side by side, or a parenthesised group: all must match."""

    keys: tuple[SearchKey, ...]


SearchKey: TypeAlias = (
    AllKey
    | FlagKey
    | HeaderKey
    | BodyKey
    | TextKey
    | DateKey
    | SizeKey
    | SequenceKey
    | ModSeqKey
    | NotKey
    | OrKey
    | AndKey
)

# RFC 9051 §6.4.4: servers MUST support US-ASCII and UTF-8.
SEARCH_CHARSETS: Final = ("US-ASCII", "UTF-8")
# NOT NOT NOT ... or (((...))) is legal but never useful; deep nesting would exhaust the stack.
_MAX_SEARCH_DEPTH: Final = 32

_FLAG_KEYS: Final = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    # RFC 3501 §6.4.4, IMAP4rev1 only: \Recent.
    "RECENT": ("\\Recent", True),
    "OLD": ("\\Recent", False),
}
_HEADER_KEYS: Final = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
_DATE_KEYS: Final[dict[str, tuple[DateRelation, bool]]] = {
    "BEFORE": ("before", False),
    "ON": ("on", False),
    "SINCE": ("since", False),
    "SENTBEFORE": ("before", True),
    "SENTON": ("on", True),
    "SENTSINCE": ("since", True),
}
_ARGUMENT_KEYS: Final = {
    *_HEADER_KEYS,
    *_DATE_KEYS,
    *("HEADER", "BODY", "TEXT", "LARGER", "SMALLER", "UID", "MODSEQ", "NOT", "OR"),
}
EntryType: TypeAlias = Literal["priv", "shared", "all"]
_ENTRY_TYPES: Final[dict[str, EntryType]] = {"PRIV": "priv", "SHARED": "shared", "ALL": "all"}


def parse_charset(reader: Reader) -> str:
    """RFC 9051 §9 charset = atom / quoted; only US-ASCII and UTF-8 are supported."""
    raw = reader.astring("a charset")
    charset = raw.decode("latin-1").upper()
    if charset not in SEARCH_CHARSETS:
        raise ParseError(
            f"charset {printable(raw)} is not supported",
            status="NO",
            code=f"BADCHARSET ({' '.join(SEARCH_CHARSETS)})",
        )
    return charset


def parse_search_keys(reader: Reader, charset: str | None) -> SearchKey:
    """search-key *(SP search-key): one key, or an AndKey of several."""
    keys = [parse_search_key(reader, charset)]
    while reader.try_sp():
        keys.append(parse_search_key(reader, charset))
    return keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def parse_search_key(reader: Reader, charset: str | None, depth: int = 0) -> SearchKey:
    """RFC 9051 §9 search-key, with RFC 3501's NEW/OLD/RECENT and RFC 7162's MODSEQ."""
    if depth > _MAX_SEARCH_DEPTH:
        raise ParseError("search criteria are nested too deeply")
    octet = reader.peek()
    if octet == ord("("):
        return AndKey(
            reader.parenthesised(
                lambda inner: parse_search_key(inner, charset, depth + 1), allow_empty=False
            )
        )
    if octet is not None and octet in _DIGITS + b"*$":
        return SequenceKey(parse_message_set(reader), uid=False)
    name = reader.keyword("a search key")
    if name == "ALL":
        return AllKey()
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return FlagKey(flag, present)
    if name == "NEW":
        # RFC 3501 §6.4.4: NEW is equivalent to (RECENT UNSEEN).
        return AndKey((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))
    if name in ("KEYWORD", "UNKEYWORD"):
        reader.sp()
        # RFC 9051 §9 flag-keyword = atom; system flags are not keywords.
        return FlagKey(reader.atom("a keyword"), name == "KEYWORD")
    if name not in _ARGUMENT_KEYS:
        raise ParseError(f"unknown search key {name}")
    reader.sp()
    if name == "NOT":
        return NotKey(parse_search_key(reader, charset, depth + 1))
    if name == "OR":
        left = parse_search_key(reader, charset, depth + 1)
        reader.sp()
        return OrKey(left, parse_search_key(reader, charset, depth + 1))
    if name in _HEADER_KEYS:
        return HeaderKey(_HEADER_KEYS[name], _search_text(reader, charset))
    if name == "HEADER":
        field = parse_header_field_name(reader)
        reader.sp()
        return HeaderKey(field, _search_text(reader, charset))
    if name == "BODY":
        return BodyKey(_search_text(reader, charset))
    if name == "TEXT":
        return TextKey(_search_text(reader, charset))
    if name in _DATE_KEYS:
        relation, sent = _DATE_KEYS[name]
        return DateKey(relation, reader.date(), sent)
    if name in ("LARGER", "SMALLER"):
        return SizeKey(reader.number64(), name == "LARGER")
    if name == "UID":
        return SequenceKey(parse_message_set(reader), uid=True)
    return _parse_modseq_key(reader)


def _search_text(reader: Reader, charset: str | None) -> str:
    raw = reader.astring("a search string")
    if charset == "US-ASCII" and not raw.isascii():
        raise ParseError("search string is not US-ASCII as the CHARSET says")
    # Without CHARSET: US-ASCII for IMAP4rev1, UTF-8 for IMAP4rev2; the former is a subset.
    return reader.utf8(raw, "search string")


def _parse_modseq_key(reader: Reader) -> ModSeqKey:
    """RFC 7162 §3.1.5 search-modsequence = "MODSEQ" [search-modseq-ext] SP
    mod-sequence-valzer, search-modseq-ext = SP entry-name SP entry-type-req."""
    if reader.peek() != ord('"'):
        return ModSeqKey(reader.mod_sequence_valzer())
    entry = reader.quoted()
    # entry-flag-name = DQUOTE "/flags/" attr-flag DQUOTE
    if entry[:7].lower() != b"/flags/":
        raise ParseError('MODSEQ entry name must be "/flags/<flag>"')
    flag_reader = Reader([entry[7:]])
    try:
        flag = flag_reader.flag()
        flag_reader.end()
    except ParseError:
        raise ParseError(f"MODSEQ entry name {printable(entry)} does not name a flag") from None
    reader.sp()
    word = reader.keyword("priv, shared or all")
    entry_type = _ENTRY_TYPES.get(word)
    if entry_type is None:
        raise ParseError(f"MODSEQ entry type must be priv, shared or all, not {word}")
    reader.sp()
    return ModSeqKey(reader.mod_sequence_valzer(), flag, entry_type)


def parse_header_field_name(reader: Reader) -> str:
    """RFC 9051 §9 header-fld-name = astring, holding an RFC 5322 §3.6.8 field-name."""
    name = reader.astring("a header field name")
    if not name or any(octet < 0x21 or octet > 0x7E or octet == ord(":") for octet in name):
        raise ParseError("header field names are printable US-ASCII without colon")
    return name.decode("ascii")


# -- ESEARCH return options (RFC 4731 search-return-opt, RFC 5182 SAVE) --------------------


class SearchReturn(enum.Enum):
    MIN = "MIN"
    MAX = "MAX"
    ALL = "ALL"
    COUNT = "COUNT"
    SAVE = "SAVE"


def parse_search_return(reader: Reader) -> frozenset[SearchReturn]:
    """RFC 4731 search-return-opts, after "RETURN" SP: "(" [search-return-opt *(SP
    search-return-opt)] ")"; an empty list means ALL."""
    options = reader.parenthesised(
        lambda inner: _enum_keyword(inner, SearchReturn, "SEARCH return option"), allow_empty=True
    )
    return frozenset(options) or frozenset({SearchReturn.ALL})


# -- fetch attributes (RFC 9051 §6.4.5, RFC 3516, RFC 7162) ------------------------------


class FetchItem(enum.Enum):
    """The fetch attributes that take no section."""

    ENVELOPE = "ENVELOPE"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    BODY = "BODY"  # BODYSTRUCTURE without extension data
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    RFC822 = "RFC822"  # IMAP4rev1: BODY[]
    RFC822_HEADER = "RFC822.HEADER"  # IMAP4rev1: BODY.PEEK[HEADER]
    RFC822_TEXT = "RFC822.TEXT"  # IMAP4rev1: BODY[TEXT]
    MODSEQ = "MODSEQ"  # RFC 7162 §3.1.4

    def response_name(self) -> Encoded:
        return Encoded(self.value.encode("ascii"))


class SectionText(enum.Enum):
    """RFC 9051 §9 section-msgtext, and MIME (section-text)."""

    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 9051 §9 section-spec: `part` (empty for the whole message) and an optional
    text specifier; `headers` for HEADER.FIELDS[.NOT]."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    headers: tuple[str, ...] = ()

    def encode(self) -> bytes:
        spec = [b".".join(b"%d" % number for number in self.part)] if self.part else []
        if self.text is not None:
            spec.append(self.text.value.encode("ascii"))
        encoded = b".".join(spec)
        if self.headers:
            names = b" ".join(render_astring(name.encode("ascii")) for name in self.headers)
            encoded += b" (" + names + b")"
        return b"[" + encoded + b"]"


@dataclass(frozen=True, slots=True)
class Partial:
    """RFC 9051 §9 partial = "<" number64 "." nz-number64 ">"."""

    start: int
    length: int


@dataclass(frozen=True, slots=True)
class BodySection:
    """BODY[section]<partial> and BODY.PEEK[...] (`peek`: do not set \\Seen)."""

    section: Section
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> Encoded:
        """RFC 9051 §7.5.2: "BODY" section ["<" number ">"], PEEK never echoed."""
        origin = b"" if self.partial is None else b"<%d>" % self.partial.start
        return Encoded(b"BODY" + self.section.encode() + origin)


@dataclass(frozen=True, slots=True)
class BinarySection:
    """RFC 3516 §4.2 BINARY[section-part]<partial> and BINARY.PEEK[...]."""

    part: tuple[int, ...]
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> Encoded:
        origin = b"" if self.partial is None else b"<%d>" % self.partial.start
        return Encoded(b"BINARY" + Section(self.part).encode() + origin)


@dataclass(frozen=True, slots=True)
class BinarySize:
    """RFC 3516 §4.2 BINARY.SIZE[section-part]."""

    part: tuple[int, ...]

    def response_name(self) -> Encoded:
        return Encoded(b"BINARY.SIZE" + Section(self.part).encode())


FetchAttribute: TypeAlias = FetchItem | BodySection | BinarySection | BinarySize

# RFC 9051 §6.4.5 macros.
FETCH_MACROS: Final = {
    "ALL": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
    "FAST": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE),
    "FULL": (
        FetchItem.FLAGS,
        FetchItem.INTERNALDATE,
        FetchItem.RFC822_SIZE,
        FetchItem.ENVELOPE,
        FetchItem.BODY,
    ),
}


def parse_fetch_attributes(reader: Reader) -> tuple[FetchAttribute, ...]:
    """RFC 9051 §9 fetch: "ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP
    fetch-att) ")"."""
    if reader.peek() == ord("("):
        return reader.parenthesised(parse_fetch_attribute, allow_empty=False)
    for macro, items in FETCH_MACROS.items():
        if reader.try_keyword(macro):
            return items
    return (parse_fetch_attribute(reader),)


def parse_fetch_attribute(reader: Reader) -> FetchAttribute:
    """RFC 9051 §9 fetch-att, with RFC 3516 BINARY and RFC 7162 MODSEQ."""
    name = reader.keyword("a fetch attribute")
    if name in ("BODY", "BODY.PEEK") and reader.peek() == ord("["):
        section = _parse_section(reader)
        return BodySection(section, _parse_partial(reader), peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK"):
        part = _parse_section_binary(reader)
        return BinarySection(part, _parse_partial(reader), peek=name == "BINARY.PEEK")
    if name == "BINARY.SIZE":
        return BinarySize(_parse_section_binary(reader))
    try:
        return FetchItem(name)
    except ValueError:
        raise ParseError(f"unknown fetch attribute {name}") from None


def _parse_section_part(reader: Reader) -> tuple[tuple[int, ...], bool]:
    """RFC 9051 §9 section-part = nz-number *("." nz-number). Also reports whether it
    consumed the "." that introduces a section-text (as in "1.2.HEADER")."""
    part = [reader.nz_number("a body part number")]
    while reader.try_consume(b"."):
        octet = reader.peek()
        if octet is None or octet not in _DIGITS:
            return tuple(part), True
        part.append(reader.nz_number("a body part number"))
    return tuple(part), False


def _parse_section(reader: Reader) -> Section:
    """RFC 9051 §9 section = "[" [section-spec] "]", section-spec = section-msgtext /
    (section-part ["." section-text])."""
    reader.expect(b"[")
    part: tuple[int, ...] = ()
    octet = reader.peek()
    if octet is not None and octet in _DIGITS:
        part, dotted = _parse_section_part(reader)
        if not dotted:
            reader.expect(b"]")
            return Section(part)
    elif reader.try_consume(b"]"):
        return Section()
    name = reader.keyword("HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME")
    try:
        text = SectionText(name)
    except ValueError:
        raise ParseError(f"unknown section text {name}") from None
    if text is SectionText.MIME and not part:
        # RFC 9051 §9 section-msgtext excludes MIME: it applies to a body part only.
        raise ParseError("MIME needs a body part number, as in BODY[1.MIME]")
    headers: tuple[str, ...] = ()
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        reader.sp()
        headers = reader.parenthesised(parse_header_field_name, allow_empty=False)
    reader.expect(b"]")
    return Section(part, text, headers)


def _parse_section_binary(reader: Reader) -> tuple[int, ...]:
    """RFC 3516 §7 section-binary = "[" [section-part] "]"."""
    reader.expect(b"[")
    if reader.try_consume(b"]"):
        return ()
    part, dotted = _parse_section_part(reader)
    if dotted:
        raise ParseError("BINARY takes body part numbers only, as in BINARY[1.2]")
    reader.expect(b"]")
    return part


def _parse_partial(reader: Reader) -> Partial | None:
    """RFC 9051 §9 partial = "<" number64 "." nz-number64 ">"."""
    if not reader.try_consume(b"<"):
        return None
    start = reader.number64()
    reader.expect(b".")
    if reader.peek() == ord("0"):
        reader.fail("a non-zero length")
    length = reader.number64()
    reader.expect(b">")
    return Partial(start, length)


@dataclass(frozen=True, slots=True)
class FetchModifiers:
    """RFC 7162 §3.1.4 CHANGEDSINCE and §3.2.6 VANISHED."""

    changed_since: int | None = None
    vanished: bool = False


def parse_fetch_modifiers(reader: Reader) -> FetchModifiers:
    """RFC 4466 §2.4 fetch-modifiers = "(" fetch-modifier *(SP fetch-modifier) ")"."""
    changed_since: int | None = None
    vanished = False

    def modifier(inner: Reader) -> None:
        nonlocal changed_since, vanished
        name = inner.keyword("a FETCH modifier")
        if name == "CHANGEDSINCE":
            inner.sp()
            changed_since = inner.mod_sequence_valzer()
        elif name == "VANISHED":
            vanished = True
        else:
            raise ParseError(f"unknown FETCH modifier {name}")

    reader.parenthesised(modifier, allow_empty=False)
    return FetchModifiers(changed_since, vanished)


# -- store attributes (RFC 9051 §6.4.6, RFC 7162 §3.1.3) ---------------------------------


class StoreMode(enum.Enum):
    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class StoreAction:
    """RFC 9051 §9 store-att-flags: [+|-]FLAGS[.SILENT] with the flags."""

    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]


def parse_store_action(reader: Reader) -> StoreAction:
    """RFC 9051 §9 store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list /
    (flag *(SP flag)))."""
    mode = StoreMode.REPLACE
    if reader.try_consume(b"+"):
        mode = StoreMode.ADD
    elif reader.try_consume(b"-"):
        mode = StoreMode.REMOVE
    name = reader.keyword("FLAGS or FLAGS.SILENT")
    if name not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError(f"expected FLAGS or FLAGS.SILENT, found {name}")
    reader.sp()
    if reader.peek() == ord("("):
        flags = reader.flag_list()
    else:
        flags_list = [reader.flag()]
        while reader.try_sp():
            flags_list.append(reader.flag())
        flags = tuple(flags_list)
    return StoreAction(mode, name == "FLAGS.SILENT", flags)


def parse_store_modifiers(reader: Reader) -> int:
    """RFC 4466 §2.5 store-modifiers = "(" store-modifier *(SP store-modifier) ")"; the
    only one defined is RFC 7162 §3.1.3 "UNCHANGEDSINCE" SP mod-sequence-valzer."""

    def modifier(inner: Reader) -> int:
        name = inner.keyword("a STORE modifier")
        if name != "UNCHANGEDSINCE":
            raise ParseError(f"unknown STORE modifier {name}")
        inner.sp()
        return inner.mod_sequence_valzer()

    values = reader.parenthesised(modifier, allow_empty=False)
    if len(values) > 1:
        raise ParseError("UNCHANGEDSINCE given more than once")
    return values[0]


# -- STATUS items (RFC 9051 §6.3.11, RFC 7162, RFC 7889, RFC 3501) --------------------------


class StatusItem(enum.Enum):
    MESSAGES = "MESSAGES"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    DELETED = "DELETED"
    SIZE = "SIZE"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"  # RFC 7162 §3.1.7
    RECENT = "RECENT"  # RFC 3501 §6.3.10, IMAP4rev1 only
    APPENDLIMIT = "APPENDLIMIT"  # RFC 7889 status-att


def parse_status_items(reader: Reader) -> tuple[StatusItem, ...]:
    """RFC 9051 §9 "(" status-att *(SP status-att) ")"."""
    return reader.parenthesised(
        lambda inner: _enum_keyword(inner, StatusItem, "STATUS item"), allow_empty=False
    )


# -- LIST options (RFC 5258, RFC 5819, RFC 6154) ------------------------------------------


class ListSelectOption(enum.Enum):
    SUBSCRIBED = "SUBSCRIBED"
    REMOTE = "REMOTE"
    RECURSIVEMATCH = "RECURSIVEMATCH"
    SPECIAL_USE = "SPECIAL-USE"  # RFC 6154 list-select-independent-opt


class ListReturnOption(enum.Enum):
    SUBSCRIBED = "SUBSCRIBED"
    CHILDREN = "CHILDREN"
    SPECIAL_USE = "SPECIAL-USE"  # RFC 6154 return-option
    STATUS = "STATUS"  # RFC 5819 status-option, with status items


def parse_list_select_options(reader: Reader) -> frozenset[ListSelectOption]:
    """RFC 5258 list-select-opts = "(" [...] ")"; RECURSIVEMATCH only modifies another
    option and is an error alone."""
    options = frozenset(
        reader.parenthesised(
            lambda inner: _enum_keyword(inner, ListSelectOption, "LIST selection option"),
            allow_empty=True,
        )
    )
    if ListSelectOption.RECURSIVEMATCH in options and options <= {
        ListSelectOption.RECURSIVEMATCH,
        ListSelectOption.REMOTE,
    }:
        raise ParseError("RECURSIVEMATCH needs another selection option such as SUBSCRIBED")
    return options


@dataclass(frozen=True, slots=True)
class ListReturn:
    """RFC 5258 list-return-opts; `status` are the RFC 5819 STATUS items, if asked."""

    options: frozenset[ListReturnOption] = frozenset()
    status: tuple[StatusItem, ...] = ()


def parse_list_return_options(reader: Reader) -> ListReturn:
    """RFC 5258 list-return-opts after "RETURN" SP: "(" [return-option *(SP
    return-option)] ")", return-option =/ "STATUS" SP "(" status-att ... ")" (RFC 5819)."""
    status: tuple[StatusItem, ...] = ()

    def option(inner: Reader) -> ListReturnOption:
        nonlocal status
        value = _enum_keyword(inner, ListReturnOption, "LIST return option")
        if value is ListReturnOption.STATUS:
            inner.sp()
            status = parse_status_items(inner)
        return value

    options = frozenset(reader.parenthesised(option, allow_empty=True))
    return ListReturn(options, status)


# -- SORT and THREAD (RFC 5256) -------------------------------------------------------------


class SortKey(enum.Enum):
    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


def parse_sort_criteria(reader: Reader) -> tuple[SortCriterion, ...]:
    """RFC 5256 sort-criteria = "(" sort-criterion *(SP sort-criterion) ")",
    sort-criterion = ["REVERSE" SP] sort-key."""

    def criterion(inner: Reader) -> SortCriterion:
        reverse = inner.try_keyword("REVERSE")
        if reverse:
            inner.sp()
        return SortCriterion(_enum_keyword(inner, SortKey, "SORT key"), reverse)

    return reader.parenthesised(criterion, allow_empty=False)


class ThreadAlgorithm(enum.Enum):
    ORDEREDSUBJECT = "ORDEREDSUBJECT"
    REFERENCES = "REFERENCES"


def parse_thread_algorithm(reader: Reader) -> ThreadAlgorithm:
    """RFC 5256 thread-alg = "ORDEREDSUBJECT" / "REFERENCES" / thread-alg-ext."""
    return _enum_keyword(reader, ThreadAlgorithm, "THREAD algorithm")


# -- shared -----------------------------------------------------------------------------

Member = TypeVar("Member", bound=enum.Enum)


def _enum_keyword(reader: Reader, kind: type[Member], what: str) -> Member:
    name = reader.keyword(f"a {what}")
    try:
        return kind(name)
    except ValueError:
        raise ParseError(f"unknown {what} {name}") from None
