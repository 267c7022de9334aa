"""Whole commands: each one parses to its typed form, and malformed ones are refused with
the tag and a reason fit for `<tag> BAD <reason>`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailserver.imap.commands import (
    AnyStateCommand,
    Append,
    AppendMessage,
    Authenticate,
    AuthenticatedCommand,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    NotAuthenticatedCommand,
    QResync,
    Rename,
    Search,
    Select,
    SelectedCommand,
    Sort,
    StartTLS,
    Status,
    Store,
    Subscribe,
    TaggedCommand,
    Thread,
    UidExpunge,
    Unselect,
    Unsubscribe,
    parse_command,
)
from mailserver.imap.specials import (
    AllKey,
    BodySection,
    FetchItem,
    FlagKey,
    HeaderKey,
    ListReturn,
    ListReturnOption,
    ListSelectOption,
    SavedResult,
    SearchReturn,
    Section,
    SequenceRange,
    SequenceSet,
    SortCriterion,
    SortKey,
    StatusItem,
    StoreAction,
    StoreMode,
    ThreadAlgorithm,
)
from mailserver.imap.wire import LiteralData, ParseError
from tests.imap.framed import parse, segments


def sequence(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(SequenceRange(first, last) for first, last in ranges))


def refusal(line: bytes, *, utf8: bool = False) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse(line, utf8=utf8)
    return caught.value


@pytest.mark.parametrize(
    ("line", "command"),
    [
        # any state
        (b"a CAPABILITY", Capability()),
        (b"a noop", Noop()),
        (b"a LOGOUT", Logout()),
        (b"a ID NIL", Id(None)),
        (b"a ID ()", Id(())),
        (
            b'a ID ("name" "Thunderbird" "version" NIL)',
            Id((("name", "Thunderbird"), ("version", None))),
        ),
        (b"a COMPRESS deflate", Compress("DEFLATE")),
        # not authenticated
        (b"a STARTTLS", StartTLS()),
        (b"a AUTHENTICATE external", Authenticate("EXTERNAL")),
        (b"a AUTHENTICATE EXTERNAL =", Authenticate("EXTERNAL", b"")),
        (b"a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0", Authenticate("PLAIN", b"\x00fred\x00secret")),
        (b'a LOGIN fred "pass word"', Login("fred", "pass word")),
        (b"a LOGIN {4+}\r\nfred {6+}\r\nsecret", Login("fred", "secret")),
        # authenticated
        (b"a ENABLE IMAP4rev2 condstore", Enable(("IMAP4REV2", "CONDSTORE"))),
        (b"a SELECT inbox", Select("INBOX")),
        (b"a SELECT Archive (CONDSTORE)", Select("Archive", condstore=True)),
        (
            b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
            Select(
                "INBOX",
                qresync=QResync(
                    67890007, 20050715194045000, sequence((41, 41), (43, 211), (214, 541))
                ),
            ),
        ),
        (
            b"a EXAMINE INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 5000,7500)))",
            Examine(
                "INBOX",
                qresync=QResync(
                    67890007,
                    90060115194045000,
                    sequence((1, 29997)),
                    (sequence((5000, 5000), (7500, 7500)), sequence((5000, 5000), (7500, 7500))),
                ),
            ),
        ),
        (
            b"a EXAMINE INBOX (QRESYNC (1 2 (3 4)))",
            Examine("INBOX", qresync=QResync(1, 2, None, (sequence((3, 3)), sequence((4, 4))))),
        ),
        (b"a CREATE Projets/2024", Create("Projets/2024")),
        (b"a CREATE Envoy&AOk-s (USE (\\sent))", Create("Envoyés", ("\\Sent",))),
        (b"a DELETE old", Delete("old")),
        (b"a RENAME old new", Rename("old", "new")),
        (b"a SUBSCRIBE news", Subscribe("news")),
        (b"a UNSUBSCRIBE news", Unsubscribe("news")),
        (b'a LIST "" %', List("", ("%",))),
        (b'a LIST ~smith/Mail/ "foo.*"', List("~smith/Mail/", ("foo.*",))),
        (
            b'a LIST (SUBSCRIBED) "" ("INBOX" "Drafts") RETURN (CHILDREN STATUS (MESSAGES))',
            List(
                "",
                ("INBOX", "Drafts"),
                frozenset({ListSelectOption.SUBSCRIBED}),
                ListReturn(
                    frozenset({ListReturnOption.CHILDREN, ListReturnOption.STATUS}),
                    (StatusItem.MESSAGES,),
                ),
                extended=True,
            ),
        ),
        (
            b'a LIST "" * RETURN (SPECIAL-USE)',
            List(
                "",
                ("*",),
                returns=ListReturn(frozenset({ListReturnOption.SPECIAL_USE})),
                extended=True,
            ),
        ),
        (b'a LSUB "#news." "comp.mail.*"', Lsub("#news.", "comp.mail.*")),
        (b"a NAMESPACE", Namespace()),
        (
            b"a STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)",
            Status(
                "blurdybloop", (StatusItem.UIDNEXT, StatusItem.MESSAGES, StatusItem.HIGHESTMODSEQ)
            ),
        ),
        (b"a APPEND INBOX {5+}\r\nhello", Append("INBOX", (AppendMessage(b"hello"),))),
        (b"a IDLE", Idle()),
        (b'a GETQUOTA ""', GetQuota("")),
        (b"a GETQUOTAROOT INBOX", GetQuotaRoot("INBOX")),
        # selected
        (b"a CHECK", Check()),
        (b"a CLOSE", Close()),
        (b"a UNSELECT", Unselect()),
        (b"a EXPUNGE", Expunge()),
        (b"a UID EXPUNGE 3000:3002", UidExpunge(sequence((3000, 3002)))),
        (b"a SEARCH UNSEEN", Search(False, FlagKey("\\Seen", False))),
        (
            b"a UID SEARCH CHARSET UTF-8 FROM smith",
            Search(True, HeaderKey("From", "smith"), "UTF-8"),
        ),
        (
            b"a SEARCH RETURN (MIN COUNT) CHARSET US-ASCII ALL",
            Search(False, AllKey(), "US-ASCII", frozenset({SearchReturn.MIN, SearchReturn.COUNT})),
        ),
        (b"a SEARCH RETURN () ALL", Search(False, AllKey(), None, frozenset({SearchReturn.ALL}))),
        (
            b"a FETCH 1:* FAST",
            Fetch(
                False,
                sequence((1, None)),
                (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE),
            ),
        ),
        (
            b"a UID FETCH 300:500 (FLAGS BODY.PEEK[]) (CHANGEDSINCE 12345 VANISHED)",
            Fetch(
                True,
                sequence((300, 500)),
                (FetchItem.FLAGS, BodySection(Section(), peek=True)),
                changed_since=12345,
                vanished=True,
            ),
        ),
        (b"a FETCH $ UID", Fetch(False, SavedResult(), (FetchItem.UID,))),
        (
            b"a STORE 2:4 +FLAGS (\\Deleted)",
            Store(False, sequence((2, 4)), StoreAction(StoreMode.ADD, False, ("\\Deleted",))),
        ),
        (
            b"a UID STORE 7 (UNCHANGEDSINCE 320162338) -FLAGS.SILENT \\Seen",
            Store(
                True, sequence((7, 7)), StoreAction(StoreMode.REMOVE, True, ("\\Seen",)), 320162338
            ),
        ),
        (b"a COPY 2:4 MEETING", Copy(False, sequence((2, 4)), "MEETING")),
        (b"a UID COPY 1 Trash", Copy(True, sequence((1, 1)), "Trash")),
        (b"a MOVE 1:3 Archive", Move(False, sequence((1, 3)), "Archive")),
        (b"a UID MOVE $ Archive", Move(True, SavedResult(), "Archive")),
        (
            b"a SORT (REVERSE ARRIVAL) UTF-8 SEEN",
            Sort(False, (SortCriterion(SortKey.ARRIVAL, True),), "UTF-8", FlagKey("\\Seen", True)),
        ),
        (
            b"a UID SORT (SUBJECT) US-ASCII ALL",
            Sort(True, (SortCriterion(SortKey.SUBJECT),), "US-ASCII", AllKey()),
        ),
        (
            b"a THREAD REFERENCES UTF-8 ALL",
            Thread(False, ThreadAlgorithm.REFERENCES, "UTF-8", AllKey()),
        ),
        (
            b"a UID THREAD ORDEREDSUBJECT UTF-8 ALL",
            Thread(True, ThreadAlgorithm.ORDEREDSUBJECT, "UTF-8", AllKey()),
        ),
    ],
)
def test_every_command_parses_to_its_typed_form(line: bytes, command: Command) -> None:
    assert parse(line) == command


def test_parse_command_returns_the_tag_with_the_command() -> None:
    assert parse_command(segments(b"A0001 NOOP\r\n")) == TaggedCommand("A0001", Noop())


@pytest.mark.parametrize(
    ("command", "state"),
    [
        (Capability(), AnyStateCommand),
        (Id(None), AnyStateCommand),
        (Compress("DEFLATE"), AnyStateCommand),
        (Login("a", "b"), NotAuthenticatedCommand),
        (StartTLS(), NotAuthenticatedCommand),
        (Enable(("X",)), AuthenticatedCommand),
        (Idle(), AuthenticatedCommand),
        (Expunge(), SelectedCommand),
        (UidExpunge(SavedResult()), SelectedCommand),
    ],
)
def test_commands_are_grouped_by_the_state_they_are_valid_in(
    command: Command, state: type[Command]
) -> None:
    assert isinstance(command, state)


def test_multiappend_reads_each_message_with_its_flags_and_date() -> None:
    line = (
        b'a APPEND Sent (\\Seen) " 7-Feb-1994 21:52:25 -0800" {5+}\r\nfirst'
        b" {6+}\r\nsecond"
        b" ($Forwarded) ~{3+}\r\nb\x00n"
    )
    assert parse(line) == Append(
        "Sent",
        (
            AppendMessage(
                b"first",
                ("\\Seen",),
                datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(-timedelta(hours=8))),
            ),
            AppendMessage(b"second"),
            AppendMessage(b"b\x00n", ("$Forwarded",), binary=True),
        ),
    )


def test_mailbox_names_follow_the_session_encoding() -> None:
    assert parse(b"a SELECT &U,BTFw-") == Select("台北")
    assert parse('a SELECT "台北"'.encode(), utf8=True) == Select("台北")
    assert parse("a SELECT {6+}\r\n台北".encode(), utf8=True) == Select("台北")
    # Under UTF-8, "&" is just a character.
    assert parse(b"a SELECT AT&T", utf8=True) == Select("AT&T")


def test_login_and_append_reprs_keep_secrets_and_contents_out_of_logs() -> None:
    assert "hunter2" not in repr(Login("fred", "hunter2"))
    assert "confidential" not in repr(Append("INBOX", (AppendMessage(b"confidential"),)))


@pytest.mark.parametrize(
    ("line", "tag", "reason"),
    [
        (b"", None, "empty command line"),
        (b"+ NOOP", None, 'expected a command tag, found "+ NOOP"'),
        (b"a1", "a1", "expected a space, found end of command after the tag"),
        (b"a1 ", "a1", "expected a command name, found end of command after the tag"),
        (b"a1 FROB", "a1", "unknown command FROB"),
        (b"a1 UID NOOP", "a1", "unknown command UID NOOP"),
        (b"a1 NOOP now", "a1", 'NOOP: unexpected " now" after the command\'s arguments'),
        (b"a1 SELECT", "a1", "SELECT: expected a space, found end of command"),
        (b"a1 SELECT  INBOX", "a1", 'SELECT: expected a mailbox name, found " INBOX"'),
        (b"a1 SELECT (x)", "a1", 'SELECT: expected a mailbox name, found "(x)"'),
        (b"a1 SELECT x (FOO)", "a1", "SELECT: unknown SELECT parameter FOO"),
        (b"a1 SELECT x (QRESYNC (1 0))", "a1", "SELECT: mod-sequence must be greater than 0"),
        (
            b"a1 CREATE x (USE (Sent))",
            "a1",
            "CREATE: special-use attributes start with \\, not Sent",
        ),
        (b"a1 CREATE x (FOO)", "a1", "CREATE: unknown CREATE parameter FOO"),
        (b"a1 LIST x y RETURNS ()", "a1", 'LIST: expected RETURN, found "RETURNS ()"'),
        (b"a1 LIST x y RETURN (STATUS ())", "a1", 'LIST: expected a STATUS item, found "))"'),
        (b"a1 FETCH 1 FLAGS (VANISHED)", "a1", "FETCH: VANISHED is only allowed in UID FETCH"),
        (b"a1 UID FETCH 1 FLAGS (VANISHED)", "a1", "UID FETCH: VANISHED needs CHANGEDSINCE"),
        (b"a1 UID FETCH 1", "a1", "UID FETCH: expected a space, found end of command"),
        (b"a1 APPEND INBOX", "a1", "APPEND: expected a space, found end of command"),
        (
            b'a1 APPEND INBOX "text"',
            "a1",
            'APPEND: expected a date-time such as "17-Jul-1996 02:44:25 -0700", '
            'found "\\x22text\\x22"',
        ),
        (b"a1 APPEND INBOX {2+}\r\nab extra", "a1", 'APPEND: expected a literal, found "extra"'),
        (
            b"a1 APPEND INBOX {3+}\r\na\x00b",
            "a1",
            "APPEND: literal contains a NUL octet: send binary data as a literal8 (~{n})",
        ),
        (
            b"a1 LOGIN ~{4+}\r\nfred x",
            "a1",
            "LOGIN: a literal8 (~{n}) is only allowed for APPEND message data",
        ),
        (b"a1 LOGIN {2+}\r\n\xff\xfe x", "a1", "LOGIN: a user name is not valid UTF-8"),
        (
            b"a1 AUTHENTICATE PLAIN not=base64",
            "a1",
            "AUTHENTICATE: the initial response is not valid base64",
        ),
        (
            b"a1 AUTHENTICATE PLAIN QQ",
            "a1",
            "AUTHENTICATE: the initial response is not valid base64",
        ),
        (b"a1 ENABLE", "a1", "ENABLE: expected a space, found end of command"),
        (b"a1 EXPUNGE 1", "a1", 'EXPUNGE: unexpected " 1" after the command\'s arguments'),
        (b"a1 STORE 1 +FLAGS", "a1", "STORE: expected a space, found end of command"),
        (b"a1 SORT () UTF-8 ALL", "a1", 'SORT: expected a SORT key, found ") UTF-8 ALL"'),
        (b"a1 SORT (DATE) ALL", "a1", 'SORT: charset "ALL" is not supported'),
        (b"a1 THREAD FOO UTF-8 ALL", "a1", "THREAD: unknown THREAD algorithm FOO"),
    ],
)
def test_malformed_commands_are_refused_with_tag_and_reason(
    line: bytes, tag: str | None, reason: str
) -> None:
    error = refusal(line)
    assert (error.tag, error.reason) == (tag, reason)


def test_unsupported_search_charset_is_a_tagged_no_with_badcharset() -> None:
    error = refusal(b"a1 SEARCH CHARSET KOI8-R TEXT x")
    assert (error.tag, error.status, error.code) == ("a1", "NO", "BADCHARSET (US-ASCII UTF-8)")
    assert error.reason == 'SEARCH: charset "KOI8-R" is not supported'


def test_refusal_reasons_never_echo_line_breaks_from_literals() -> None:
    error = refusal(b"a1 SEARCH CHARSET {8+}\r\nX\r\n* BYE ALL")
    assert error.reason == 'SEARCH: charset "X\\x0d\\x0a* BYE" is not supported'


def test_id_limits_from_rfc_2971_are_enforced() -> None:
    long_field = b'a ID ("' + b"f" * 31 + b'" NIL)'
    assert "limited to 30 octets" in refusal(long_field).reason
    many = b"a ID (" + b" ".join(b'"f%d" "v"' % n for n in range(31)) + b")"
    assert "limited to 30 field-value pairs" in refusal(many).reason


def test_rev1_mailbox_with_raw_8bit_is_refused_with_advice() -> None:
    error = refusal('a SELECT "台北"'.encode())
    assert error.reason.startswith("SELECT: mailbox name contains the octet 0xe5")


def test_8bit_text_outside_quotes_is_refused_even_for_utf8_sessions() -> None:
    error = refusal("a SELECT 台北".encode(), utf8=True)
    assert error.reason == "SELECT: 8-bit text must be sent as a quoted string or a literal"


def test_reader_segments_that_are_not_a_command_are_refused() -> None:
    with pytest.raises(ParseError, match="empty command"):
        parse_command([])
    with pytest.raises(ParseError, match="malformed command framing"):
        parse_command([b"a NOOP", LiteralData(b"")])
