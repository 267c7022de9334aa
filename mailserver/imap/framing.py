"""Cutting the client's byte stream into IMAP commands, without I/O and in bounded memory.

A command is one line, or several when it carries literals: a line ending in a literal
marker (RFC 9051 §4.3) is followed by that many octets and then by the rest of the
command on the next line. The `CommandFramer` is fed bytes as they arrive and reports:

- `Frame`: a complete command, as the segments `mailserver.imap.wire.Reader` reads
  (lines without CRLF or marker, alternating with `LiteralData`);
- `ContinuationRequest`: a synchronising literal `{n}` was accepted, so the server must
  now send `+ ...` before the client sends its octets;
- `FramingError`: the command was refused before it was complete (line too long,
  literal too large); the server answers `<tag> BAD|NO [code] reason`. The framer has
  already resynchronised: it skips what the client still sends of that command (the
  octets of a non-synchronising literal, the rest of an overlong line) without storing
  them, and never stores the octets of a refused synchronising literal because the
  client, seeing the tagged refusal instead of `+`, does not send them (RFC 9051 §2.2.1).

Non-synchronising literals `{n+}` are LITERAL+ / LITERAL- (RFC 7888): with LITERAL-
(the default, `max_non_sync_literal=4096`) a larger `{n+}` is refused with BAD [TOOBIG].
Literal8 `~{n}` (RFC 3516) frames like a literal and is flagged as binary.

`feed` stops after each complete command and hands back the unread bytes, so that after
STARTTLS or COMPRESS the server can refuse data the client sent before the switch
(pipelined plaintext after STARTTLS is a known injection attack). The client's
AUTHENTICATE responses and IDLE's `DONE` are plain lines: they arrive as one-segment
frames.

Memory: the framer holds at most `max_command` octets of the current command plus one
pending CR.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from mailserver.imap.wire import TAG_CHARS, LiteralData, Segment

# RFC 9051 §9 literal = "{" number64 ["+"] "}" CRLF, literal8 = "~{" number64 ["+"] "}"
# CRLF (RFC 3516 §7 and RFC 4466 §3, RFC 7888 §8). Twenty digits cover every number64.
_MARKER: Final = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\Z")
_LF: Final = re.compile(rb"\n")
# Enough of a skipped line to recognise a literal marker at its end.
_TAIL: Final = 32
# Enough of a line to read the tag from it.
_TAG_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class FramingLimits:
    """How much of a command the server is prepared to hold.

    `max_line`: octets of one line, CRLF excluded. `max_literal`: octets of one literal.
    `max_command`: octets of a whole command, lines and literals together (an APPEND of
    several messages, RFC 3502, is one command). `max_non_sync_literal`: the largest
    `{n+}` accepted: 4096 for LITERAL- (RFC 7888 §5); `max_literal` for LITERAL+.
    """

    max_line: int = 8192
    max_literal: int = 32 * 1024 * 1024
    max_command: int = 64 * 1024 * 1024
    max_non_sync_literal: int = 4096

    def __post_init__(self) -> None:
        if min(self.max_line, self.max_literal, self.max_command) < 1:
            raise ValueError("framing limits must be positive")
        if self.max_non_sync_literal < 0:
            raise ValueError("max_non_sync_literal cannot be negative")
        if self.max_line > self.max_command:
            raise ValueError("max_line cannot exceed max_command")


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete command: line, literal, line, ..., line."""

    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    """A synchronising literal of `size` octets was accepted: send `+ ...` now."""

    size: int


@dataclass(frozen=True, slots=True)
class FramingError:
    """The command was refused while being framed; answer `<tag> <status> [<code>] <reason>`
    (`* BAD ...` when the tag could not be read)."""

    tag: str | None
    reason: str
    status: Literal["BAD", "NO"] = "BAD"
    code: str | None = None


