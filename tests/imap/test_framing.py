"""The command framer: cutting the client's stream into commands, literals included, and
refusing oversize input without holding it."""

from __future__ import annotations

import pytest

from mailserver.imap.framing import (
    CommandFramer,
    ContinuationRequest,
    Frame,
    FramerEvent,
    FramingError,
    FramingLimits,
)
from mailserver.imap.wire import LiteralData


def feed_all(framer: CommandFramer, data: bytes) -> list[FramerEvent]:
    """Feed `data` the way the server does: again with the remainder after each command."""
    events: list[FramerEvent] = []
    remaining = memoryview(data)
    while remaining:
        result = framer.feed(remaining)
        events.extend(result.events)
        assert len(result.remainder) < len(remaining) or result.events
        remaining = result.remainder
    return events


def frames(events: list[FramerEvent]) -> list[tuple[object, ...]]:
    return [event.segments for event in events if isinstance(event, Frame)]


def errors(events: list[FramerEvent]) -> list[FramingError]:
    return [event for event in events if isinstance(event, FramingError)]


MULTI_LITERAL = (
    b"A003 APPEND saved-messages (\\Seen) {12}\r\nHello\r\nWorld ~{3+}\r\nb\x00n\r\nA004 NOOP\r\n"
)
MULTI_LITERAL_FRAMES = [
    (
        b"A003 APPEND saved-messages (\\Seen) ",
        LiteralData(b"Hello\r\nWorld"),
        b" ",
        LiteralData(b"b\x00n", binary=True),
        b"",
    ),
    (b"A004 NOOP",),
]


def test_a_simple_line_is_one_frame() -> None:
    result = CommandFramer().feed(b"a1 NOOP\r\n")
    assert result.events == [Frame((b"a1 NOOP",))]
    assert not result.remainder


def test_a_line_ending_in_bare_lf_is_accepted() -> None:
    assert frames(feed_all(CommandFramer(), b"a1 NOOP\n")) == [(b"a1 NOOP",)]


def test_synchronising_literal_asks_for_continuation_before_its_octets() -> None:
    framer = CommandFramer()
    first = framer.feed(b"a1 LOGIN {4}\r\n")
    assert first.events == [ContinuationRequest(4)]
    second = framer.feed(b"fred secret\r\n")
    assert second.events == [Frame((b"a1 LOGIN ", LiteralData(b"fred"), b" secret"))]


def test_non_synchronising_literal_needs_no_continuation() -> None:
    events = feed_all(CommandFramer(), b"a1 LOGIN {4+}\r\nfred {6+}\r\nsecret\r\n")
    assert events == [
        Frame((b"a1 LOGIN ", LiteralData(b"fred"), b" ", LiteralData(b"secret"), b""))
    ]


def test_empty_literal_is_framed() -> None:
    events = feed_all(CommandFramer(), b"a1 LOGIN {0}\r\n {0+}\r\n\r\n")
    assert events == [
        ContinuationRequest(0),
        Frame((b"a1 LOGIN ", LiteralData(b""), b" ", LiteralData(b""), b"")),
    ]


def test_literal_marker_inside_a_line_is_not_a_literal() -> None:
    assert frames(feed_all(CommandFramer(), b'a1 SEARCH TEXT "{5}" ALL\r\n')) == [
        (b'a1 SEARCH TEXT "{5}" ALL',)
    ]


def test_commands_with_literals_frame_the_same_however_the_bytes_are_split() -> None:
    for split in range(1, len(MULTI_LITERAL)):
        framer = CommandFramer()
        events = feed_all(framer, MULTI_LITERAL[:split]) + feed_all(framer, MULTI_LITERAL[split:])
        assert frames(events) == MULTI_LITERAL_FRAMES, split
        assert framer.buffered == 0


def test_commands_with_literals_frame_the_same_fed_byte_by_byte() -> None:
    framer = CommandFramer()
    events: list[FramerEvent] = []
    for octet in MULTI_LITERAL:
        events.extend(feed_all(framer, bytes([octet])))
    assert frames(events) == MULTI_LITERAL_FRAMES
    assert [event for event in events if isinstance(event, ContinuationRequest)] == [
        ContinuationRequest(12)
    ]


def test_feed_stops_after_each_command_so_starttls_can_refuse_pipelined_plaintext() -> None:
    result = CommandFramer().feed(b"a1 STARTTLS\r\na2 LOGIN fred secret\r\n")
    assert result.events == [Frame((b"a1 STARTTLS",))]
    assert bytes(result.remainder) == b"a2 LOGIN fred secret\r\n"


# -- LITERAL+ / LITERAL- (RFC 7888) ---------------------------------------------------------


def test_literal_minus_accepts_non_synchronising_literals_up_to_4096_octets() -> None:
    data = b"a1 APPEND INBOX {4096+}\r\n" + b"x" * 4096 + b"\r\n"
    assert frames(feed_all(CommandFramer(), data)) == [
        (b"a1 APPEND INBOX ", LiteralData(b"x" * 4096), b"")
    ]


