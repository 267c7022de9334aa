"""Fuzzing the framer and the parser: whatever a client sends, they answer with frames,
framing errors or `ParseError`, in bounded memory and bounded time."""

from __future__ import annotations

import itertools
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.commands import parse_command
from mailserver.imap.framing import CommandFramer, Frame, FramerEvent, FramingLimits
from mailserver.imap.wire import LiteralData, ParseError, Segment

LIMITS = FramingLimits(max_line=200, max_literal=300, max_command=1000, max_non_sync_literal=64)

# Fragments of IMAP, so that random commands get past the first token often enough to
# reach the deeper grammar.
TOKENS = [
    *(b"a1 ", b"* ", b"+ ", b"UID ", b" ", b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b"\xc3\xa9"),
    *(b"FETCH ", b"SEARCH ", b"STORE ", b"SELECT ", b"LIST ", b"APPEND ", b"LOGIN ", b"ID "),
    *(b"SORT ", b"THREAD ", b"STATUS ", b"CREATE ", b"AUTHENTICATE ", b"ENABLE ", b"EXPUNGE"),
    *(b"(", b")", b"[", b"]", b"<", b">", b".", b":", b",", b"*", b"$", b"%", b'"', b"\\"),
    *(b"{3}\r\n", b"{2+}\r\n", b"{0}\r\n", b"~{1}\r\n", b"{99999+}\r\n", b"{70+}\r\n", b"{"),
    *(b"0", b"1", b"42", b"4294967296", b"99999999999999999999999", b"1:*", b"7:3"),
    *(b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.SIZE", b"HEADER.FIELDS", b"MIME", b"TEXT"),
    *(b"NOT ", b"OR ", b"ALL", b"UNSEEN", b"SINCE 1-Feb-2024", b"MODSEQ ", b"KEYWORD "),
    *(b"CHARSET UTF-8 ", b"RETURN ", b"CHANGEDSINCE ", b"VANISHED", b"UNCHANGEDSINCE "),
    *(b"QRESYNC ", b"CONDSTORE", b"+FLAGS ", b"\\Seen", b"NIL", b"INBOX", b"&U,BTFw-", b"&"),
    *(b'" 7-Feb-1994 21:52:25 -0800"', b"RECURSIVEMATCH", b"SUBSCRIBED", b"USE "),
]
imap_like = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)

# Valid commands to mutate: small edits of them reach every corner of the grammar.
VALID_COMMANDS = [
    b'a1 LOGIN fred "se\\\\cr\\"et"\r\n',
    b"a1 AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0\r\n",
    b'a1 ID ("name" "x" "version" NIL)\r\n',
    b"a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1:5 1:5)))\r\n",
    b"a1 CREATE Envoy&AOk-s (USE (\\Sent))\r\n",
    b'a1 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "a/%")'
    b" RETURN (CHILDREN STATUS (MESSAGES))\r\n",
    b"a1 STATUS x (UIDNEXT MESSAGES HIGHESTMODSEQ APPENDLIMIT)\r\n",
    b'a1 APPEND Sent (\\Seen) " 7-Feb-1994 21:52:25 -0800" {5+}\r\nhello ~{3+}\r\nb\x00n\r\n',
    b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (Date From)]<0.100>)"
    b" (CHANGEDSINCE 1 VANISHED)\r\n",
    b"a1 FETCH 2 (BINARY.PEEK[1]<0.8> BINARY.SIZE[2] BODY[3.MIME] RFC822.HEADER ENVELOPE)\r\n",
    b"a1 UID STORE 7 (UNCHANGEDSINCE 5) -FLAGS.SILENT (\\Seen $Junk)\r\n",
    b"a1 SEARCH RETURN (MIN SAVE) CHARSET UTF-8 OR FROM {3+}\r\nbob NOT (SEEN 1:5,7)"
    b' MODSEQ "/flags/\\\\draft" all 6\r\n',
    b"a1 SEARCH SINCE 1-Feb-2024 LARGER 100 HEADER X-Y z UID $ KEYWORD $Fw\r\n",
    b"a1 UID SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\n",
    b"a1 THREAD REFERENCES US-ASCII UNSEEN\r\n",
    b"a1 UID MOVE 1:3 &U,BTFw-\r\n",
    b"a1 UID EXPUNGE 3000:3002\r\n",
]
mutation = st.tuples(
    st.integers(min_value=0, max_value=200),
    st.sampled_from(["insert", "delete", "replace"]),
    st.sampled_from(
        [*(bytes([octet]) for octet in b' ()[]<>{}".:,*$\\+~0179aZ\r\n\x00\xff'), *TOKENS]
    ),
)


