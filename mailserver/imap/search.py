"""SEARCH evaluation (RFC 9051 §6.4.4, RFC 7162 §3.1.5, RFC 5182) over a folder's messages.

Keys on flags, sizes, dates, UIDs and MODSEQ need only plain metadata; keys on headers or
text need the decrypted message, which is opened only when the search asks for it.
String matching is case-insensitive substring matching (RFC 9051 §6.4.4), on decoded text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from mailserver.imap.message import ParsedMessage
from mailserver.imap.specials import (
    AllKey,
    AndKey,
    BodyKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SavedResult,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from storage.messages import Entry


@dataclass
class Candidate:
    """One message of the selected folder as SEARCH sees it."""

    msn: int
    entry: Entry
    message: ParsedMessage | None = None


def needs_content(key: SearchKey) -> bool:
    """Whether evaluating `key` needs the decrypted message."""
    if isinstance(key, HeaderKey | BodyKey | TextKey):
        return True
    if isinstance(key, DateKey):
        return key.sent
    if isinstance(key, NotKey):
        return needs_content(key.key)
    if isinstance(key, OrKey):
        return needs_content(key.left) or needs_content(key.right)
    if isinstance(key, AndKey):
        return any(needs_content(k) for k in key.keys)
    return False


def needs_body(key: SearchKey) -> bool:
    """Whether evaluating `key` needs the body (BODY, TEXT), not only the header."""
    if isinstance(key, BodyKey | TextKey):
        return True
    if isinstance(key, NotKey):
        return needs_body(key.key)
    if isinstance(key, OrKey):
        return needs_body(key.left) or needs_body(key.right)
    if isinstance(key, AndKey):
        return any(needs_body(k) for k in key.keys)
    return False


def _fold(text: str) -> str:
    return text.casefold()


def _compare_date(relation: str, day: date, wanted: date) -> bool:
    if relation == "before":
        return day < wanted
    if relation == "on":
        return day == wanted
    return day >= wanted


class Evaluator:
    """Evaluates one search key for each candidate of a folder."""

    def __init__(
        self,
        *,
        largest_msn: int,
        largest_uid: int,
        saved: frozenset[int],
        recent: Callable[[int], bool] = lambda _uid: False,
    ) -> None:
        self.largest_msn = largest_msn
        self.largest_uid = largest_uid
        self.saved = saved  # UIDs saved by SEARCH RETURN (SAVE)
        self.recent = recent

    def matches(self, key: SearchKey, item: Candidate) -> bool:
        entry = item.entry
        if isinstance(key, AllKey):
            return True
        if isinstance(key, FlagKey):
            present = self.recent(entry.uid) if key.flag == "\\Recent" else key.flag in entry.flags
            return present == key.present
        if isinstance(key, SizeKey):
            return entry.size > key.size if key.larger else entry.size < key.size
        if isinstance(key, SequenceKey):
            if isinstance(key.messages, SavedResult):
                return entry.uid in self.saved
            if key.uid:
                return key.messages.contains(entry.uid, self.largest_uid)
            return key.messages.contains(item.msn, self.largest_msn)
        if isinstance(key, ModSeqKey):
            return entry.modseq >= key.modseq
        if isinstance(key, DateKey):
            if key.sent:
                assert item.message is not None
                sent = item.message.sent_date()
                return sent is not None and _compare_date(key.relation, sent.date(), key.date)
            return _compare_date(key.relation, entry.internal_date.date(), key.date)
        if isinstance(key, HeaderKey):
            assert item.message is not None
            fields = item.message.header_fields([key.field])
            if not key.value:
                return bool(fields)
            wanted = _fold(key.value)
            return any(wanted in _fold(f.value) for f in fields)
        if isinstance(key, BodyKey):
            assert item.message is not None
            return _fold(key.value) in _fold(item.message.text())
        if isinstance(key, TextKey):
            assert item.message is not None
            wanted = _fold(key.value)
            if any(wanted in _fold(f.value) for f in item.message.header_fields()):
                return True
            return wanted in _fold(item.message.text())
        if isinstance(key, NotKey):
            return not self.matches(key.key, item)
        if isinstance(key, OrKey):
            return self.matches(key.left, item) or self.matches(key.right, item)
        return all(self.matches(k, item) for k in key.keys)
