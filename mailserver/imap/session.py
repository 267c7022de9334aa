"""One IMAP connection (RFC 9051, RFC 3501): connection states, commands, responses.

The wire layer (`framing`, `commands`) turns bytes into typed commands; this module runs
them against the message store and writes the responses; `selected` keeps this session's
view of the selected folder. Mailbox names: the user's own folders at the top
(delimiter "/"), and the service mailboxes (ORG/CAB) the user belongs to under
`Shared/<address>/` (RFC 2342 shared namespace).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from mailserver.imap import commands as c
from mailserver.imap import quota
from mailserver.imap.compress import Deflate
from mailserver.imap.framing import (
    CommandFramer,
    ContinuationRequest,
    Frame,
    FramingError,
    FramingLimits,
)
from mailserver.imap.message import (
    Adjacent,
    ImapValue,
    MessageError,
    ParsedMessage,
    UnknownCTEError,
)
from mailserver.imap.qresync import missed_since, vanished_since
from mailserver.imap.search import Candidate, Evaluator, needs_body, needs_content
from mailserver.imap.selected import SelectedView, Update
from mailserver.imap.sort import needs_headers, sort_candidates
from mailserver.imap.specials import (
    AndKey,
    BinarySection,
    BinarySize,
    BodySection,
    FetchAttribute,
    FetchItem,
    ListReturnOption,
    ListSelectOption,
    MessageSet,
    ModSeqKey,
    NotKey,
    OrKey,
    SavedResult,
    SearchKey,
    SearchReturn,
    SequenceSet,
    StatusItem,
    StoreMode,
)
from mailserver.imap.thread import render as render_threads
from mailserver.imap.thread import thread
from mailserver.imap.wire import (
    Atom,
    Encoded,
    LiteralData,
    ParseError,
    ResponseItem,
    encode_mailbox,
    render,
    render_astring,
    render_sequence,
)
from storage import audit
from storage.messages import (
    AppendTarget,
    Conflict,
    Entry,
    FlagMode,
    FolderInfo,
    MailboxInfo,
    NotFound,
    StoreError,
)

if TYPE_CHECKING:
    from mailserver.service import Runtime

log = logging.getLogger("hygie.imap")

DELIMITER = "/"
SHARED_PREFIX = "Shared/"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
FETCH_BATCH = 200
IDLE_LIMIT_SECONDS = 29 * 60  # RFC 9051 §6.3.13: clients re-issue IDLE within 30 minutes
LOGIN_TIMEOUT_SECONDS = 60
AUTOLOGOUT_SECONDS = 30 * 60  # RFC 9051 §5.4: at least 30 minutes
MAX_NAME = 1000
# Characters never allowed in a name we create: list wildcards, and controls.
_FORBIDDEN_NAME = re.compile(r"[%*\x00-\x1f\x7f]")


class Refusal(Exception):
    """A command refused with `NO` (or `BAD`), with an optional response code."""

    def __init__(self, text: str, *, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Place:
    """Where an IMAP mailbox name points: a mailbox (BAL) and one of its folders."""

    mailbox: MailboxInfo
    folder: str  # the folder's name in the store
    prefix: str  # "" for the user's own folders, "Shared/<address>/" for a service's

    def imap_name(self, folder: str | None = None) -> str:
        return self.prefix + (folder if folder is not None else self.folder)


def _imap_value(value: ImapValue) -> ResponseItem:
    """message.py's neutral values as wire items (Adjacent lists have no space between)."""
    if isinstance(value, Adjacent):
        return Encoded(
            b"".join(
                b"(" + render_sequence([_imap_value(v) for v in lst]) + b")" for lst in value.lists
            )
        )
    if isinstance(value, tuple):
        return [_imap_value(v) for v in value]
    return value