def mutate(command: bytes, mutations: list[tuple[int, str, bytes]]) -> bytes:
    for position, operation, fragment in mutations:
        at = position % (len(command) + 1)
        if operation == "insert":
            command = command[:at] + fragment + command[at:]
        elif operation == "delete":
            command = command[:at] + command[at + len(fragment) :]
        else:
            command = command[:at] + fragment + command[at + len(fragment) :]
    return command


mutated_commands = st.builds(
    mutate, st.sampled_from(VALID_COMMANDS), st.lists(mutation, min_size=1, max_size=4)
)
client_bytes = st.one_of(st.binary(max_size=3000), imap_like, mutated_commands)


def feed_in_chunks(framer: CommandFramer, data: bytes, cuts: list[int]) -> list[FramerEvent]:
    """Feed `data` cut at `cuts`, checking progress and memory after every call."""
    events: list[FramerEvent] = []
    bounds = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        remaining = memoryview(data[start:end])
        while remaining:
            result = framer.feed(remaining)
            # Every call consumes something: no loop can spin forever.
            assert len(result.remainder) < len(remaining)
            assert framer.buffered <= LIMITS.max_command + 1
            events.extend(result.events)
            remaining = result.remainder
    return events


def parse_only_refuses_with_parse_error(segments: tuple[Segment, ...] | list[Segment]) -> None:
    try:
        parse_command(segments)
    except ParseError as error:
        assert error.reason
        assert "\r" not in error.reason and "\n" not in error.reason


@settings(max_examples=300, deadline=None)
@given(client_bytes, st.lists(st.integers(min_value=0, max_value=4000), max_size=8))
def test_framer_and_parser_survive_any_client_bytes(data: bytes, cuts: list[int]) -> None:
    framer = CommandFramer(LIMITS)
    for event in feed_in_chunks(framer, data, cuts):
        if isinstance(event, Frame):
            for segment in event.segments:
                if isinstance(segment, LiteralData):
                    assert len(segment.data) <= LIMITS.max_literal
                else:
                    assert len(segment) <= LIMITS.max_line
            parse_only_refuses_with_parse_error(event.segments)


@settings(max_examples=300, deadline=None)
@given(client_bytes)
def test_framing_does_not_depend_on_how_the_bytes_are_split(data: bytes) -> None:
    whole = feed_in_chunks(CommandFramer(LIMITS), data, [])
    halves = feed_in_chunks(CommandFramer(LIMITS), data, [len(data) // 2])
    assert whole == halves


segment_lists = st.lists(
    st.tuples(imap_like, st.builds(LiteralData, st.binary(max_size=40), st.booleans())),
    max_size=4,
).flatmap(
    lambda pairs: imap_like.map(lambda last: [part for pair in pairs for part in pair] + [last])
)


@settings(max_examples=300, deadline=None)
@given(segment_lists)
def test_parser_refuses_any_malformed_segments_with_parse_error_only(
    segments: list[Segment],
) -> None:
    parse_only_refuses_with_parse_error(segments)


def test_the_unmutated_corpus_parses() -> None:
    for command in VALID_COMMANDS:
        framer = CommandFramer(LIMITS)
        events = feed_in_chunks(framer, command, [])
        (frame,) = [event for event in events if isinstance(event, Frame)]
        parse_command(frame.segments)


@settings(max_examples=300, deadline=None)
@given(imap_like, st.binary(max_size=200))
def test_parser_on_tagged_fragments_refuses_with_parse_error_only(
    words: bytes, noise: bytes
) -> None:
    for line in (b"a1 " + words, b"a1 UID " + words, b"a1 " + words + noise):
        parse_only_refuses_with_parse_error([line.replace(b"\r", b"").replace(b"\n", b"")])


def test_adversarial_lines_are_refused_quickly() -> None:
    # Patterns that make naive regular expressions or recursion blow up.
    lines = [
        b'a1 LOGIN "' + b"a" * 8000,
        b'a1 LOGIN "' + b"\\\\" * 4000,
        b"a1 SEARCH " + b"NOT " * 2000 + b"ALL",
        b"a1 SEARCH " + b"(" * 4000 + b"ALL",
        b"a1 SEARCH " + b"OR ALL " * 1000 + b"ALL",
        b"a1 FETCH " + b"1," * 4000 + b"1 FLAGS",
        b"a1 FETCH 1 BODY[" + b"1." * 4000 + b"]",
        b"a1 AUTHENTICATE PLAIN " + b"A" * 8001,
        b"a1 SELECT &" + b"A" * 8000,
    ]
    for line in lines:
        started = time.perf_counter()
        parse_only_refuses_with_parse_error([line])
        assert time.perf_counter() - started < 0.5, line[:40]