FramerEvent: TypeAlias = Frame | ContinuationRequest | FramingError


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What `feed` found, and the bytes it left unread after the first complete command."""

    events: list[FramerEvent]
    remainder: memoryview


class _State(enum.Enum):
    LINE = enum.auto()  # reading a line of the command
    LITERAL = enum.auto()  # reading a literal's octets
    SKIP_LINE = enum.auto()  # discarding the rest of a refused command's line
    SKIP_LITERAL = enum.auto()  # discarding a refused non-synchronising literal


class CommandFramer:
    """Incremental IMAP command framer; see the module docstring."""

    def __init__(self, limits: FramingLimits | None = None) -> None:
        self.limits = limits or FramingLimits()
        self._start_command()

    def _start_command(self) -> None:
        self._state = _State.LINE
        self._line = bytearray()
        self._segments: list[Segment] = []
        self._held = 0  # octets in _segments
        self._literal = bytearray()
        self._remaining = 0  # literal octets still to read or skip
        self._binary = False
        self._tag: str | None = None
        self._tail = b""

    @property
    def buffered(self) -> int:
        """Octets of the current, incomplete command held in memory."""
        return len(self._line) + len(self._literal) + self._held

    def feed(self, data: bytes | bytearray | memoryview) -> FeedResult:
        """Consume `data` up to the end of the first complete command (or all of it)."""
        view = memoryview(data).cast("B")
        events: list[FramerEvent] = []
        position = 0
        while position < len(view):
            if self._state is _State.LINE:
                position = self._read_line(view, position, events)
                if events and isinstance(events[-1], Frame):
                    break
            elif self._state is _State.LITERAL:
                take = min(self._remaining, len(view) - position)
                self._literal += view[position : position + take]
                self._remaining -= take
                position += take
                if self._remaining == 0:
                    self._finish_literal()
            elif self._state is _State.SKIP_LITERAL:
                take = min(self._remaining, len(view) - position)
                self._remaining -= take
                position += take
                if self._remaining == 0:
                    self._state = _State.SKIP_LINE
                    self._tail = b""
            else:
                position = self._skip_line(view, position)
        return FeedResult(events, view[position:])

    # -- lines ----------------------------------------------------------------------------

    def _line_room(self) -> int:
        return min(self.limits.max_line, self.limits.max_command - self._held)

    def _read_line(self, view: memoryview, position: int, events: list[FramerEvent]) -> int:
        room = self._line_room()
        # The LF must come within room octets of content plus one CR.
        window_end = min(len(view), position + room + 2 - len(self._line))
        found = _LF.search(view, position, window_end)
        end = found.start() if found else window_end
        self._line += view[position:end]
        if found is None:
            if self._overlong(room):
                if not self._segments:
                    self._tag = _tag_of(bytes(self._line[:_TAG_MAX]))
                events.append(self._line_refusal(room))
                self._discard(tail=bytes(self._line[-_TAIL:]))
                self._state = _State.SKIP_LINE
            return end
        line = bytes(self._line.removesuffix(b"\r"))
        self._line = bytearray()
        if not self._segments:
            self._tag = _tag_of(line)
        if len(line) > room:
            events.append(self._line_refusal(room))
            self._discard(tail=line[-_TAIL:])
            self._end_skipped_line()
        else:
            self._complete_line(line, events)
        return end + 1

    def _overlong(self, room: int) -> bool:
        excess = len(self._line) - room
        return excess > 1 or (excess == 1 and self._line[-1] != 0x0D)

    def _line_refusal(self, room: int) -> FramingError:
        if room == self.limits.max_line:
            reason = f"command line too long: the limit is {self.limits.max_line} octets"
            return FramingError(self._tag, reason)
        reason = f"command too long: the limit is {self.limits.max_command} octets"
        return FramingError(self._tag, reason, "NO", "TOOBIG")

    def _discard(self, *, tail: bytes = b"") -> None:
        """Drop what is held of a refused command; keep only the end of its current line."""
        self._line = bytearray()
        self._segments = []
        self._held = 0
        self._literal = bytearray()
        self._tail = tail

    def _complete_line(self, line: bytes, events: list[FramerEvent]) -> None:
        marker = _MARKER.search(line)
        if marker is None:
            self._segments.append(line)
            events.append(Frame(tuple(self._segments)))
            self._start_command()
            return
        size = int(marker[2])
        non_synchronising = marker[3] == b"+"
        prefix = line[: marker.start()]
        refusal = self._refuse_literal(size, len(prefix), non_synchronising)
        if refusal is not None:
            events.append(refusal)
            if non_synchronising:
                # The client sends the octets anyway: skip them and the rest of the command
                # (RFC 7888 §4, first choice).
                self._discard()
                self._state = _State.SKIP_LITERAL
                self._remaining = size
            else:
                self._start_command()
            return
        self._segments.append(prefix)
        self._held += len(prefix)
        self._binary = marker[1] == b"~"
        self._remaining = size
        self._state = _State.LITERAL
        if not non_synchronising:
            events.append(ContinuationRequest(size))
        if size == 0:
            self._finish_literal()

    def _refuse_literal(
        self, size: int, prefix: int, non_synchronising: bool
    ) -> FramingError | None:
        limits = self.limits
        if non_synchronising and size > limits.max_non_sync_literal:
            # RFC 7888 §5 (LITERAL-): a larger non-synchronising literal gets BAD [TOOBIG].
            return FramingError(
                self._tag,
                f"non-synchronizing literal of {size} octets exceeds "
                f"{limits.max_non_sync_literal}: send it as a synchronizing literal {{{size}}}",
                "BAD",
                "TOOBIG",
            )
        if size > limits.max_literal:
            return FramingError(
                self._tag,
                f"literal of {size} octets exceeds the limit of {limits.max_literal}",
                "NO",
                "TOOBIG",
            )
        if self._held + prefix + size > limits.max_command:
            return FramingError(
                self._tag,
                f"command too long: the limit is {limits.max_command} octets",
                "NO",
                "TOOBIG",
            )
        return None

    def _finish_literal(self) -> None:
        self._segments.append(LiteralData(bytes(self._literal), self._binary))
        self._held += len(self._literal)
        self._literal = bytearray()
        self._state = _State.LINE

    # -- skipping a refused command ---------------------------------------------------

    def _skip_line(self, view: memoryview, position: int) -> int:
        found = _LF.search(view, position)
        end = found.start() if found else len(view)
        self._tail = (self._tail + bytes(view[max(position, end - _TAIL) : end]))[-_TAIL:]
        if found is None:
            return end
        self._end_skipped_line()
        return end + 1

    def _end_skipped_line(self) -> None:
        """A refused command's line ended: skip on if it announced a literal the client
        will send regardless; otherwise the command is over."""
        marker = _MARKER.search(self._tail.removesuffix(b"\r"))
        if marker is not None and marker[3] == b"+":
            self._state = _State.SKIP_LITERAL
            self._remaining = int(marker[2])
            if self._remaining == 0:
                self._state = _State.SKIP_LINE
                self._tail = b""
        else:
            self._start_command()


def _tag_of(line: bytes) -> str | None:
    """RFC 9051 §9 tag, if the line starts with one followed by SP."""
    length = 0
    while length < min(len(line), _TAG_MAX) and line[length] in TAG_CHARS:
        length += 1
    if 0 < length < len(line) and line[length] == 0x20:
        return line[:length].decode("ascii")
    return None
