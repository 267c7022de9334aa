"""IMAP commands as typed values, one class per command, grouped by the connection state
in which the command is valid (RFC 9051 §6), and `parse_command` to read one.

The server matches on the class; it never sees bytes. States nest: a command valid in
the authenticated state is also valid in the selected state (RFC 9051 §3), which the
server checks with `isinstance(command, AuthenticatedCommand | SelectedCommand)`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias

from mailserver.imap.specials import (
    FetchAttribute,
    ListReturn,
    ListReturnOption,
    ListSelectOption,
    MessageSet,
    SearchKey,
    SearchReturn,
    SequenceSet,
    SortCriterion,
    StatusItem,
    StoreAction,
    ThreadAlgorithm,
    parse_charset,
    parse_fetch_attributes,
    parse_fetch_modifiers,
    parse_known_set,
    parse_list_return_options,
    parse_list_select_options,
    parse_message_set,
    parse_search_keys,
    parse_search_return,
    parse_sort_criteria,
    parse_status_items,
    parse_store_action,
    parse_store_modifiers,
    parse_thread_algorithm,
)
from mailserver.imap.wire import ParseError, Reader, Segment

# RFC 4648 §4 base64, as RFC 9051 §9 base64 restricts it (padding only at the end).
_BASE64: Final = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# RFC 2971 §3.3: field names up to 30 octets, values up to 1024, at most 30 pairs.
_ID_FIELD_MAX: Final = 30
_ID_VALUE_MAX: Final = 1024
_ID_PAIRS_MAX: Final = 30
# RFC 6154 use-attr, in canonical spelling.
SPECIAL_USES: Final = {
    name.upper(): name
    for name in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}


class Command:
    """A parsed command."""

    __slots__ = ()


class AnyStateCommand(Command):
    """Valid in every state (RFC 9051 §6.1)."""

    __slots__ = ()


class NotAuthenticatedCommand(Command):
    """Valid before authentication only (RFC 9051 §6.2)."""

    __slots__ = ()


class AuthenticatedCommand(Command):
    """Valid once authenticated, whether or not a mailbox is selected (RFC 9051 §6.3)."""

    __slots__ = ()


class SelectedCommand(Command):
    """Valid only with a mailbox selected (RFC 9051 §6.4)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TaggedCommand:
    tag: str
    command: Command


# -- any state (RFC 9051 §6.1) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability(AnyStateCommand):
    """RFC 9051 §6.1.1."""


@dataclass(frozen=True, slots=True)
class Noop(AnyStateCommand):
    """RFC 9051 §6.1.2."""


@dataclass(frozen=True, slots=True)
class Logout(AnyStateCommand):
    """RFC 9051 §6.1.3."""


@dataclass(frozen=True, slots=True)
class Id(AnyStateCommand):
    """RFC 2971: the client's identification, None for `ID NIL`."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Compress(AnyStateCommand):
    """RFC 4978: `algorithm` upper-cased (DEFLATE is the only one defined)."""

    algorithm: str


# -- not authenticated (RFC 9051 §6.2) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTLS(NotAuthenticatedCommand):
    """RFC 9051 §6.2.1."""


@dataclass(frozen=True, slots=True)
class Authenticate(NotAuthenticatedCommand):
    """RFC 9051 §6.2.2; `initial_response` is the decoded SASL-IR (RFC 4959), b"" for "="."""

    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login(NotAuthenticatedCommand):
    """RFC 9051 §6.2.3."""

    userid: str
    password: str

    def __repr__(self) -> str:
        return f"Login(userid={self.userid!r}, password=<redacted>)"


# -- authenticated (RFC 9051 §6.3) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enable(AuthenticatedCommand):
    """RFC 9051 §6.3.1 (RFC 5161): capability names, upper-cased."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QResync:
    """RFC 7162 §3.2.5 QRESYNC select parameter."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    # (known-sequence-set, known-uid-set): sequence numbers and their UIDs, paired.
    sequence_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select(AuthenticatedCommand):
    """RFC 9051 §6.3.2, with RFC 7162 CONDSTORE / QRESYNC parameters."""

    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Examine(AuthenticatedCommand):
    """RFC 9051 §6.3.3: SELECT, read-only."""

    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create(AuthenticatedCommand):
    """RFC 9051 §6.3.4, with RFC 6154 USE (special-use attributes)."""

    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete(AuthenticatedCommand):
    """RFC 9051 §6.3.5."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(AuthenticatedCommand):
    """RFC 9051 §6.3.6."""

    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe(AuthenticatedCommand):
    """RFC 9051 §6.3.7."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(AuthenticatedCommand):
    """RFC 9051 §6.3.8."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class List(AuthenticatedCommand):
    """RFC 9051 §6.3.9 / RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[ListSelectOption] = frozenset()
    returns: ListReturn = field(default_factory=ListReturn)
    # Whether the extended syntax was used (RFC 5258: it changes the response).
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub(AuthenticatedCommand):
    """RFC 3501 §6.3.9 (IMAP4rev1 only)."""

    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace(AuthenticatedCommand):
    """RFC 9051 §6.3.10 (RFC 2342)."""


@dataclass(frozen=True, slots=True)
class Status(AuthenticatedCommand):
    """RFC 9051 §6.3.11."""

    mailbox: str
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND: its octets, flags and internal date; `binary` when sent as
    a literal8 (RFC 3516 §4.4)."""

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append(AuthenticatedCommand):
    """RFC 9051 §6.3.12; several messages with MULTIAPPEND (RFC 3502)."""

    mailbox: str
    messages: tuple[AppendMessage, ...]

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(message.data)) for message in self.messages)
        return f"Append(mailbox={self.mailbox!r}, message sizes=[{sizes}])"


