"""IMAP wire primitives: command bytes in, typed values out; typed values in, response bytes out.

Reading. A command reaches this layer already framed (`mailserver.imap.framing`) as a
sequence of *segments* that alternate, starting and ending with a line:

    line, literal, line, literal, ..., line

A line segment is `bytes` without its CRLF and without the literal marker (`{n}`,
`{n+}` or `~{n}`) that ended it; a literal segment is a `LiteralData` holding the octets
that marker announced. So the client's

    a1 LOGIN {4}<CRLF>fred secret<CRLF>

arrives as `[b"a1 LOGIN ", LiteralData(b"fred"), b" secret"]`. A `Reader` is a cursor
over those segments: where a line segment ends and a literal follows, the grammar finds a
`literal` (RFC 9051 §4.3). Every grammar error raises `ParseError`, whose reason is fit
for `<tag> BAD <reason>`.

Writing. `render` turns typed values (`None` for NIL, `int`, `str`/`bytes` strings,
`Atom`, `LiteralData`, `datetime`, lists) into response bytes, choosing quoted or literal
form, so the server never assembles protocol syntax by hand.

Mailbox names travel as modified UTF-7 (RFC 3501 §5.1.3) for IMAP4rev1 clients and as
UTF-8 once IMAP4rev2 or UTF8=ACCEPT (RFC 9051 §5.1, RFC 6855) is in force.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Final, Literal, NoReturn, TypeAlias, TypeVar

T = TypeVar("T")

# RFC 9051 §9: number is an unsigned 32-bit integer, number64 an unsigned 63-bit one.
NUMBER_MAX: Final = 2**32 - 1
NUMBER64_MAX: Final = 2**63 - 1

# RFC 9051 §9 character classes.
_CTL: Final = frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]') | _CTL  # atom-specials
ATOM_CHARS: Final = frozenset(range(0x01, 0x80)) - _ATOM_SPECIALS  # ATOM-CHAR
ASTRING_CHARS: Final = ATOM_CHARS | {ord("]")}  # ASTRING-CHAR
TAG_CHARS: Final = ASTRING_CHARS - {ord("+")}  # tag
LIST_CHARS: Final = ATOM_CHARS | frozenset(b"%*]")  # list-char
_DIGITS: Final = frozenset(b"0123456789")
# Keywords of the grammar (command names, search keys, fetch items): atoms that stop at
# "[" so that `BODY[TEXT]` reads as the keyword BODY followed by a section.
_KEYWORD_CHARS: Final = ATOM_CHARS - {ord("[")}

# RFC 9051 §2.3.2 system flags, in their canonical spelling (flags are case-insensitive).
SYSTEM_FLAGS: Final = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}

_MONTHS: Final = (
    *("Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    *("Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
)
_MONTH_NUMBERS: Final = {name.upper(): number for number, name in enumerate(_MONTHS, start=1)}

# RFC 9051 §9 quoted: QUOTED-CHAR is any TEXT-CHAR but quoted-specials, or a
# quoted-special escaped with "\". (NUL is not a CHAR.) Possessive quantifiers: an
# unterminated string must fail in linear time, not by exponential backtracking.
_QUOTED: Final = re.compile(rb'"((?:[^"\\\r\n\x00]++|\\["\\])*+)"')
_QUOTED_ESCAPE: Final = re.compile(rb"\\([\"\\])")
# RFC 9051 §9 date-text = date-day "-" date-month "-" date-year, date-day = 1*2DIGIT.
_DATE: Final = re.compile(rb'("?)(\d{1,2})-([A-Za-z]{3})-(\d{4})("?)')
# RFC 9051 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP
# zone DQUOTE, with date-day-fixed = (SP DIGIT) / 2DIGIT.
_DATE_TIME: Final = re.compile(
    rb'"( \d|\d\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
# RFC 3501 §5.1.3: the modified BASE64 alphabet ("," instead of "/").
_MODIFIED_BASE64: Final = re.compile(rb"[A-Za-z0-9+,]+")


class ParseError(Exception):
    """A command the server refuses as written.

    `reason` is one line of text for `<tag> <status> [<code>] <reason>`; `tag` is the
    command's tag when it could be read (otherwise the server answers `* BAD`). Most
    errors are syntax errors (BAD); a few are well-formed requests the server cannot
    honour, which the protocol answers with NO and a response code (e.g. an unsupported
    SEARCH charset: `NO [BADCHARSET (US-ASCII UTF-8)]`, RFC 9051 §6.4.4).
    """

    def __init__(
        self,
        reason: str,
        *,
        tag: str | None = None,
        status: Literal["BAD", "NO"] = "BAD",
        code: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag
        self.status: Literal["BAD", "NO"] = status
        self.code = code

    def with_context(self, *, tag: str, command: str) -> ParseError:
        """The same error, attributed to a command: tag known, reason prefixed."""
        return ParseError(f"{command}: {self.reason}", tag=tag, status=self.status, code=self.code)


@dataclass(frozen=True, slots=True)
class LiteralData:
    """The octets of a literal (RFC 9051 §4.3) or, if `binary`, a literal8 (RFC 3516 §7)."""

    data: bytes
    binary: bool = False


Segment: TypeAlias = bytes | LiteralData


def printable(data: bytes, limit: int = 24) -> str:
    """Client bytes made safe to quote inside a one-line response text."""
    shown = "".join(
        chr(octet) if 0x20 <= octet < 0x7F and octet != 0x22 else f"\\x{octet:02x}"
        for octet in data[:limit]
    )
    return f'"{shown}..."' if len(data) > limit else f'"{shown}"'


class Reader:
    """A cursor over one framed command (see the module docstring for the segments)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        if not segments:
            raise ParseError("empty command")
        for index, segment in enumerate(segments):
            expected = bytes if index % 2 == 0 else LiteralData
            if not isinstance(segment, expected):
                raise ParseError("malformed command framing")
        if not isinstance(segments[-1], bytes):
            raise ParseError("malformed command framing")
        self._segments = tuple(segments)
        self._index = 0
        self._line = self._line_at(0)
        self._pos = 0

    def _line_at(self, index: int) -> bytes:
        segment = self._segments[index]
        assert isinstance(segment, bytes)
        return segment

    # -- position ---------------------------------------------------------------------

    def peek(self) -> int | None:
        """The next octet of the current line, or None where the line ends."""
        return self._line[self._pos] if self._pos < len(self._line) else None

    def at_literal(self) -> bool:
        return self._pos >= len(self._line) and self._index < len(self._segments) - 1

    def at_end(self) -> bool:
        return self._pos >= len(self._line) and self._index == len(self._segments) - 1

    def end(self) -> None:
        """The command must end here."""
        if not self.at_end():
            raise ParseError(f"unexpected {self.describe()} after the command's arguments")

    def describe(self) -> str:
        """What lies at the cursor, for error reasons."""
        if self._pos < len(self._line):
            return printable(self._line[self._pos :])
        return "a literal" if self.at_literal() else "end of command"

    def fail(self, expected: str) -> NoReturn:
        raise ParseError(f"expected {expected}, found {self.describe()}")

    def take_while(self, allowed: frozenset[int]) -> bytes:
        start = self._pos
        line = self._line
        while self._pos < len(line) and line[self._pos] in allowed:
            self._pos += 1
        return line[start : self._pos]

    # -- punctuation and keywords ---------------------------------------------------------

    def sp(self) -> None:
        """RFC 9051 §9 SP: exactly one space."""
        if self.peek() != 0x20:
            self.fail("a space")
        self._pos += 1

    def try_sp(self) -> bool:
        if self.peek() == 0x20:
            self._pos += 1
            return True
        return False

    def expect(self, token: bytes) -> None:
        if not self.try_consume(token):
            self.fail(f'"{token.decode()}"')

    def try_consume(self, token: bytes) -> bool:
        end = self._pos + len(token)
        if self._line[self._pos : end].upper() == token.upper():
            self._pos = end
            return True
        return False

    def keyword(self, what: str = "a keyword") -> str:
        """A grammar keyword (command name, search key, fetch item...), upper-cased."""
        word = self.take_while(_KEYWORD_CHARS)
        if not word:
            self.fail(what)
        return word.decode("ascii").upper()

    def try_keyword(self, word: str) -> bool:
        """Consume `word` (case-insensitive) if it is the whole next keyword."""
        end = self._pos + len(word)
        if self._line[self._pos : end].upper() != word.encode("ascii"):
            return False
        if end < len(self._line) and self._line[end] in _KEYWORD_CHARS:
            return False
        self._pos = end
        return True

    def tag(self) -> str:
        """RFC 9051 §9 tag = 1*<any ASTRING-CHAR except "+">."""
        tag = self.take_while(TAG_CHARS)
        if not tag:
            self.fail("a command tag")
        return tag.decode("ascii")

    # -- strings --------------------------------------------------------------------------

    def atom(self, what: str = "an atom") -> str:
        """RFC 9051 §9 atom = 1*ATOM-CHAR."""
        atom = self.take_while(ATOM_CHARS)
        if not atom:
            self.fail(what)
        return atom.decode("ascii")

    def quoted(self) -> bytes:
        """RFC 9051 §9 quoted, with its escapes removed.

        8-bit content must be UTF-8 (RFC 9051 §9 QUOTED-CHAR includes UTF8-2..4).
        """
        match = _QUOTED.match(self._line, self._pos)
        if match is None:
            self._quoted_failure()
        self._pos = match.end()
        body = _QUOTED_ESCAPE.sub(rb"\1", match[1])
        if not body.isascii():
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("quoted string contains 8-bit data that is not UTF-8") from None
        return body

    def _quoted_failure(self) -> NoReturn:
        if self.peek() != 0x22:
            self.fail("a quoted string")
        position = self._pos + 1
        while position < len(self._line):
            octet = self._line[position]
            if octet == 0x5C:
                following = self._line[position + 1 : position + 2]
                if following not in (b'"', b"\\"):
                    raise ParseError('"\\" in a quoted string may only escape "\\" or \'"\'')
                position += 2
                continue
            if octet in (0x00, 0x0D, 0x0A):
                raise ParseError(f"quoted string contains the control octet 0x{octet:02x}")
            position += 1
        raise ParseError("unterminated quoted string")

    def literal(self, *, binary_allowed: bool = False) -> LiteralData:
        """RFC 9051 §4.3 literal; a literal8 (RFC 3516 §7) only where `binary_allowed`."""
        if not self.at_literal():
            self.fail("a literal")
        literal = self._segments[self._index + 1]
        assert isinstance(literal, LiteralData)
        if literal.binary and not binary_allowed:
            raise ParseError("a literal8 (~{n}) is only allowed for APPEND message data")
        # RFC 9051 §9 literal = ... *CHAR8, and CHAR8 excludes NUL.
        if not literal.binary and b"\x00" in literal.data:
            raise ParseError("literal contains a NUL octet: send binary data as a literal8 (~{n})")
        self._index += 2
        self._line = self._line_at(self._index)
        self._pos = 0
        return literal

    def string(self) -> bytes:
        """RFC 9051 §9 string = quoted / literal."""
        if self.peek() == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.literal().data
        self.fail("a string")

    def astring(self, what: str = "a string") -> bytes:
        """RFC 9051 §9 astring = 1*ASTRING-CHAR / string."""
        octet = self.peek()
        if octet is not None and octet in ASTRING_CHARS:
            return self.take_while(ASTRING_CHARS)
        if octet == 0x22 or self.at_literal():
            return self.string()
        self._refuse_bare_8bit(octet)
        self.fail(what)

    def _refuse_bare_8bit(self, octet: int | None) -> None:
        # RFC 9051 §9: atoms are 7-bit even under IMAP4rev2; UTF-8 needs quotes.
        if octet is not None and octet >= 0x80:
            raise ParseError("8-bit text must be sent as a quoted string or a literal")

    def nstring(self) -> bytes | None:
        """RFC 9051 §9 nstring = string / nil."""
        if self.try_keyword("NIL"):
            return None
        return self.string()

    def utf8(self, data: bytes, what: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not valid UTF-8") from None

    def astring_text(self, what: str) -> str:
        """An astring holding UTF-8 text (user names, quota roots, ...)."""
        return self.utf8(self.astring(what), what)

    # -- numbers --------------------------------------------------------------------------

    def _digits(self, what: str) -> bytes:
        digits = self.take_while(_DIGITS)
        if not digits:
            self.fail(what)
        # Longer than any number the grammar allows; also keeps int() cheap.
        if len(digits) > 20:
            raise ParseError(f"{what} out of range: {printable(digits)}")
        return digits

    def number(self) -> int:
        """RFC 9051 §9 number: unsigned 32-bit."""
        value = int(self._digits("a number"))
        if value > NUMBER_MAX:
            raise ParseError(f"number out of range: {value}")
        return value

    def nz_number(self, what: str = "a non-zero number") -> int:
        """RFC 9051 §9 nz-number = digit-nz *DIGIT, at most 32 bits."""
        if self.peek() == ord("0"):
            self.fail(what)
        value = int(self._digits(what))
        if value > NUMBER_MAX:
            raise ParseError(f"number out of range: {value}")
        return value

    def number64(self) -> int:
        """RFC 9051 §9 number64: unsigned 63-bit."""
        value = int(self._digits("a number"))
        if value > NUMBER64_MAX:
            raise ParseError(f"number out of range: {value}")
        return value

    def mod_sequence_value(self) -> int:
        """RFC 7162 §7 mod-sequence-value: 1 <= n <= 2^63 - 1."""
        value = self.number64()
        if value == 0:
            raise ParseError("mod-sequence must be greater than 0")
        return value

    def mod_sequence_valzer(self) -> int:
        """RFC 7162 §7 mod-sequence-valzer = "0" / mod-sequence-value."""
        return self.number64()

    # -- dates ----------------------------------------------------------------------------

    def date(self) -> date:
        """RFC 9051 §9 date = date-text / DQUOTE date-text DQUOTE."""
        match = _DATE.match(self._line, self._pos)
        if match is None or (match[1] == b'"') != (match[5] == b'"'):
            self.fail("a date such as 1-Feb-2024")
        day, month_name, year = int(match[2]), match[3].decode("ascii"), int(match[4])
        month = _MONTH_NUMBERS.get(month_name.upper())
        if month is None:
            raise ParseError(f"unknown month {month_name}: use Jan, Feb, ..., Dec")
        try:
            value = date(year, month, day)
        except ValueError:
            raise ParseError(f"no such date: {day}-{month_name}-{year}") from None
        self._pos = match.end()
        return value

    def date_time(self) -> datetime:
        """RFC 9051 §9 date-time, e.g. "17-Jul-1996 02:44:25 -0700"; timezone-aware."""
        match = _DATE_TIME.match(self._line, self._pos)
        if match is None:
            self.fail('a date-time such as "17-Jul-1996 02:44:25 -0700"')
        day, month_name, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
        month = _MONTH_NUMBERS.get(month_name.decode("ascii").upper())
        try:
            if month is None:
                raise ValueError(month_name)
            offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
            zone = timezone(-offset if sign == b"-" else offset)
            value = datetime(
                int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone
            )
        except ValueError:
            raise ParseError(f"invalid date-time {printable(match[0])}") from None
        self._pos = match.end()
        return value

    # -- flags and lists ------------------------------------------------------------------

    def flag(self) -> str:
        """RFC 9051 §9 flag: a system flag, "\\" atom (flag-extension) or a keyword atom."""
        if self.try_consume(b"\\"):
            name = "\\" + self.atom("a flag name after \\")
            return SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        """RFC 9051 §9 flag-list = "(" [flag *(SP flag)] ")"."""
        return self.parenthesised(Reader.flag, allow_empty=True)

    def parenthesised(self, item: Callable[[Reader], T], *, allow_empty: bool) -> tuple[T, ...]:
        """ "(" item *(SP item) ")", the shape of every list in the grammar."""
        self.expect(b"(")
        if allow_empty and self.try_consume(b")"):
            return ()
        items = [item(self)]
        while self.try_sp():
            items.append(item(self))
        self.expect(b")")
        return tuple(items)

    # -- mailbox names --------------------------------------------------------------------

    def mailbox(self, *, utf8: bool) -> str:
        """RFC 9051 §9 mailbox = "INBOX" / astring; INBOX is case-insensitive."""
        name = decode_mailbox(self.astring("a mailbox name"), utf8=utf8)
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self, *, utf8: bool) -> str:
        """RFC 9051 §9 list-mailbox = 1*list-char / string (may hold the wildcards % and *)."""
        octet = self.peek()
        if octet is not None and octet in LIST_CHARS:
            raw = self.take_while(LIST_CHARS)
        elif octet == 0x22 or self.at_literal():
            raw = self.string()
        else:
            self._refuse_bare_8bit(octet)
            self.fail("a mailbox pattern")
        return decode_mailbox(raw, utf8=utf8)


