"""QRESYNC (RFC 7162 §3.2): what a client that knew the folder at some MODSEQ has missed.

The store keeps expunged UIDs with the MODSEQ of their removal, so the answer is exact:
the UIDs expunged after that MODSEQ (announced as `VANISHED (EARLIER)`) and the messages
changed after it (announced as FETCH).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailserver.imap.commands import QResync
from mailserver.imap.selected import SelectedView
from mailserver.imap.specials import MessageSet, SavedResult
from storage.messages import Entry, MessageStore


@dataclass(frozen=True)
class Missed:
    vanished: list[int]  # UIDs, ascending
    changed: list[tuple[int, Entry]]  # (msn, entry), ascending


async def vanished_since(
    store: MessageStore, view: SelectedView, modseq: int, uids: MessageSet | None = None
) -> list[int]:
    """UIDs expunged after `modseq`, only those in `uids` when given (RFC 7162 §3.2.6);
    there "*" is the highest UID ever given out. A saved result ("$", RFC 5182) holds no
    expunged UID."""
    if isinstance(uids, SavedResult):
        return []
    expunged = await store.expunged_since(view.folder_id, modseq)
    if uids is None:
        return expunged
    largest = view.uidnext - 1
    return [uid for uid in expunged if uids.contains(uid, largest)]


async def missed_since(store: MessageStore, view: SelectedView, request: QResync) -> Missed | None:
    """RFC 7162 §3.2.5.2: None when the UIDVALIDITY changed (the client must start over);
    known-uids narrow both answers. seq-match-data only helps servers that forget
    expunged UIDs, which this one does not, so it is not needed."""
    if request.uidvalidity != view.folder.uidvalidity:
        return None
    vanished = await vanished_since(store, view, request.modseq, request.known_uids)
    known = request.known_uids
    largest = view.uidnext - 1
    changed = [
        (msn, view.entries[uid])
        for msn, uid in enumerate(view.uids, 1)
        if view.entries[uid].modseq > request.modseq
        and (known is None or known.contains(uid, largest))
    ]
    return Missed(vanished, changed)