@dataclass(frozen=True, slots=True)
class Idle(AuthenticatedCommand):
    """RFC 9051 §6.3.13 (RFC 2177); the client ends it with a `DONE` line."""


@dataclass(frozen=True, slots=True)
class GetQuota(AuthenticatedCommand):
    """RFC 9208 §4.1.1."""

    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(AuthenticatedCommand):
    """RFC 9208 §4.1.2."""

    mailbox: str


# -- selected (RFC 9051 §6.4) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check(SelectedCommand):
    """RFC 3501 §6.4.1 (IMAP4rev1 only): a NOOP for us."""


@dataclass(frozen=True, slots=True)
class Close(SelectedCommand):
    """RFC 9051 §6.4.1."""


@dataclass(frozen=True, slots=True)
class Unselect(SelectedCommand):
    """RFC 9051 §6.4.2 (RFC 3691)."""


@dataclass(frozen=True, slots=True)
class Expunge(SelectedCommand):
    """RFC 9051 §6.4.3."""


@dataclass(frozen=True, slots=True)
class UidExpunge(SelectedCommand):
    """RFC 9051 §6.4.9 (RFC 4315 UIDPLUS): expunge only these UIDs."""

    uids: MessageSet


@dataclass(frozen=True, slots=True)
class Search(SelectedCommand):
    """RFC 9051 §6.4.4 and UID SEARCH; `returns` is None without RETURN (RFC 4731)."""

    uid: bool
    key: SearchKey
    charset: str | None = None
    returns: frozenset[SearchReturn] | None = None


@dataclass(frozen=True, slots=True)
class Fetch(SelectedCommand):
    """RFC 9051 §6.4.5 and UID FETCH, with RFC 7162 CHANGEDSINCE and VANISHED."""

    uid: bool
    messages: MessageSet
    attributes: tuple[FetchAttribute, ...]
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store(SelectedCommand):
    """RFC 9051 §6.4.6 and UID STORE, with RFC 7162 UNCHANGEDSINCE."""

    uid: bool
    messages: MessageSet
    action: StoreAction
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy(SelectedCommand):
    """RFC 9051 §6.4.7 and UID COPY."""

    uid: bool
    messages: MessageSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move(SelectedCommand):
    """RFC 9051 §6.4.8 (RFC 6851) and UID MOVE."""

    uid: bool
    messages: MessageSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Sort(SelectedCommand):
    """RFC 5256 SORT and UID SORT."""

    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Thread(SelectedCommand):
    """RFC 5256 THREAD and UID THREAD."""

    uid: bool
    algorithm: ThreadAlgorithm
    charset: str
    key: SearchKey