# -- modified UTF-7 (RFC 3501 §5.1.3) ---------------------------------------------------


def encode_modified_utf7(name: str) -> bytes:
    """Printable US-ASCII stands for itself ("&" as "&-"); every other run of characters
    becomes "&" + modified BASE64 of its UTF-16BE + "-"."""
    out = bytearray()
    pending: list[str] = []

    def shift_out() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be"))
            out.extend(b"&" + encoded.rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for character in name:
        if 0x20 <= ord(character) <= 0x7E:
            shift_out()
            out.extend(b"&-" if character == "&" else character.encode("ascii"))
        else:
            pending.append(character)
    shift_out()
    return bytes(out)


def decode_modified_utf7(data: bytes) -> str:
    """The inverse of `encode_modified_utf7`, refusing any spelling it would not produce
    (RFC 3501 §5.1.3: printable characters MUST NOT be encoded, and so on), so that one
    mailbox has one name on the wire."""
    parts: list[str] = []
    position = 0
    while position < len(data):
        octet = data[position]
        if octet == ord("&"):
            end = data.find(b"-", position + 1)
            if end < 0:
                raise ParseError("mailbox name has an unterminated &...- sequence")
            parts.append(_decode_shifted(data[position + 1 : end]))
            position = end + 1
        elif 0x20 <= octet <= 0x7E:
            parts.append(chr(octet))
            position += 1
        else:
            raise ParseError(
                f"mailbox name contains the octet 0x{octet:02x}: use modified UTF-7 "
                "(RFC 3501 §5.1.3) or enable UTF8=ACCEPT"
            )
    name = "".join(parts)
    if encode_modified_utf7(name) != data:
        raise ParseError(f"mailbox name {printable(data)} is not canonical modified UTF-7")
    return name


def _decode_shifted(chunk: bytes) -> str:
    if not chunk:
        return "&"
    if _MODIFIED_BASE64.fullmatch(chunk) is None:
        raise ParseError("mailbox name has an invalid modified BASE64 sequence")
    try:
        padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
        return base64.b64decode(padded, validate=True).decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError):
        raise ParseError("mailbox name has an invalid modified BASE64 sequence") from None