class ImapSession:
    def __init__(
        self,
        runtime: Runtime,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls_context: ssl.SSLContext,
        implicit_tls: bool,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.reader = reader
        self.writer = writer
        self.tls_context = tls_context
        self.tls = implicit_tls
        self.framer = CommandFramer(
            FramingLimits(max_literal=runtime.settings.limits.message_bytes)
        )
        self.pending = b""
        self.user: MailboxInfo | None = None
        self.selected: SelectedView | None = None
        self.selected_owner = ""  # the address of the mailbox the selected folder is in
        self.enabled: set[str] = set()
        self.saved: frozenset[int] = frozenset()
        self.deflate: Deflate | None = None
        self.done = False
        peer = writer.get_extra_info("peername")
        self.remote = str(peer[0]) if peer else "unknown"

    # -- output ------------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        return "IMAP4REV2" in self.enabled

    async def send(self, line: bytes) -> None:
        data = line + b"\r\n"
        if self.deflate is not None:
            data = self.deflate.compress(data)
        self.writer.write(data)
        await self.writer.drain()

    async def flush(self) -> None:
        """The end of a response burst: with COMPRESS, make it all decodable now."""
        if self.deflate is not None and (data := self.deflate.flush()):
            self.writer.write(data)
            await self.writer.drain()

    async def untagged(self, *items: ResponseItem) -> None:
        await self.send(b"* " + render_sequence(items, utf8=self.utf8))

    async def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        coded = f"[{code}] " if code else ""
        await self.send(f"{tag} {status} {coded}{text}".encode("utf-8", "replace"))

    def capabilities(self) -> list[str]:
        """Only what this server implements (RFC 9051 §7.2.2)."""
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if not self.tls:
            caps += ["STARTTLS", "LOGINDISABLED"]
        elif self.user is None:
            caps += ["AUTH=PLAIN", "SASL-IR"]
        caps += [
            "LITERAL-",
            "ID",
            "COMPRESS=DEFLATE",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "SPECIAL-USE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "CONDSTORE",
            "ESEARCH",
            "SEARCHRES",
            "BINARY",
            "MULTIAPPEND",
            "STATUS=SIZE",
            "QRESYNC",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "SORT",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            f"APPENDLIMIT={self.runtime.settings.limits.message_bytes}",
        ]
        return caps

    # -- the connection ----------------------------------------------------------------

    async def run(self) -> None:
        await self.send(
            f"* OK [CAPABILITY {' '.join(self.capabilities())}] Hygie IMAP ready".encode()
        )
        try:
            while not self.done:
                frame = await self.next_frame()
                if frame is None:
                    break
                await self.execute(frame)
                await self.flush()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except TimeoutError:
            await self._bye("autologout: idle for too long")
        finally:
            self.writer.close()

    async def _bye(self, text: str) -> None:
        try:
            await self.send(f"* BYE {text}".encode())
            await self.flush()
        except (ConnectionError, ssl.SSLError):
            pass

    async def next_frame(self) -> Frame | None:
        """The next complete command; answers framing errors and literal continuations."""
        while True:
            if self.pending:
                data, self.pending = self.pending, b""
            elif self.deflate is not None and self.deflate.backlog:
                data = self.deflate.inflate(b"")
            else:
                await self.flush()
                timeout = AUTOLOGOUT_SECONDS if self.user else LOGIN_TIMEOUT_SECONDS
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return None
                if self.deflate is not None:
                    data = self.deflate.inflate(data)
            result = self.framer.feed(data)
            self.pending = bytes(result.remainder)
            frame: Frame | None = None
            for event in result.events:
                if isinstance(event, ContinuationRequest):
                    await self.send(b"+ Ready for literal data")
                elif isinstance(event, FramingError):
                    code = f"[{event.code}] " if event.code else ""
                    await self.send(
                        f"{event.tag or '*'} {event.status} {code}{event.reason}".encode()
                    )
                elif isinstance(event, Frame):
                    frame = event
            if frame is not None:
                return frame

    async def execute(self, frame: Frame) -> None:
        try:
            tagged = c.parse_command(frame.segments, utf8=self.utf8)
        except ParseError as error:
            code = f"[{error.code}] " if error.code else ""
            await self.send(f"{error.tag or '*'} {error.status} {code}{error.reason}".encode())
            return
        tag, command = tagged.tag, tagged.command
        name = type(command).__name__.upper()
        try:
            if isinstance(command, c.NotAuthenticatedCommand) and self.user is not None:
                raise Refusal(f"{name} is only allowed before authentication", status="BAD")
            if (
                isinstance(command, c.AuthenticatedCommand | c.SelectedCommand)
                and self.user is None
            ):
                raise Refusal(f"{name} needs authentication first", status="BAD")
            if isinstance(command, c.SelectedCommand) and self.selected is None:
                raise Refusal(f"{name} needs a selected mailbox (SELECT or EXAMINE)", status="BAD")
            handler = self._handlers().get(type(command))
            if handler is None:
                raise Refusal(f"{name} is not supported", status="BAD")
            response_code, text = await handler(tag, command)
            await self.tagged(tag, "OK", text, response_code)
        except _AlreadyAnswered:
            return
        except Refusal as refusal:
            await self.tagged(tag, refusal.status, refusal.text, refusal.code)
        except NotFound as error:
            await self.tagged(tag, "NO", str(error), "NONEXISTENT")
        except Conflict as error:
            await self.tagged(tag, "NO", str(error), "ALREADYEXISTS")
        except StoreError as error:
            await self.tagged(tag, "NO", str(error))

    def _handlers(self) -> dict[type, Callable[[str, Any], Awaitable[tuple[str | None, str]]]]:
        return {
            c.Capability: self.do_capability,
            c.Noop: self.do_noop,
            c.Check: self.do_noop,
            c.Logout: self.do_logout,
            c.Id: self.do_id,
            c.Compress: self.do_compress,
            c.StartTLS: self.do_starttls,
            c.Login: self.do_login,
            c.Authenticate: self.do_authenticate,
            c.Enable: self.do_enable,
            c.Namespace: self.do_namespace,
            c.List: self.do_list,
            c.Lsub: self.do_lsub,
            c.Create: self.do_create,
            c.Delete: self.do_delete,
            c.Rename: self.do_rename,
            c.Subscribe: self.do_subscribe,
            c.Unsubscribe: self.do_unsubscribe,
            c.Status: self.do_status,
            c.Select: self.do_select,
            c.Examine: self.do_select,
            c.Append: self.do_append,
            c.Idle: self.do_idle,
            c.Close: self.do_close,
            c.Unselect: self.do_close,
            c.Expunge: self.do_expunge,
            c.UidExpunge: self.do_expunge,
            c.Search: self.do_search,
            c.Fetch: self.do_fetch,
            c.Store: self.do_store,
            c.Copy: self.do_copy,
            c.Move: self.do_copy,
            c.GetQuota: self.do_getquota,
            c.GetQuotaRoot: self.do_getquotaroot,
            c.Sort: self.do_sort,
            c.Thread: self.do_thread,
        }

    # -- any state -----------------------------------------------------------------------

    async def do_capability(self, tag: str, command: c.Capability) -> tuple[str | None, str]:
        await self.send(("* CAPABILITY " + " ".join(self.capabilities())).encode())
        return None, "CAPABILITY completed"

    async def do_noop(self, tag: str, command: c.Command) -> tuple[str | None, str]:
        await self.report(allow_expunge=True)
        return None, f"{type(command).__name__.upper()} completed"

    async def do_logout(self, tag: str, command: c.Logout) -> tuple[str | None, str]:
        await self.send(b"* BYE Hygie IMAP logging out")
        self.done = True
        return None, "LOGOUT completed"

    async def do_id(self, tag: str, command: c.Id) -> tuple[str | None, str]:
        # RFC 2971: the server may answer NIL; name and version only, nothing sensitive.
        await self.untagged(Atom("ID"), ["name", "Hygie", "vendor", "Hygie"])
        return None, "ID completed"

    async def do_compress(self, tag: str, command: c.Compress) -> tuple[str | None, str]:
        # RFC 4978 §3: after authentication, once per connection.
        if self.user is None:
            raise Refusal("COMPRESS needs authentication first", status="BAD")
        if self.deflate is not None:
            raise Refusal("DEFLATE is already active", code="COMPRESSIONACTIVE")
        if command.algorithm != "DEFLATE":
            raise Refusal(f"compression {command.algorithm} is not supported; use DEFLATE")
        await self.tagged(tag, "OK", "DEFLATE active")
        self.deflate = Deflate()
        if self.pending:  # sent after the command, so already compressed
            self.pending = self.deflate.inflate(self.pending)
        raise _AlreadyAnswered

    # -- not authenticated ---------------------------------------------------------------

    async def do_starttls(self, tag: str, command: c.StartTLS) -> tuple[str | None, str]:
        if self.tls:
            raise Refusal("TLS is already active", status="BAD")
        # RFC 9051 §6.2.1: anything the client pipelined after STARTTLS is discarded.
        self.pending = b""
        await self.tagged(tag, "OK", "Begin TLS negotiation now")
        await self.writer.start_tls(self.tls_context)
        self.tls = True
        self.framer = CommandFramer(self.framer.limits)
        raise _AlreadyAnswered

    async def _login(self, address: str, secret: str) -> tuple[str | None, str]:
        if not self.tls:
            raise Refusal("LOGIN is disabled until STARTTLS", code="PRIVACYREQUIRED")
        result = await self.runtime.authenticate(
            address, secret, remote=self.remote, protocol="imap"
        )
        if not result.ok or result.mailbox is None:
            if result.reason in ("locked-account", "locked-remote"):
                raise Refusal("too many failed attempts; try again later", code="UNAVAILABLE")
            raise Refusal("invalid credentials", code="AUTHENTICATIONFAILED")
        self.user = result.mailbox
        return f"CAPABILITY {' '.join(self.capabilities())}", "authenticated"

    async def do_login(self, tag: str, command: c.Login) -> tuple[str | None, str]:
        return await self._login(command.userid, command.password)

    async def do_authenticate(self, tag: str, command: c.Authenticate) -> tuple[str | None, str]:
        if command.mechanism.upper() != "PLAIN":
            raise Refusal(f"mechanism {command.mechanism} is not supported", status="NO")
        if not self.tls:
            raise Refusal("authentication needs TLS first", code="PRIVACYREQUIRED")
        response = command.initial_response
        if response is None:
            await self.send(b"+ ")
            frame = await self.next_frame()
            if (
                frame is None
                or len(frame.segments) != 1
                or not isinstance(frame.segments[0], bytes)
            ):
                raise Refusal("authentication exchange broken", status="BAD")
            line = frame.segments[0].strip()
            if line == b"*":
                raise Refusal("authentication cancelled", status="BAD")
            try:
                response = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise Refusal("invalid base64", status="BAD") from exc
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise Refusal("malformed PLAIN response (RFC 4616)", status="BAD")
        authzid, login, secret = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != login.lower():
            raise Refusal("acting as another user is not allowed", code="AUTHORIZATIONFAILED")
        return await self._login(login, secret)

    # -- authenticated: names ------------------------------------------------------------

    async def places(self) -> list[tuple[MailboxInfo, str]]:
        """The mailboxes this user may open, with their IMAP prefix."""
        assert self.user is not None
        shared = await self.runtime.directory.shared_mailboxes_of(self.user.id)
        return [(self.user, "")] + [(box, f"{SHARED_PREFIX}{box.address}/") for box in shared]

    async def resolve(self, name: str) -> Place:
        """The folder an IMAP name designates, refusing names outside the user's reach."""
        if not name or len(name) > MAX_NAME or ".." in name.split(DELIMITER):
            raise Refusal(f"invalid mailbox name {name!r}", code="CANNOT")
        if name.upper() == "INBOX":
            assert self.user is not None
            return Place(self.user, "INBOX", "")
        if name.startswith(SHARED_PREFIX):
            for box, prefix in await self.places():
                if prefix and name.startswith(prefix):
                    folder = name[len(prefix) :]
                    if not folder:
                        raise Refusal(f"{name} is a namespace, not a mailbox", code="CANNOT")
                    return Place(box, "INBOX" if folder.upper() == "INBOX" else folder, prefix)
            raise Refusal(f"no mailbox {name} you may use", code="NONEXISTENT")
        assert self.user is not None
        return Place(self.user, name, "")

    async def folder_of(self, place: Place) -> FolderInfo:
        try:
            return await self.store.folder(place.mailbox.id, place.folder)
        except NotFound:
            raise Refusal(
                f"mailbox {place.imap_name()} does not exist", code="NONEXISTENT"
            ) from None

    def _check_new_name(self, place: Place) -> None:
        parts = place.folder.split(DELIMITER)
        if _FORBIDDEN_NAME.search(place.folder) or any(not p for p in parts):
            raise Refusal(f"mailbox name {place.imap_name()!r} is not allowed", code="CANNOT")
        if place.prefix == "" and place.folder.startswith(SHARED_PREFIX.rstrip(DELIMITER)):
            raise Refusal("Shared/ holds the service mailboxes you belong to", code="CANNOT")

    async def do_namespace(self, tag: str, command: c.Namespace) -> tuple[str | None, str]:
        # RFC 2342: personal "", no other users', shared "Shared/".
        await self.untagged(
            Atom("NAMESPACE"), [["", DELIMITER]], None, [[SHARED_PREFIX, DELIMITER]]
        )
        return None, "NAMESPACE completed"

    async def _all_names(self) -> list[tuple[str, FolderInfo, Place]]:
        names = []
        for box, prefix in await self.places():
            for folder in await self.store.list_folders(box.id):
                place = Place(box, folder.name, prefix)
                names.append((place.imap_name(), folder, place))
        return names

    @staticmethod
    def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
        """RFC 9051 §6.3.9: "*" matches anything, "%" anything but the delimiter."""
        full = reference + pattern
        regex = "".join(
            ".*" if ch == "*" else f"[^{re.escape(DELIMITER)}]*" if ch == "%" else re.escape(ch)
            for ch in full
        )
        flags = re.IGNORECASE if full.upper().startswith("INBOX") else 0
        return re.compile(f"^{regex}$", flags)

    async def do_list(self, tag: str, command: c.List) -> tuple[str | None, str]:
        if command.patterns == ("",) and not command.extended:
            # RFC 9051 §6.3.9: the hierarchy delimiter and root.
            await self.untagged(Atom("LIST"), [Atom("\\Noselect")], DELIMITER, "")
            return None, "LIST completed"
        await self._list(
            command.reference,
            command.patterns,
            command.selection,
            command.returns.options,
            command.returns.status,
            "LIST",
        )
        return None, "LIST completed"

    async def do_lsub(self, tag: str, command: c.Lsub) -> tuple[str | None, str]:
        await self._list(
            command.reference,
            (command.pattern,),
            frozenset({ListSelectOption.SUBSCRIBED}),
            frozenset(),
            (),
            "LSUB",
        )
        return None, "LSUB completed"

    async def _list(
        self,
        reference: str,
        patterns: Sequence[str],
        selection: frozenset[ListSelectOption],
        returns: frozenset[ListReturnOption],
        status_items: Sequence[StatusItem],
        verb: str,
    ) -> None:
        names = await self._all_names()
        every = {name for name, _f, _p in names}
        matchers = [self._pattern(reference, p) for p in patterns]
        for name, folder, _place in sorted(names, key=lambda n: n[0]):
            if not any(m.match(name) for m in matchers):
                continue
            if ListSelectOption.SUBSCRIBED in selection and not folder.subscribed:
                continue
            if ListSelectOption.SPECIAL_USE in selection and not folder.special_use:
                continue
            attributes: list[ResponseItem] = []
            children = any(other.startswith(name + DELIMITER) for other in every)
            attributes.append(Atom("\\HasChildren" if children else "\\HasNoChildren"))
            if folder.subscribed and (
                verb == "LIST"
                and (
                    ListSelectOption.SUBSCRIBED in selection
                    or ListReturnOption.SUBSCRIBED in returns
                )
            ):
                attributes.append(Atom("\\Subscribed"))
            if folder.special_use and verb == "LIST":
                attributes.append(Atom(folder.special_use))
            await self.untagged(
                Atom(verb),
                attributes,
                DELIMITER,
                Encoded(self._name_bytes(name)),
            )
            if status_items:
                await self._status(name, folder, status_items)

    def _name_bytes(self, name: str) -> bytes:
        """A mailbox name in wire form: modified UTF-7 for IMAP4rev1, UTF-8 for rev2."""
        return render_astring(encode_mailbox(name, utf8=self.utf8), utf8=self.utf8)

    async def do_create(self, tag: str, command: c.Create) -> tuple[str | None, str]:
        place = await self.resolve(command.mailbox.rstrip(DELIMITER))
        self._check_new_name(place)
        special = command.special_use[0] if command.special_use else None
        if special is not None and special not in (
            "\\Archive",
            "\\Drafts",
            "\\Junk",
            "\\Sent",
            "\\Trash",
            "\\All",
            "\\Flagged",
        ):
            raise Refusal(f"special use {special} is not supported", code="USEATTR")
        await self.store.create_folder(place.mailbox.id, place.folder, special)
        return None, "CREATE completed"

    async def do_delete(self, tag: str, command: c.Delete) -> tuple[str | None, str]:
        place = await self.resolve(command.mailbox)
        folder = await self.folder_of(place)
        if self.selected is not None and self.selected.folder_id == folder.id:
            self.selected = None
        await self.store.delete_folder(folder.id)
        return None, "DELETE completed"

    async def do_rename(self, tag: str, command: c.Rename) -> tuple[str | None, str]:
        source = await self.resolve(command.mailbox)
        target = await self.resolve(command.new_name)
        if source.mailbox.id != target.mailbox.id:
            raise Refusal("a mailbox cannot move to another namespace", code="CANNOT")
        self._check_new_name(target)
        folder = await self.folder_of(source)
        await self.store.rename_folder(folder.id, target.folder)
        return None, "RENAME completed"

    async def do_subscribe(self, tag: str, command: c.Subscribe) -> tuple[str | None, str]:
        folder = await self.folder_of(await self.resolve(command.mailbox))
        await self.store.set_subscribed(folder.id, True)
        return None, "SUBSCRIBE completed"

    async def do_unsubscribe(self, tag: str, command: c.Unsubscribe) -> tuple[str | None, str]:
        folder = await self.folder_of(await self.resolve(command.mailbox))
        await self.store.set_subscribed(folder.id, False)
        return None, "UNSUBSCRIBE completed"

    async def _status(self, name: str, folder: FolderInfo, items: Sequence[StatusItem]) -> None:
        status = await self.store.status(folder.id)
        values: list[ResponseItem] = []
        for item in items:
            if item is StatusItem.MESSAGES:
                value = status.messages
            elif item is StatusItem.UIDNEXT:
                value = status.uidnext
            elif item is StatusItem.UIDVALIDITY:
                value = status.uidvalidity
            elif item is StatusItem.UNSEEN:
                value = status.unseen
            elif item is StatusItem.DELETED:
                entries = await self.store.entries(folder.id)
                value = sum(1 for e in entries if "\\Deleted" in e.flags)
            elif item is StatusItem.SIZE:
                value = status.size
            elif item is StatusItem.HIGHESTMODSEQ:
                value = status.highestmodseq
            elif item is StatusItem.RECENT:
                value = 0
            else:
                value = self.runtime.settings.limits.message_bytes
            values += [Atom(item.value), value]
        await self.untagged(Atom("STATUS"), Encoded(self._name_bytes(name)), values)

    async def do_status(self, tag: str, command: c.Status) -> tuple[str | None, str]:
        place = await self.resolve(command.mailbox)
        await self._status(place.imap_name(), await self.folder_of(place), command.items)
        return None, "STATUS completed"

    async def do_enable(self, tag: str, command: c.Enable) -> tuple[str | None, str]:
        supported = {"IMAP4REV2", "CONDSTORE", "QRESYNC"}
        newly = [
            cap
            for cap in (x.upper() for x in command.capabilities)
            if cap in supported and cap not in self.enabled
        ]
        self.enabled.update(newly)
        if "QRESYNC" in newly:
            self.enabled.add("CONDSTORE")  # RFC 7162 §3.2: QRESYNC implies CONDSTORE
        await self.untagged(
            Atom("ENABLED"), *[Atom("IMAP4rev2" if n == "IMAP4REV2" else n) for n in newly]
        )
        return None, "ENABLE completed"

    # -- QUOTA (RFC 9208) ------------------------------------------------------------------

    async def _quota(self, root: str, mailbox: MailboxInfo) -> None:
        usage = await self.store.storage_usage(mailbox.id)
        await self.untagged(Atom("QUOTA"), root, quota.resources(usage))

    async def do_getquotaroot(self, tag: str, command: c.GetQuotaRoot) -> tuple[str | None, str]:
        place = await self.resolve(command.mailbox)
        await self.folder_of(place)
        root = quota.root_name(place.prefix)
        await self.untagged(Atom("QUOTAROOT"), Encoded(self._name_bytes(place.imap_name())), root)
        await self._quota(root, place.mailbox)
        return None, "GETQUOTAROOT completed"

    async def do_getquota(self, tag: str, command: c.GetQuota) -> tuple[str | None, str]:
        for mailbox, prefix in await self.places():
            if quota.root_name(prefix) == command.root:
                await self._quota(command.root, mailbox)
                return None, "GETQUOTA completed"
        raise Refusal(f"no quota root {command.root!r}", code="NONEXISTENT")

    async def check_quota(self, mailbox: MailboxInfo, adding: int) -> None:
        if quota.exceeds(await self.store.storage_usage(mailbox.id), adding):
            raise Refusal("the mailbox is full: delete or archive messages first", code="OVERQUOTA")

    # -- selecting ------------------------------------------------------------------------

    async def do_select(self, tag: str, command: c.Select | c.Examine) -> tuple[str | None, str]:
        if self.selected is not None:
            # RFC 9051 §7.1, RFC 7162 §3.2.11: responses before this were about the old one.
            await self.send(b"* OK [CLOSED] previous mailbox closed")
        self.selected = None
        self.saved = frozenset()
        if command.qresync is not None and "QRESYNC" not in self.enabled:
            raise Refusal("QRESYNC needs ENABLE QRESYNC first (RFC 7162 §3.2.5)", status="BAD")
        place = await self.resolve(command.mailbox)
        folder = await self.folder_of(place)
        read_only = isinstance(command, c.Examine)
        if command.condstore:
            self.enabled.add("CONDSTORE")
        view = SelectedView(folder, read_only=read_only)
        await view.load(self.store)
        flags = [Atom(f) for f in SYSTEM_FLAGS]
        keywords = sorted({f for e in view.entries.values() for f in e.flags} - set(SYSTEM_FLAGS))
        flags += [Atom(k) for k in keywords if _is_atom(k)]
        await self.untagged(view.exists, Atom("EXISTS"))
        if "IMAP4REV2" not in self.enabled:
            await self.untagged(0, Atom("RECENT"))
        await self.untagged(Atom("FLAGS"), list[ResponseItem](flags))
        await self.send(
            b"* OK [PERMANENTFLAGS " + render([*flags, Atom("\\*")]) + b"] flags allowed"
            if not read_only
            else b"* OK [PERMANENTFLAGS ()] read-only"
        )
        await self.send(f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid".encode())
        await self.send(f"* OK [UIDNEXT {view.uidnext}] predicted next UID".encode())
        await self.send(f"* OK [HIGHESTMODSEQ {view.modseq}] modification sequence".encode())
        if "IMAP4REV2" in self.enabled:
            # RFC 9051 §6.3.2: the mailbox name as the server knows it.
            await self.untagged(
                Atom("LIST"), [], DELIMITER, Encoded(self._name_bytes(place.imap_name()))
            )
        if command.qresync is not None:
            missed = await missed_since(self.store, view, command.qresync)
            if missed is not None:
                await self._vanished(missed.vanished, earlier=True)
                for msn, entry in missed.changed:
                    await self.untagged(msn, Atom("FETCH"), self._flags_item(entry))
        # MISSION: every access to a mailbox goes to the audit trail (the patient's
        # access page reads it); what was opened, never what it holds.
        await audit.append(
            self.store.database,
            actor=self.actor,
            action="mailbox.open",
            target=place.mailbox.address,
            details={"folder": place.folder, "read_only": read_only, "via": "imap"},
        )
        self.selected = view
        self.selected_owner = place.mailbox.address
        return (
            "READ-ONLY" if read_only else "READ-WRITE"
        ), f"{type(command).__name__.upper()} completed"

    async def do_close(self, tag: str, command: c.Close | c.Unselect) -> tuple[str | None, str]:
        view = self.selected
        assert view is not None
        if isinstance(command, c.Close) and not view.read_only:
            # RFC 9051 §6.4.1: silently expunge \Deleted messages.
            await self.store.expunge(view.folder_id)
        self.selected = None
        self.saved = frozenset()
        return None, f"{type(command).__name__.upper()} completed"

    # -- reporting changes ---------------------------------------------------------------

    async def report(self, *, allow_expunge: bool) -> None:
        view = self.selected
        if view is None:
            return
        update = await view.catch_up(self.store, allow_expunge=allow_expunge)
        await self._send_update(update)

    async def _send_update(self, update: Update) -> None:
        if "QRESYNC" in self.enabled:
            await self._vanished(update.expunged_uids, earlier=False)  # RFC 7162 §3.2.10
        else:
            for msn in update.expunged_msns:
                await self.untagged(msn, Atom("EXPUNGE"))
        if update.expunged_uids:
            self.saved = self.saved - set(update.expunged_uids)
        if update.exists is not None:
            await self.untagged(update.exists, Atom("EXISTS"))
        for msn, entry in update.flags:
            await self.untagged(msn, Atom("FETCH"), self._flags_item(entry))

    async def _vanished(self, uids: Sequence[int], *, earlier: bool) -> None:
        """RFC 7162 §3.2.10 VANISHED: expunged UIDs, "(EARLIER)" when they were expunged
        before this command (and sequence numbers do not change)."""
        if uids:
            tag: list[ResponseItem] = [[Atom("EARLIER")]] if earlier else []
            await self.untagged(Atom("VANISHED"), *tag, SequenceSet.from_numbers(uids).encode())

    def _flags_item(self, entry: Entry, uid: bool = True) -> list[ResponseItem]:
        items: list[ResponseItem] = []
        if uid:
            items += [Atom("UID"), entry.uid]
        items += [Atom("FLAGS"), [Atom(f) for f in sorted(entry.flags) if _is_atom(f)]]
        if "CONDSTORE" in self.enabled:
            items += [Atom("MODSEQ"), [entry.modseq]]
        return items

    # -- message sets --------------------------------------------------------------------

    def targets(self, messages: MessageSet, *, uid: bool) -> list[tuple[int, int]]:
        """(msn, uid) pairs a message set designates, ascending."""
        view = self.selected
        assert view is not None
        if isinstance(messages, SavedResult):
            return [(m, u) for u in sorted(self.saved) if (m := view.msn_of(u) or 0)]
        if uid:
            found = []
            for low, high in messages.intervals(view.largest_uid):
                start = view.msn_of(low) or _first_at_least(view.uids, low)
                for index in range(start - 1, len(view.uids)):
                    u = view.uids[index]
                    if u > high:
                        break
                    found.append((index + 1, u))
            return found
        if messages.highest_explicit() > view.exists:
            raise Refusal("message sequence number beyond the last message", status="BAD")
        return [(m, view.uid_of(m)) for m in messages.iterate(view.exists)]

    # -- APPEND ----------------------------------------------------------------------------

    async def do_append(self, tag: str, command: c.Append) -> tuple[str | None, str]:
        place = await self.resolve(command.mailbox)
        folder = await self.folder_of(place)
        limit = self.runtime.settings.limits.message_bytes
        items = []
        for message in command.messages:
            if len(message.data) > limit:
                raise Refusal(f"message larger than {limit} octets", code="TOOBIG")
            if not message.data:
                raise Refusal("empty message", status="BAD")
            flags = frozenset(f for f in message.flags if f != "\\Recent")
            when = message.internal_date.astimezone(UTC) if message.internal_date else None
            items.append((message.data, [AppendTarget(place.mailbox.id, folder.name, flags, when)]))
        await self.check_quota(place.mailbox, sum(len(m.data) for m in command.messages))
        results = await self.store.append_batch(items)
        uids = [r[0].uid for r in results]
        await self.report(allow_expunge=False)
        uid_set = SequenceSet.from_numbers(uids).encode().value.decode()
        return f"APPENDUID {results[0][0].uidvalidity} {uid_set}", "APPEND completed"

    # -- IDLE (RFC 2177, RFC 9051 §6.3.13) -----------------------------------------------

    async def do_idle(self, tag: str, command: c.Idle) -> tuple[str | None, str]:
        assert self.user is not None
        view = self.selected
        subscription = self.runtime.hub.subscribe(
            view.folder.mailbox_id if view is not None else self.user.id
        )
        try:
            await self.send(b"+ idling")
            await self.report(allow_expunge=True)
            reading = asyncio.ensure_future(self.next_frame())
            deadline = asyncio.get_running_loop().time() + IDLE_LIMIT_SECONDS
            while True:
                change = asyncio.ensure_future(subscription.get())
                remaining = deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait(
                    {reading, change},
                    timeout=max(remaining, 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if change in done:
                    await self.report(allow_expunge=True)
                    await self.flush()
                else:
                    change.cancel()
                if reading in done:
                    frame = reading.result()
                    if frame is None:
                        self.done = True
                        raise Refusal("connection closed", status="BAD")
                    line = frame.segments[0] if frame.segments else b""
                    if not (isinstance(line, bytes) and line.strip().upper() == b"DONE"):
                        raise Refusal("expected DONE to end IDLE", status="BAD")
                    return None, "IDLE terminated"
                if not done:
                    reading.cancel()
                    await self._bye("IDLE for too long")
                    self.done = True
                    raise Refusal("IDLE timed out", status="BAD")
        finally:
            subscription.close()

    # -- EXPUNGE -------------------------------------------------------------------------

    async def do_expunge(
        self, tag: str, command: c.Expunge | c.UidExpunge
    ) -> tuple[str | None, str]:
        view = self.selected
        assert view is not None
        if view.read_only:
            raise Refusal("the mailbox is read-only (EXAMINE)", code="READ-ONLY")
        uids = None
        if isinstance(command, c.UidExpunge):
            uids = [u for _m, u in self.targets(command.uids, uid=True)]
        await self.store.expunge(view.folder_id, uids)
        await self.report(allow_expunge=True)
        return None, "EXPUNGE completed"

    # -- SEARCH --------------------------------------------------------------------------

    @property
    def actor(self) -> str:
        assert self.user is not None
        return self.user.address

    async def record_read(self, uids: Sequence[int], *, header_only: bool = False) -> None:
        """Write one command's access to content to the audit trail, before any of it is
        decrypted (MISSION: patients see every access to their data)."""
        view = self.selected
        assert view is not None
        if not uids:
            return
        await audit.append(
            self.store.database,
            actor=self.actor,
            action="message.read",
            target=self.selected_owner,
            details={
                "folder": view.folder.name,
                "uids": SequenceSet.from_numbers(list(uids)).encode().value.decode(),
                "part": "header" if header_only else "message",
                "via": "imap",
            },
        )

    async def candidates(self, with_content: bool, *, with_body: bool = True) -> list[Candidate]:
        """Every message of the selected folder; decrypted when the search needs it, and
        then only the header section unless the body is searched too."""
        view = self.selected
        assert view is not None
        found = [Candidate(m, view.entries[u]) for m, u in enumerate(view.uids, 1)]
        if with_content:
            await self.record_read(view.uids, header_only=not with_body)
            for start in range(0, len(found), FETCH_BATCH):
                batch = found[start : start + FETCH_BATCH]
                raw = await self.store.read_many(
                    view.folder_id, [x.entry.uid for x in batch], header_only=not with_body
                )
                for item in batch:
                    item.message = ParsedMessage(raw[item.entry.uid])
        return found

    async def matching(self, key: SearchKey, *, headers: bool = False) -> list[Candidate]:
        """The messages `key` matches, in sequence order; with `headers`, each with at
        least its header section loaded (for SORT and THREAD)."""
        view = self.selected
        assert view is not None
        evaluator = Evaluator(
            largest_msn=view.exists, largest_uid=view.largest_uid, saved=self.saved
        )
        matched = [
            item
            for item in await self.candidates(needs_content(key), with_body=needs_body(key))
            if evaluator.matches(key, item)
        ]
        bare = [item for item in matched if item.message is None] if headers else []
        await self.record_read([item.entry.uid for item in bare], header_only=True)
        for start in range(0, len(bare), FETCH_BATCH):
            batch = bare[start : start + FETCH_BATCH]
            raw = await self.store.read_many(
                view.folder_id, [x.entry.uid for x in batch], header_only=True
            )
            for item in batch:
                item.message = ParsedMessage(raw[item.entry.uid])
        return matched

    async def do_search(self, tag: str, command: c.Search) -> tuple[str | None, str]:
        await self.report(allow_expunge=command.uid)
        matched = await self.matching(command.key)
        uids = [item.entry.uid for item in matched]
        numbers = uids if command.uid else [item.msn for item in matched]
        returns = command.returns
        if returns is not None and SearchReturn.SAVE in returns:
            self.saved = frozenset(uids)  # RFC 5182: saved as UIDs, used by "$"
        if returns is None and "IMAP4REV2" not in self.enabled:
            line: list[ResponseItem] = [Atom("SEARCH"), *numbers]
            if "CONDSTORE" in self.enabled and matched and _uses_modseq(command):
                line.append([Atom("MODSEQ"), max(i.entry.modseq for i in matched)])
            await self.untagged(*line)
            return None, "SEARCH completed"
        wanted = returns or frozenset({SearchReturn.ALL})
        if wanted == {SearchReturn.SAVE}:
            return None, "SEARCH completed, result saved"
        result: list[ResponseItem] = [Atom("ESEARCH"), [Atom("TAG"), tag]]
        if command.uid:
            result.append(Atom("UID"))
        if numbers:
            if SearchReturn.MIN in wanted:
                result += [Atom("MIN"), min(numbers)]
            if SearchReturn.MAX in wanted:
                result += [Atom("MAX"), max(numbers)]
            if SearchReturn.ALL in wanted:
                result += [Atom("ALL"), SequenceSet.from_numbers(numbers).encode()]
        if SearchReturn.COUNT in wanted:
            result += [Atom("COUNT"), len(numbers)]
        await self.untagged(*result)
        return None, "SEARCH completed"

    # -- SORT and THREAD (RFC 5256) -----------------------------------------------------

    async def do_sort(self, tag: str, command: c.Sort) -> tuple[str | None, str]:
        await self.report(allow_expunge=command.uid)
        matched = await self.matching(command.key, headers=needs_headers(command.criteria))
        ordered = sort_candidates(matched, command.criteria)
        await self.untagged(
            Atom("SORT"), *[item.entry.uid if command.uid else item.msn for item in ordered]
        )
        return None, "SORT completed"

    async def do_thread(self, tag: str, command: c.Thread) -> tuple[str | None, str]:
        await self.report(allow_expunge=command.uid)
        matched = await self.matching(command.key, headers=True)
        numbers = {item.entry.uid: item.entry.uid if command.uid else item.msn for item in matched}
        threads = thread(command.algorithm, matched)
        await self.send(b"* THREAD" + (b" " + render_threads(threads, numbers) if threads else b""))
        return None, "THREAD completed"

    # -- FETCH ---------------------------------------------------------------------------

    async def do_fetch(self, tag: str, command: c.Fetch) -> tuple[str | None, str]:
        view = self.selected
        assert view is not None
        if command.vanished and "QRESYNC" not in self.enabled:
            raise Refusal("VANISHED needs ENABLE QRESYNC first (RFC 7162 §3.2.6)", status="BAD")
        await self.report(allow_expunge=command.uid)
        if command.vanished and command.changed_since is not None:
            vanished = await vanished_since(
                self.store, view, command.changed_since, command.messages
            )
            await self._vanished(vanished, earlier=True)
        chosen = self.targets(command.messages, uid=command.uid)
        attributes = list(command.attributes)
        # RFC 7162 §3.2: once QRESYNC is enabled, every FETCH response names its UID.
        if (command.uid or "QRESYNC" in self.enabled) and FetchItem.UID not in attributes:
            attributes.insert(0, FetchItem.UID)
        if command.changed_since is not None:
            self.enabled.add("CONDSTORE")
            chosen = [(m, u) for m, u in chosen if view.entries[u].modseq > command.changed_since]
            if FetchItem.MODSEQ not in attributes:
                attributes.append(FetchItem.MODSEQ)
        if FetchItem.MODSEQ in attributes:
            self.enabled.add("CONDSTORE")
        content = any(_needs_message(a) for a in attributes)
        sets_seen = not view.read_only and any(
            (isinstance(a, BodySection | BinarySection) and not a.peek)
            or a in (FetchItem.RFC822, FetchItem.RFC822_TEXT)
            for a in attributes
        )
        if content:
            await self.record_read([u for _m, u in chosen])
        for start in range(0, len(chosen), FETCH_BATCH):
            batch = chosen[start : start + FETCH_BATCH]
            raw: dict[int, bytes] = {}
            if content:
                raw = await self.store.read_many(view.folder_id, [u for _m, u in batch])
            if sets_seen:
                unseen = [u for _m, u in batch if "\\Seen" not in view.entries[u].flags]
                if unseen:
                    update = await self.store.store_flags(view.folder_id, unseen, "add", ["\\Seen"])
                    for entry in update.updated:
                        view.remember(entry)
            for msn, uid in batch:
                entry = view.entries[uid]
                parsed = ParsedMessage(raw[uid]) if uid in raw else None
                items = await self._fetch_items(entry, parsed, attributes, sets_seen)
                await self.send(f"* {msn} FETCH ".encode() + render(items, utf8=self.utf8))
        return None, "FETCH completed"

    async def _fetch_items(
        self,
        entry: Entry,
        parsed: ParsedMessage | None,
        attributes: Sequence[FetchAttribute],
        seen_changed: bool,
    ) -> list[ResponseItem]:
        items: list[ResponseItem] = []
        flags_sent = False
        for attribute in attributes:
            if isinstance(attribute, FetchItem):
                if attribute is FetchItem.UID:
                    items += [Atom("UID"), entry.uid]
                elif attribute is FetchItem.FLAGS:
                    items += [Atom("FLAGS"), [Atom(f) for f in sorted(entry.flags) if _is_atom(f)]]
                    flags_sent = True
                elif attribute is FetchItem.INTERNALDATE:
                    items += [Atom("INTERNALDATE"), entry.internal_date]
                elif attribute is FetchItem.RFC822_SIZE:
                    items += [Atom("RFC822.SIZE"), entry.size]
                elif attribute is FetchItem.MODSEQ:
                    items += [Atom("MODSEQ"), [entry.modseq]]
                else:
                    assert parsed is not None
                    items += self._message_item(attribute, parsed)
            elif isinstance(attribute, BodySection):
                assert parsed is not None
                try:
                    data = parsed.section(attribute.section, attribute.partial)
                except MessageError:
                    data = b""
                items += [attribute.response_name(), LiteralData(data)]
            elif isinstance(attribute, BinarySection):
                assert parsed is not None
                try:
                    data = parsed.binary(attribute.part, attribute.partial)
                except UnknownCTEError as exc:
                    raise Refusal(str(exc), code="UNKNOWN-CTE") from exc
                except MessageError:
                    data = b""
                items += [attribute.response_name(), LiteralData(data, binary=b"\0" in data)]
            elif isinstance(attribute, BinarySize):
                assert parsed is not None
                try:
                    size = parsed.binary_size(attribute.part)
                except UnknownCTEError as exc:
                    raise Refusal(str(exc), code="UNKNOWN-CTE") from exc
                except MessageError:
                    size = 0
                items += [attribute.response_name(), size]
        if seen_changed and not flags_sent:
            items += [Atom("FLAGS"), [Atom(f) for f in sorted(entry.flags) if _is_atom(f)]]
        return items

    def _message_item(self, item: FetchItem, parsed: ParsedMessage) -> list[ResponseItem]:
        if item is FetchItem.ENVELOPE:
            return [Atom("ENVELOPE"), _imap_value(parsed.envelope())]
        if item is FetchItem.BODYSTRUCTURE:
            return [Atom("BODYSTRUCTURE"), _imap_value(parsed.bodystructure(True))]
        if item is FetchItem.BODY:
            return [Atom("BODY"), _imap_value(parsed.bodystructure(False))]
        if item is FetchItem.RFC822:
            return [Atom("RFC822"), LiteralData(parsed.raw)]
        if item is FetchItem.RFC822_HEADER:
            return [Atom("RFC822.HEADER"), LiteralData(parsed.section("HEADER"))]
        return [Atom("RFC822.TEXT"), LiteralData(parsed.section("TEXT"))]

    # -- STORE ---------------------------------------------------------------------------

    async def do_store(self, tag: str, command: c.Store) -> tuple[str | None, str]:
        view = self.selected
        assert view is not None
        if view.read_only:
            raise Refusal("the mailbox is read-only (EXAMINE)", code="READ-ONLY")
        await self.report(allow_expunge=command.uid)
        chosen = self.targets(command.messages, uid=command.uid)
        modes: dict[StoreMode, FlagMode] = {
            StoreMode.ADD: "add",
            StoreMode.REMOVE: "remove",
            StoreMode.REPLACE: "replace",
        }
        mode = modes[command.action.mode]
        flags = [f for f in command.action.flags if f != "\\Recent"]
        if command.unchanged_since is not None:
            self.enabled.add("CONDSTORE")
        update = await self.store.store_flags(
            view.folder_id,
            [u for _m, u in chosen],
            mode,
            flags,
            unchanged_since=command.unchanged_since,
        )
        changed = {e.uid: e for e in update.updated}
        for entry in update.updated:
            view.remember(entry)
        for msn, uid in chosen:
            if uid in update.modified:
                continue
            current = changed.get(uid, view.entries.get(uid))
            if current is None:
                continue
            if command.action.silent and not (uid in changed and "CONDSTORE" in self.enabled):
                continue
            # RFC 7162 §3.2: with QRESYNC, every FETCH response names its UID.
            with_uid = command.uid or "QRESYNC" in self.enabled
            await self.untagged(msn, Atom("FETCH"), self._flags_item(current, uid=with_uid))
        if update.modified:
            numbers = (
                update.modified if command.uid else [view.msn_of(u) or 0 for u in update.modified]
            )
            code = f"MODIFIED {SequenceSet.from_numbers(numbers).encode().value.decode()}"
            return code, "conditional STORE failed for some messages"
        return None, "STORE completed"

    # -- COPY and MOVE -------------------------------------------------------------------

    async def do_copy(self, tag: str, command: c.Copy | c.Move) -> tuple[str | None, str]:
        view = self.selected
        assert view is not None
        is_move = isinstance(command, c.Move)
        if is_move and view.read_only:
            raise Refusal("the mailbox is read-only (EXAMINE)", code="READ-ONLY")
        await self.report(allow_expunge=command.uid)
        chosen = self.targets(command.messages, uid=command.uid)
        target_place = await self.resolve(command.mailbox)
        try:
            target = await self.store.folder(target_place.mailbox.id, target_place.folder)
        except NotFound:
            raise Refusal(f"mailbox {command.mailbox} does not exist", code="TRYCREATE") from None
        uids = [u for _m, u in chosen]
        if not uids:
            return None, f"{type(command).__name__.upper()} completed (nothing to do)"
        if not (is_move and target.mailbox_id == view.folder.mailbox_id):
            await self.check_quota(target_place.mailbox, sum(view.entries[u].size for u in uids))
        if is_move:
            mapping = await self.store.move(view.folder_id, uids, target.id)
        else:
            mapping = await self.store.copy(view.folder_id, uids, target.id)
        code = (
            (
                f"COPYUID {target.uidvalidity} "
                f"{SequenceSet.from_numbers([s for s, _n in mapping]).encode().value.decode()} "
                f"{SequenceSet.from_numbers([n for _s, n in mapping]).encode().value.decode()}"
            )
            if mapping
            else None
        )
        if is_move:
            # RFC 6851 §4.3: COPYUID in an untagged OK, then the expunges, then OK.
            if code:
                await self.send(f"* OK [{code}] moved".encode())
            await self.report(allow_expunge=True)
            return None, "MOVE completed"
        return code, "COPY completed"


class _AlreadyAnswered(Exception):
    """The handler wrote its own tagged response (STARTTLS, COMPRESS)."""


def _first_at_least(uids: list[int], value: int) -> int:
    return bisect.bisect_left(uids, value) + 1


def _is_atom(flag: str) -> bool:
    try:
        Atom(flag)
    except ValueError:
        return False
    return True


def _needs_message(attribute: FetchAttribute) -> bool:
    if isinstance(attribute, FetchItem):
        return attribute in (
            FetchItem.ENVELOPE,
            FetchItem.BODY,
            FetchItem.BODYSTRUCTURE,
            FetchItem.RFC822,
            FetchItem.RFC822_HEADER,
            FetchItem.RFC822_TEXT,
        )
    return True


def _uses_modseq(command: c.Search) -> bool:
    def walk(key: Any) -> bool:
        if isinstance(key, ModSeqKey):
            return True
        if isinstance(key, NotKey):
            return walk(key.key)
        if isinstance(key, OrKey):
            return walk(key.left) or walk(key.right)
        if isinstance(key, AndKey):
            return any(walk(k) for k in key.keys)
        return False

    return walk(command.key)