# -- parsing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    reader: Reader
    utf8: bool  # IMAP4rev2 or UTF8=ACCEPT: mailbox names are UTF-8 (RFC 9051 §5.1)

    def mailbox(self) -> str:
        return self.reader.mailbox(utf8=self.utf8)


_Parser: TypeAlias = Callable[[_Context], Command]
_UidParser: TypeAlias = Callable[[_Context, bool], Command]


def parse_command(segments: Sequence[Segment], *, utf8: bool = False) -> TaggedCommand:
    """One framed command (see `mailserver.imap.wire`) as a typed command.

    `utf8`: the session enabled IMAP4rev2 or UTF8=ACCEPT, so mailbox names are UTF-8
    rather than modified UTF-7. Raises `ParseError` with the tag when it could be read.
    """
    reader = Reader(segments)
    if reader.at_end():
        raise ParseError("empty command line")
    try:
        tag = reader.tag()
    except ParseError:
        raise ParseError(f"expected a command tag, found {reader.describe()}") from None
    try:
        reader.sp()
        name = reader.keyword("a command name")
    except ParseError as error:
        raise ParseError(f"{error.reason} after the tag", tag=tag) from None
    context = _Context(reader, utf8)
    try:
        if name == "UID":
            reader.sp()
            name = "UID " + reader.keyword("a command name after UID")
            uid_parser = _UID_PARSERS.get(name.removeprefix("UID "))
            if uid_parser is None:
                raise ParseError(f"unknown command {name}", tag=tag)
            command = uid_parser(context, True)
        else:
            parser = _PARSERS.get(name)
            if parser is None:
                uid_parser = _UID_PARSERS.get(name)
                if uid_parser is None:
                    raise ParseError(f"unknown command {name}", tag=tag)
                command = uid_parser(context, False)
            else:
                command = parser(context)
        reader.end()
    except ParseError as error:
        if error.tag is not None:
            raise
        raise error.with_context(tag=tag, command=name) from None
    return TaggedCommand(tag, command)


def _no_arguments(command: Command) -> _Parser:
    def parse(context: _Context) -> Command:
        return command

    return parse


def _parse_id(context: _Context) -> Id:
    """RFC 2971 id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring)
    ")" / nil (the pairs are space-separated)."""
    reader = context.reader
    reader.sp()
    if reader.try_keyword("NIL"):
        return Id(None)
    reader.expect(b"(")
    pairs: list[tuple[str, str | None]] = []
    while not reader.try_consume(b")"):
        if pairs:
            reader.sp()
        field = reader.string()
        reader.sp()
        value = reader.nstring()
        if len(field) > _ID_FIELD_MAX or (value is not None and len(value) > _ID_VALUE_MAX):
            raise ParseError(
                f"ID fields are limited to {_ID_FIELD_MAX} octets and values "
                f"to {_ID_VALUE_MAX} (RFC 2971 §3.3)"
            )
        pairs.append(
            (
                reader.utf8(field, "ID field"),
                None if value is None else reader.utf8(value, "ID value"),
            )
        )
        if len(pairs) > _ID_PAIRS_MAX:
            raise ParseError(f"ID is limited to {_ID_PAIRS_MAX} field-value pairs (RFC 2971 §3.3)")
    return Id(tuple(pairs))


def _parse_compress(context: _Context) -> Compress:
    """RFC 4978 compress = "COMPRESS" SP algorithm."""
    context.reader.sp()
    return Compress(context.reader.atom("a compression algorithm").upper())


def _parse_authenticate(context: _Context) -> Authenticate:
    """RFC 9051 §9 authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp],
    initial-resp = (base64 / "=") (RFC 4959 SASL-IR)."""
    reader = context.reader
    reader.sp()
    mechanism = reader.atom("a SASL mechanism").upper()
    if not reader.try_sp():
        return Authenticate(mechanism)
    response = reader.atom("a base64 initial response").encode("ascii")
    if response == b"=":
        return Authenticate(mechanism, b"")
    if _BASE64.fullmatch(response) is None:
        raise ParseError("the initial response is not valid base64")
    try:
        return Authenticate(mechanism, base64.b64decode(response, validate=True))
    except binascii.Error:
        raise ParseError("the initial response is not valid base64") from None