def decode_mailbox(raw: bytes, *, utf8: bool) -> str:
    """A mailbox name as the client sent it: UTF-8 under IMAP4rev2 / UTF8=ACCEPT (RFC 9051
    §5.1), modified UTF-7 otherwise."""
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("mailbox name is not valid UTF-8") from None
    return decode_modified_utf7(raw)


def encode_mailbox(name: str, *, utf8: bool) -> bytes:
    """A mailbox name as the client expects it (see `decode_mailbox`)."""
    return name.encode("utf-8") if utf8 else encode_modified_utf7(name)


# -- response side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atom:
    """An atom in a response (`FLAGS`, `OK`) or a flag (`\\Seen`, `\\*`): sent as is."""

    value: str

    def __post_init__(self) -> None:
        body = self.value[1:] if self.value.startswith("\\") else self.value
        valid = (self.value == "\\*") or (body != "" and all(ord(c) in ATOM_CHARS for c in body))
        if not valid:
            raise ValueError(f"not an atom: {self.value!r}")


@dataclass(frozen=True, slots=True)
class Encoded:
    """Response syntax already produced by a serialiser of this package (a sequence set,
    a fetch item name with its section), included verbatim."""

    value: bytes

    def __post_init__(self) -> None:
        if b"\r" in self.value or b"\n" in self.value:
            raise ValueError("encoded response syntax cannot span lines")


