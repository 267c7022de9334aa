"""The selected folder as one session sees it: sequence numbers, flags, and the untagged
updates (EXISTS, EXPUNGE, FETCH FLAGS) that other sessions' changes produce.

Message sequence numbers are this session's view (RFC 9051 §2.3.1.2): they change only
when this session is told of an expunge. The view catches up with the store by MODSEQ
(RFC 7162), so a missed notification only delays an update.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from storage.messages import Entry, FolderInfo, MessageStore


@dataclass
class Update:
    """Untagged responses owed to the client, computed by `SelectedView.catch_up`."""

    expunged_msns: list[int] = field(default_factory=list)  # in the order to announce
    expunged_uids: list[int] = field(default_factory=list)
    exists: int | None = None
    flags: list[tuple[int, Entry]] = field(default_factory=list)  # (msn, entry)


class SelectedView:
    def __init__(self, folder: FolderInfo, *, read_only: bool) -> None:
        self.folder = folder
        self.read_only = read_only
        self.uids: list[int] = []
        self.entries: dict[int, Entry] = {}
        self.modseq = 0
        self.uidnext = folder.uidnext
        self.pending_expunges: set[int] = set()

    @property
    def folder_id(self) -> int:
        return self.folder.id

    @property
    def exists(self) -> int:
        return len(self.uids)

    async def load(self, store: MessageStore) -> None:
        status = await store.status(self.folder.id)
        entries = await store.entries(self.folder.id)
        self.uids = [e.uid for e in entries]
        self.entries = {e.uid: e for e in entries}
        self.modseq = status.highestmodseq
        self.uidnext = status.uidnext

    def msn_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def uid_of(self, msn: int) -> int:
        return self.uids[msn - 1]

    @property
    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def remember(self, entry: Entry) -> None:
        """This session changed `entry` itself: no unsolicited FETCH for it later."""
        if entry.uid in self.entries:
            self.entries[entry.uid] = entry

    async def catch_up(self, store: MessageStore, *, allow_expunge: bool) -> Update:
        """What changed since the view was last brought up to date.

        Without `allow_expunge` (during FETCH, STORE and SEARCH by sequence number,
        RFC 9051 §7.5.1), expunges are remembered and announced later.
        """
        update = Update()
        # The common case, nothing changed, costs one primary-key read.
        folder = await store.folder_by_id(self.folder.id)
        if folder.highestmodseq == self.modseq and not (allow_expunge and self.pending_expunges):
            return update
        changed = await store.entries(self.folder.id, changed_since=self.modseq)
        expunged = await store.expunged_since(self.folder.id, self.modseq)
        # Changes committed after `folder` was read are caught by the next catch-up:
        # they carry a higher MODSEQ than the one remembered here.
        self.modseq = max(folder.highestmodseq, max((e.modseq for e in changed), default=0))
        self.uidnext = folder.uidnext
        self.pending_expunges.update(uid for uid in expunged if uid in self.entries)
        if allow_expunge and self.pending_expunges:
            for uid in sorted(self.pending_expunges, reverse=True):
                msn = self.msn_of(uid)
                if msn is None:
                    continue
                # Announced from the highest down, each number stays valid as it goes.
                update.expunged_msns.append(msn)
                update.expunged_uids.append(uid)
                del self.uids[msn - 1]
                self.entries.pop(uid, None)
            update.expunged_uids.sort()
            self.pending_expunges.clear()
        added = [e for e in changed if e.uid not in self.entries and e.uid > self.largest_uid]
        for entry in added:
            self.uids.append(entry.uid)
            self.entries[entry.uid] = entry
        if added:
            update.exists = len(self.uids)
        for entry in changed:
            known = self.entries.get(entry.uid)
            if known is None or entry in added:
                continue
            if known.flags != entry.flags:
                msn = self.msn_of(entry.uid)
                if msn is not None:
                    update.flags.append((msn, entry))
            self.entries[entry.uid] = entry
        return update