def _parse_login(context: _Context) -> Login:
    """RFC 9051 §9 login = "LOGIN" SP userid SP password."""
    reader = context.reader
    reader.sp()
    userid = reader.astring_text("a user name")
    reader.sp()
    return Login(userid, reader.astring_text("a password"))


def _parse_enable(context: _Context) -> Enable:
    """RFC 5161 enable = "ENABLE" 1*(SP capability)."""
    reader = context.reader
    capabilities = []
    reader.sp()
    capabilities.append(reader.atom("a capability name").upper())
    while reader.try_sp():
        capabilities.append(reader.atom("a capability name").upper())
    return Enable(tuple(capabilities))


def _parse_select_parameters(reader: Reader) -> tuple[bool, QResync | None]:
    """RFC 4466 §3 select-params = SP "(" select-param *(SP select-param) ")", with RFC
    7162 §7 "CONDSTORE" and "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP
    known-uids] [SP seq-match-data] ")"."""
    condstore = False
    qresync: QResync | None = None

    def parameter(inner: Reader) -> None:
        nonlocal condstore, qresync
        name = inner.keyword("a SELECT parameter")
        if name == "CONDSTORE":
            condstore = True
            return
        if name != "QRESYNC":
            raise ParseError(f"unknown SELECT parameter {name}")
        inner.sp()
        inner.expect(b"(")
        uidvalidity = inner.nz_number("a UIDVALIDITY")
        inner.sp()
        modseq = inner.mod_sequence_value()
        known_uids = None
        sequence_match = None
        if inner.try_sp():
            if inner.peek() != ord("("):
                known_uids = parse_known_set(inner)
                if inner.try_sp():
                    sequence_match = _parse_sequence_match(inner)
            else:
                sequence_match = _parse_sequence_match(inner)
        inner.expect(b")")
        qresync = QResync(uidvalidity, modseq, known_uids, sequence_match)

    reader.parenthesised(parameter, allow_empty=False)
    return condstore, qresync


def _parse_sequence_match(reader: Reader) -> tuple[SequenceSet, SequenceSet]:
    """RFC 7162 §7 seq-match-data = "(" known-sequence-set SP known-uid-set ")"."""
    reader.expect(b"(")
    sequence_numbers = parse_known_set(reader)
    reader.sp()
    uids = parse_known_set(reader)
    reader.expect(b")")
    return sequence_numbers, uids


def _parse_select(context: _Context) -> Select:
    """RFC 9051 §9 select = "SELECT" SP mailbox [select-params]."""
    context.reader.sp()
    mailbox = context.mailbox()
    if context.reader.try_sp():
        return Select(mailbox, *_parse_select_parameters(context.reader))
    return Select(mailbox)


def _parse_examine(context: _Context) -> Examine:
    """RFC 9051 §9 examine = "EXAMINE" SP mailbox [select-params]."""
    context.reader.sp()
    mailbox = context.mailbox()
    if context.reader.try_sp():
        return Examine(mailbox, *_parse_select_parameters(context.reader))
    return Examine(mailbox)


def _parse_create(context: _Context) -> Create:
    """RFC 9051 §9 create = "CREATE" SP mailbox [create-params] (RFC 4466 §3), with RFC
    6154 create-param =/ "USE" SP "(" [use-attr *(SP use-attr)] ")"."""
    reader = context.reader
    reader.sp()
    mailbox = context.mailbox()
    if not reader.try_sp():
        return Create(mailbox)
    uses: list[str] = []

    def parameter(inner: Reader) -> None:
        name = inner.keyword("a CREATE parameter")
        if name != "USE":
            raise ParseError(f"unknown CREATE parameter {name}")
        inner.sp()
        for flag in inner.flag_list():
            if not flag.startswith("\\"):
                raise ParseError(f"special-use attributes start with \\, not {flag}")
            uses.append(SPECIAL_USES.get(flag.upper(), flag))

    reader.parenthesised(parameter, allow_empty=False)
    return Create(mailbox, tuple(uses))


def _mailbox_command(kind: Callable[[str], Command]) -> _Parser:
    def parse(context: _Context) -> Command:
        context.reader.sp()
        return kind(context.mailbox())

    return parse