ResponseItem: TypeAlias = (
    "int | str | bytes | Atom | Encoded | LiteralData | datetime "
    "| list[ResponseItem] | tuple[ResponseItem, ...] | None"
)

# Longer strings go as literals: easier on clients' line buffers.
_QUOTED_MAX: Final = 1024


def quote(data: bytes) -> bytes:
    """RFC 9051 §9 quoted: DQUOTE, with "\\" and DQUOTE escaped, DQUOTE."""
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        raise ValueError("a quoted string cannot hold CR, LF or NUL")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """RFC 9051 §4.3 literal, or a literal8 (RFC 3516 §4.3) for BINARY fetch data."""
    if not binary and b"\x00" in data:
        raise ValueError("a literal cannot hold NUL: send it as a literal8")
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def render_string(data: bytes, *, utf8: bool = False) -> bytes:
    """A string in the cheaper form the client can read: quoted where possible, literal
    otherwise. Without `utf8` (IMAP4rev1), 8-bit text must go as a literal (RFC 3501 §9)."""
    quotable = (
        len(data) <= _QUOTED_MAX
        and b"\r" not in data
        and b"\n" not in data
        and b"\x00" not in data
        and (data.isascii() or (utf8 and _is_utf8(data)))
    )
    return quote(data) if quotable else literal(data)


