"""SORT (RFC 5256 §3): orders the messages a search matched by the client's criteria.

Strings compare with i;ascii-casemap (RFC 5256 §2.1, RFC 4790 §9.2): only ASCII letters
fold, everything else compares octet by octet (code point order is UTF-8 octet order).
Messages that compare equal on every criterion keep sequence number order (§3).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cmp_to_key

from mailserver.imap.search import Candidate
from mailserver.imap.specials import SortCriterion, SortKey

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

SortValue = str | int | datetime


def ascii_casemap(text: str) -> str:
    """RFC 4790 §9.2 i;ascii-casemap: a-z fold to A-Z, nothing else changes."""
    return text.translate(_ASCII_UPPER)


def needs_headers(criteria: Sequence[SortCriterion]) -> bool:
    """Whether sorting by `criteria` reads header fields (ARRIVAL and SIZE do not)."""
    return any(c.key not in (SortKey.ARRIVAL, SortKey.SIZE) for c in criteria)


def sent_date(item: Candidate) -> datetime:
    """RFC 5256 §2.2: the Date field in UTC; the internal date when it is absent or
    unreadable. A zone of "-0000" (unknown) counts as UTC."""
    sent = item.message.sent_date() if item.message is not None else None
    if sent is None:
        sent = item.entry.internal_date
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    return sent.astimezone(UTC)


def _first_mailbox(item: Candidate, field: str) -> str:
    """RFC 5256 §3: the addr-mailbox of the first address, or "" (missing, or a group)."""
    assert item.message is not None
    for address in item.message.addresses(field):
        if address.host is None:
            return ""
        return ascii_casemap((address.mailbox or b"").decode("utf-8", "replace"))
    return ""


def _value(key: SortKey, item: Candidate) -> SortValue:
    if key is SortKey.ARRIVAL:
        return item.entry.internal_date
    if key is SortKey.SIZE:
        return item.entry.size
    if key is SortKey.DATE:
        return sent_date(item)
    if key is SortKey.SUBJECT:
        assert item.message is not None
        return ascii_casemap(item.message.subject_base())
    return _first_mailbox(item, key.value)


def sort_candidates(
    candidates: Sequence[Candidate], criteria: Sequence[SortCriterion]
) -> list[Candidate]:
    """`candidates` in the order the criteria give, ties in sequence number order."""
    keyed = [([_value(c.key, item) for c in criteria], item) for item in candidates]

    def compare(a: tuple[list[SortValue], Candidate], b: tuple[list[SortValue], Candidate]) -> int:
        for criterion, left, right in zip(criteria, a[0], b[0], strict=True):
            if left != right:
                order = -1 if left < right else 1  # type: ignore[operator]
                return -order if criterion.reverse else order
        return a[1].msn - b[1].msn

    return [item for _values, item in sorted(keyed, key=cmp_to_key(compare))]