def _parse_rename(context: _Context) -> Rename:
    """RFC 9051 §9 rename = "RENAME" SP mailbox SP mailbox."""
    context.reader.sp()
    mailbox = context.mailbox()
    context.reader.sp()
    return Rename(mailbox, context.mailbox())


def _parse_list(context: _Context) -> List:
    """RFC 5258 list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP
    list-return-opts]; mbox-or-pat = list-mailbox / patterns."""
    reader = context.reader
    reader.sp()
    extended = False
    selection: frozenset[ListSelectOption] = frozenset()
    if reader.peek() == ord("("):
        extended = True
        selection = parse_list_select_options(reader)
        reader.sp()
    reference = context.mailbox()
    reader.sp()
    if reader.peek() == ord("("):
        extended = True
        patterns = reader.parenthesised(
            lambda inner: inner.list_mailbox(utf8=context.utf8), allow_empty=False
        )
    else:
        patterns = (reader.list_mailbox(utf8=context.utf8),)
    returns = ListReturn()
    if reader.try_sp():
        if not reader.try_keyword("RETURN"):
            reader.fail("RETURN")
        reader.sp()
        extended = True
        returns = parse_list_return_options(reader)
    if ListReturnOption.STATUS in returns.options and not returns.status:
        raise ParseError("RETURN (STATUS ...) needs status items")
    return List(reference, patterns, selection, returns, extended)


def _parse_lsub(context: _Context) -> Lsub:
    """RFC 3501 §9 lsub = "LSUB" SP mailbox SP list-mailbox."""
    reader = context.reader
    reader.sp()
    reference = context.mailbox()
    reader.sp()
    return Lsub(reference, reader.list_mailbox(utf8=context.utf8))


def _parse_status(context: _Context) -> Status:
    """RFC 9051 §9 status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"."""
    context.reader.sp()
    mailbox = context.mailbox()
    context.reader.sp()
    return Status(mailbox, parse_status_items(context.reader))


def _parse_append(context: _Context) -> Append:
    """RFC 4466 §3 append = "APPEND" SP mailbox 1*append-message (several with RFC 3502
    MULTIAPPEND), append-message = [SP flag-list] [SP date-time] SP append-data,
    append-data = literal / literal8 (RFC 3516 §4.4)."""
    reader = context.reader
    reader.sp()
    mailbox = context.mailbox()
    messages: list[AppendMessage] = []
    while not reader.at_end() or not messages:
        reader.sp()
        flags: tuple[str, ...] = ()
        internal_date = None
        if reader.peek() == ord("("):
            flags = reader.flag_list()
            reader.sp()
        if reader.peek() == ord('"'):
            internal_date = reader.date_time()
            reader.sp()
        message = reader.literal(binary_allowed=True)
        messages.append(AppendMessage(message.data, flags, internal_date, message.binary))
    return Append(mailbox, tuple(messages))


def _parse_getquota(context: _Context) -> GetQuota:
    """RFC 9208 §7 getquota = "GETQUOTA" SP quota-root-name; quota-root-name = astring."""
    context.reader.sp()
    return GetQuota(context.reader.astring_text("a quota root"))


def _parse_expunge(context: _Context, uid: bool) -> Command:
    """RFC 9051 §9 expunge = "EXPUNGE"; RFC 4315 uid-expunge = "UID" SP "EXPUNGE" SP
    sequence-set."""
    if not uid:
        return Expunge()
    context.reader.sp()
    return UidExpunge(parse_message_set(context.reader))


def _parse_search(context: _Context, uid: bool) -> Search:
    """RFC 9051 §9 search = "SEARCH" [search-return-opts] SP search-program (RFC 4731),
    search-program = ["CHARSET" SP charset SP] search-key *(SP search-key)."""
    reader = context.reader
    reader.sp()
    returns = None
    if reader.try_keyword("RETURN"):
        reader.sp()
        returns = parse_search_return(reader)
        reader.sp()
    charset = None
    if reader.try_keyword("CHARSET"):
        reader.sp()
        charset = parse_charset(reader)
        reader.sp()
    return Search(uid, parse_search_keys(reader, charset), charset, returns)