def render_astring(data: bytes, *, utf8: bool = False) -> bytes:
    """RFC 9051 §9 astring: bare when every octet is an ASTRING-CHAR, else a string."""
    if data and all(octet in ASTRING_CHARS for octet in data):
        return data
    return render_string(data, utf8=utf8)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def format_date_time(value: datetime) -> bytes:
    """RFC 9051 §9 date-time, quoted, e.g. `" 7-Jul-1996 02:44:25 -0700"`."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("date-time needs a timezone")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    text = (
        f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value:%H:%M:%S} {sign}{hours:02d}{minutes:02d}"'
    )
    return text.encode("ascii")


def render(item: ResponseItem, *, utf8: bool = False) -> bytes:
    """One response value in wire form; `utf8` once IMAP4rev2 or UTF8=ACCEPT is enabled."""
    if item is None:
        return b"NIL"
    if isinstance(item, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(item, int):
        if not 0 <= item <= NUMBER64_MAX:
            raise ValueError(f"number out of range: {item}")
        return b"%d" % item
    if isinstance(item, str):
        return render_string(item.encode("utf-8"), utf8=utf8)
    if isinstance(item, bytes):
        return render_string(item, utf8=utf8)
    if isinstance(item, Atom):
        return item.value.encode("ascii")
    if isinstance(item, Encoded):
        return item.value
    if isinstance(item, LiteralData):
        return literal(item.data, binary=item.binary)
    if isinstance(item, datetime):
        return format_date_time(item)
    return b"(" + render_sequence(item, utf8=utf8) + b")"


def render_sequence(items: Iterable[ResponseItem], *, utf8: bool = False) -> bytes:
    """Values separated by SP, as in a response line or inside a list."""
    return b" ".join(render(item, utf8=utf8) for item in items)
