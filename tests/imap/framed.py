"""Helpers for the IMAP wire tests: client bytes as the framer hands them to the parser."""

from __future__ import annotations

from mailserver.imap.commands import Command, parse_command
from mailserver.imap.framing import CommandFramer, Frame, FramingLimits
from mailserver.imap.wire import Reader, Segment

# LITERAL+ so that tests may write {n+} of any size.
_LIMITS = FramingLimits(max_non_sync_literal=FramingLimits().max_literal)


def segments(data: bytes) -> tuple[Segment, ...]:
    """The segments of the one complete command in `data` (CRLF-terminated)."""
    result = CommandFramer(_LIMITS).feed(data)
    frames = [event for event in result.events if isinstance(event, Frame)]
    assert len(frames) == 1, result.events
    assert not result.remainder
    return frames[0].segments


def reader(arguments: bytes) -> Reader:
    """A reader over `arguments`, which may contain literals; the final CRLF is added."""
    return Reader(segments(arguments + b"\r\n"))


def parse(line: bytes, *, utf8: bool = False) -> Command:
    """The command in `line` (CRLF added), without its tag."""
    return parse_command(segments(line + b"\r\n"), utf8=utf8).command