def _parse_fetch(context: _Context, uid: bool) -> Fetch:
    """RFC 9051 §9 fetch = "FETCH" SP sequence-set SP (macro / fetch-att / "(" fetch-att
    *(SP fetch-att) ")") [fetch-modifiers] (RFC 4466 §2.4)."""
    reader = context.reader
    reader.sp()
    messages = parse_message_set(reader)
    reader.sp()
    attributes = parse_fetch_attributes(reader)
    if not reader.try_sp():
        return Fetch(uid, messages, attributes)
    modifiers = parse_fetch_modifiers(reader)
    if modifiers.vanished and not uid:
        # RFC 7162 §3.2.6: VANISHED is only allowed in UID FETCH.
        raise ParseError("VANISHED is only allowed in UID FETCH")
    if modifiers.vanished and modifiers.changed_since is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return Fetch(uid, messages, attributes, modifiers.changed_since, modifiers.vanished)


def _parse_store(context: _Context, uid: bool) -> Store:
    """RFC 9051 §9 store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags."""
    reader = context.reader
    reader.sp()
    messages = parse_message_set(reader)
    reader.sp()
    unchanged_since = None
    if reader.peek() == ord("("):
        unchanged_since = parse_store_modifiers(reader)
        reader.sp()
    return Store(uid, messages, parse_store_action(reader), unchanged_since)


def _parse_copy(context: _Context, uid: bool) -> Copy:
    """RFC 9051 §9 copy = "COPY" SP sequence-set SP mailbox."""
    context.reader.sp()
    messages = parse_message_set(context.reader)
    context.reader.sp()
    return Copy(uid, messages, context.mailbox())


def _parse_move(context: _Context, uid: bool) -> Move:
    """RFC 6851 move = "MOVE" SP sequence-set SP mailbox."""
    context.reader.sp()
    messages = parse_message_set(context.reader)
    context.reader.sp()
    return Move(uid, messages, context.mailbox())


def _parse_sort(context: _Context, uid: bool) -> Sort:
    """RFC 5256 sort = ["UID" SP] "SORT" SP sort-criteria SP search-criteria,
    search-criteria = charset 1*(SP search-key)."""
    reader = context.reader
    reader.sp()
    criteria = parse_sort_criteria(reader)
    reader.sp()
    charset = parse_charset(reader)
    reader.sp()
    return Sort(uid, criteria, charset, parse_search_keys(reader, charset))


def _parse_thread(context: _Context, uid: bool) -> Thread:
    """RFC 5256 thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria."""
    reader = context.reader
    reader.sp()
    algorithm = parse_thread_algorithm(reader)
    reader.sp()
    charset = parse_charset(reader)
    reader.sp()
    return Thread(uid, algorithm, charset, parse_search_keys(reader, charset))


_PARSERS: Final[dict[str, _Parser]] = {
    # any state
    "CAPABILITY": _no_arguments(Capability()),
    "NOOP": _no_arguments(Noop()),
    "LOGOUT": _no_arguments(Logout()),
    "ID": _parse_id,
    "COMPRESS": _parse_compress,
    # not authenticated
    "STARTTLS": _no_arguments(StartTLS()),
    "AUTHENTICATE": _parse_authenticate,
    "LOGIN": _parse_login,
    # authenticated
    "ENABLE": _parse_enable,
    "SELECT": _parse_select,
    "EXAMINE": _parse_examine,
    "CREATE": _parse_create,
    "DELETE": _mailbox_command(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _mailbox_command(Subscribe),
    "UNSUBSCRIBE": _mailbox_command(Unsubscribe),
    "LIST": _parse_list,
    "LSUB": _parse_lsub,
    "NAMESPACE": _no_arguments(Namespace()),
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "IDLE": _no_arguments(Idle()),
    "GETQUOTA": _parse_getquota,
    "GETQUOTAROOT": _mailbox_command(GetQuotaRoot),
    # selected
    "CHECK": _no_arguments(Check()),
    "CLOSE": _no_arguments(Close()),
    "UNSELECT": _no_arguments(Unselect()),
}

# Selected-state commands that also come as "UID <command>" (RFC 9051 §6.4.9).
_UID_PARSERS: Final[dict[str, _UidParser]] = {
    "EXPUNGE": _parse_expunge,
    "SEARCH": _parse_search,
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _parse_copy,
    "MOVE": _parse_move,
    "SORT": _parse_sort,
    "THREAD": _parse_thread,
}
