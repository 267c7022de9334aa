"""THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES threading, and the thread-list
wire form.

Both algorithms work on candidates whose header section is loaded. Siblings are ordered
by sent date (RFC 5256 §2.2), ties by sequence number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from mailserver.imap.search import Candidate
from mailserver.imap.sort import ascii_casemap, sent_date
from mailserver.imap.specials import ThreadAlgorithm

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
# RFC 5256 §2.1: a subject with a subj-refwd leader, a "(fwd)" trailer or a "[fwd:"
# wrapper is a reply or forward.
_REPLY_OR_FORWARD = re.compile(
    r"^\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\])?\s*:|\(fwd\)\s*$|^\s*\[fwd:",
    re.IGNORECASE,
)


@dataclass(eq=False)
class Node:
    """A message in a thread tree, or a dummy standing for a message not in the search
    (RFC 5256 §3 REFERENCES "container")."""

    item: Candidate | None = None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def has_descendant(self, other: Node) -> bool:
        stack = list(self.children)
        while stack:
            node = stack.pop()
            if node is other:
                return True
            stack.extend(node.children)
        return False

    def first(self) -> Candidate:
        """The message that stands for this node: itself, or its first child's (the
        children are sorted first)."""
        node = self
        while node.item is None:
            node = node.children[0]
        return node.item


def thread(algorithm: ThreadAlgorithm, candidates: Sequence[Candidate]) -> list[Node]:
    if algorithm is ThreadAlgorithm.ORDEREDSUBJECT:
        return ordered_subject(candidates)
    return references(candidates)


def _order(item: Candidate) -> tuple[datetime, int]:
    return sent_date(item), item.msn


def _base_subject(item: Candidate) -> str:
    assert item.message is not None
    return ascii_casemap(item.message.subject_base())


def ordered_subject(candidates: Sequence[Candidate]) -> list[Node]:
    """RFC 5256 §3 ORDEREDSUBJECT: one thread per base subject; its first message (by
    sent date) is the root, every later one a child of the root."""
    by_subject: dict[str, list[Candidate]] = {}
    for item in sorted(candidates, key=lambda i: (_base_subject(i), *_order(i))):
        by_subject.setdefault(_base_subject(item), []).append(item)
    threads = []
    for members in by_subject.values():
        root = Node(members[0])
        for item in members[1:]:
            root.adopt(Node(item))
        threads.append(root)
    return sorted(threads, key=lambda n: _order(n.first()))


def _ids(item: Candidate, field_name: str) -> list[str]:
    assert item.message is not None
    found: list[str] = []
    for header in item.message.header_fields([field_name]):
        found += _MESSAGE_ID.findall(header.raw.decode("utf-8", "replace"))
    return found


def _is_reply_or_forward(item: Candidate) -> bool:
    assert item.message is not None
    subjects = item.message.header_fields(["Subject"])
    return bool(subjects) and _REPLY_OR_FORWARD.search(subjects[0].value) is not None


def references(candidates: Sequence[Candidate]) -> list[Node]:
    """RFC 5256 §3 REFERENCES, steps (A) to (G) as numbered there."""
    table: dict[str, Node] = {}
    every: list[Node] = []

    def container_for(message_id: str) -> Node:
        node = table.get(message_id)
        if node is None:
            node = table[message_id] = Node()
            every.append(node)
        return node

    for item in candidates:
        # (A) the message's container; a missing or duplicate Message-ID gets its own.
        own_ids = _ids(item, "Message-ID")
        container = table.get(own_ids[0]) if own_ids else None
        if container is None or container.item is not None:
            container = Node()
            every.append(container)
            if own_ids and own_ids[0] not in table:
                table[own_ids[0]] = container
        container.item = item
        # (A.1) References, or else the first message-id of In-Reply-To.
        chain = _ids(item, "References") or _ids(item, "In-Reply-To")[:1]
        links = [container_for(ref) for ref in chain]
        # (A.2) link each reference to the next unless linked already or making a loop.
        for parent, child in pairwise(links):
            if child.parent is None and parent is not child and not child.has_descendant(parent):
                parent.adopt(child)
        # (A.3) the last reference becomes the parent, replacing an earlier guess; no
        # references, no parent.
        last = links[-1] if links else None
        if last is None:
            if container.parent is not None:
                container.parent.children.remove(container)
                container.parent = None
        elif (
            container.parent is not last
            and last is not container
            and not container.has_descendant(last)
        ):
            last.adopt(container)
    # (B) the root set; (C) the table is no longer needed.
    roots = [node for node in every if node.parent is None]
    # (D) prune dummies.
    roots = _prune(roots, at_root=True)
    for root in roots:
        root.parent = None
    # (E) sort siblings by sent date.
    _sort(roots)
    # (F) gather root threads with the same base subject.
    roots = _group_by_subject(roots)
    # (G) sort again, now that grouping made new siblings.
    _sort(roots)
    return roots


def _prune(nodes: list[Node], *, at_root: bool) -> list[Node]:
    """RFC 5256 §3 (D): drop dummies without children; promote a dummy's children to
    its level, except at the root when it has several (the dummy keeps them together)."""
    kept: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, at_root=False)
        for child in node.children:
            child.parent = node
        if node.item is not None:
            kept.append(node)
        elif not node.children:
            continue
        elif at_root and len(node.children) > 1:
            kept.append(node)
        else:
            kept.extend(node.children)
    return kept


def _sort(nodes: list[Node]) -> None:
    for node in nodes:
        _sort(node.children)
    nodes.sort(key=lambda n: _order(n.first()))


def _group_by_subject(roots: list[Node]) -> list[Node]:
    """RFC 5256 §3 (F)."""
    table: dict[str, Node] = {}
    for root in roots:  # (F.1)
        subject = _base_subject(root.first())
        if not subject:
            continue
        held = table.get(subject)
        if (
            held is None
            or (root.item is None and held.item is not None)
            or (
                held.item is not None
                and root.item is not None
                and _is_reply_or_forward(held.item)
                and not _is_reply_or_forward(root.item)
            )
        ):
            table[subject] = root
    result: list[Node] = []
    for root in roots:  # (F.2)
        if root.parent is not None:
            continue  # merged under another root already
        subject = _base_subject(root.first())
        held = table.get(subject) if subject else None
        if held is None or held is root:
            result.append(root)
            continue
        if held.item is None and root.item is None:
            for child in list(root.children):
                held.adopt(child)
        elif held.item is None:
            held.adopt(root)
        elif root.item is None:
            root.adopt(held)
            _take_place(result, held, root)
            table[subject] = root
        elif not _is_reply_or_forward(held.item) and _is_reply_or_forward(root.item):
            held.adopt(root)
        else:
            dummy = Node()
            dummy.adopt(held)
            dummy.adopt(root)
            _take_place(result, held, dummy)
            table[subject] = dummy
    return result


def _take_place(result: list[Node], old: Node, new: Node) -> None:
    """`new` takes `old`'s place in the root set, or joins it if `old` was not in it yet."""
    if old in result:
        result[result.index(old)] = new
    else:
        result.append(new)


def render(roots: Sequence[Node], number: dict[int, int]) -> bytes:
    """RFC 5256 §4 thread-list: a chain of single children as "1 2 3", several children
    as "(…)(…)". `number` maps UIDs to what the client asked for (UIDs or sequence
    numbers)."""

    def members(node: Node) -> str:
        parts: list[str] = []
        while True:
            if node.item is not None:
                parts.append(str(number[node.item.entry.uid]))
            if node.item is not None and len(node.children) == 1:
                node = node.children[0]
                continue
            if node.children:
                parts.append("".join(f"({members(child)})" for child in node.children))
            return " ".join(parts)

    return "".join(f"({members(root)})" for root in roots).encode("ascii")