def test_literal_minus_refuses_a_larger_non_synchronising_literal_and_skips_it() -> None:
    framer = CommandFramer()
    data = b"a1 APPEND INBOX {4097+}\r\n" + b"x" * 4097 + b"\r\na2 NOOP\r\n"
    events = feed_all(framer, data)
    assert errors(events) == [
        FramingError(
            "a1",
            "non-synchronizing literal of 4097 octets exceeds 4096: "
            "send it as a synchronizing literal {4097}",
            "BAD",
            "TOOBIG",
        )
    ]
    assert frames(events) == [(b"a2 NOOP",)]


def test_literal_plus_configuration_accepts_large_non_synchronising_literals() -> None:
    framer = CommandFramer(FramingLimits(max_non_sync_literal=1_000_000))
    data = b"a1 APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n"
    assert frames(feed_all(framer, data)) == [(b"a1 APPEND INBOX ", LiteralData(b"x" * 5000), b"")]


# -- oversize input ------------------------------------------------------------------------

SMALL = FramingLimits(max_line=64, max_literal=100, max_command=300, max_non_sync_literal=100)


def test_oversize_synchronising_literal_is_refused_without_asking_for_it() -> None:
    framer = CommandFramer(SMALL)
    events = feed_all(framer, b"a1 APPEND INBOX {101}\r\n")
    assert events == [
        FramingError("a1", "literal of 101 octets exceeds the limit of 100", "NO", "TOOBIG")
    ]
    # The client does not send the literal; its next line is a new command.
    assert frames(feed_all(framer, b"a2 NOOP\r\n")) == [(b"a2 NOOP",)]


def test_oversize_non_synchronising_literal_is_skipped_with_the_rest_of_its_command() -> None:
    framer = CommandFramer(SMALL)
    data = (
        b"a1 APPEND INBOX {1000+}\r\n"
        + b"y" * 1000
        + b" {5+}\r\nfive!"
        + b" {3}\r\n"  # a synchronising literal ends the refused command: never sent
        + b"a2 NOOP\r\n"
    )
    events = feed_all(framer, data)
    assert [error.tag for error in errors(events)] == ["a1"]
    assert frames(events) == [(b"a2 NOOP",)]


def test_skipped_literal_octets_are_never_held() -> None:
    framer = CommandFramer(SMALL)
    feed_all(framer, b"a1 APPEND INBOX {100000+}\r\n")
    for _ in range(100):
        feed_all(framer, b"z" * 1000)
        assert framer.buffered == 0
    assert frames(feed_all(framer, b"\r\na2 NOOP\r\n")) == [(b"a2 NOOP",)]


def test_overlong_line_is_refused_once_and_framing_resumes_after_it() -> None:
    framer = CommandFramer(SMALL)
    events = feed_all(framer, b"a1 SEARCH " + b"x" * 10_000 + b"\r\na2 NOOP\r\n")
    assert errors(events) == [
        FramingError("a1", "command line too long: the limit is 64 octets", "BAD", None)
    ]
    assert frames(events) == [(b"a2 NOOP",)]


def test_overlong_line_arriving_in_pieces_is_never_held_beyond_the_limit() -> None:
    framer = CommandFramer(SMALL)
    events = feed_all(framer, b"a1 SEARCH ")
    for _ in range(50):
        events += feed_all(framer, b"x" * 7)
        assert framer.buffered <= SMALL.max_line + 1
    events += feed_all(framer, b"\r\na2 NOOP\r\n")
    assert [error.tag for error in errors(events)] == ["a1"]
    assert frames(events) == [(b"a2 NOOP",)]


def test_overlong_line_ending_in_a_non_synchronising_literal_skips_that_literal() -> None:
    framer = CommandFramer(SMALL)
    data = b"a1 LOGIN " + b"u" * 100 + b" {6+}\r\nsecret\r\na2 NOOP\r\n"
    events = feed_all(framer, data)
    assert len(errors(events)) == 1
    assert frames(events) == [(b"a2 NOOP",)]


def test_line_of_exactly_the_limit_is_accepted_even_with_its_cr_in_a_later_chunk() -> None:
    line = b"a1 X " + b"y" * (SMALL.max_line - 5)
    framer = CommandFramer(SMALL)
    assert feed_all(framer, line + b"\r") == []
    assert frames(feed_all(framer, b"\n")) == [(line,)]
    over = CommandFramer(SMALL)
    assert len(errors(feed_all(over, line + b"z\r\n"))) == 1


def test_whole_command_size_is_bounded_across_literals() -> None:
    framer = CommandFramer(SMALL)
    data = b"a1 APPEND INBOX {100+}\r\n" + b"m" * 100
    data += b" {100+}\r\n" + b"m" * 100 + b" {100+}\r\n" + b"m" * 100 + b"\r\na2 NOOP\r\n"
    events = feed_all(framer, data)
    assert errors(events) == [
        FramingError("a1", "command too long: the limit is 300 octets", "NO", "TOOBIG")
    ]
    assert frames(events) == [(b"a2 NOOP",)]


def test_refusal_without_a_readable_tag_has_no_tag() -> None:
    events = feed_all(CommandFramer(SMALL), b"(" * 100 + b"\r\n")
    assert errors(events)[0].tag is None


@pytest.mark.parametrize(
    "limits",
    [
        {"max_line": 0},
        {"max_non_sync_literal": -1},
        {"max_line": 10, "max_command": 5},
    ],
)
def test_inconsistent_limits_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FramingLimits(**limits)
