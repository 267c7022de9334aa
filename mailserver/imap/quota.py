"""QUOTA (RFC 9208) with the STORAGE resource: one quota root per mailbox (BAL), over
all its folders. The user's own mailbox is the root "", a service mailbox the root
"Shared/<address>" (its namespace prefix without the delimiter)."""

from __future__ import annotations

from mailserver.imap.wire import Atom, ResponseItem
from storage.messages import StorageUsage

KIB = 1024  # RFC 9208 §5.1: STORAGE counts units of 1024 octets


def root_name(prefix: str) -> str:
    """The quota root of a namespace prefix ("" or "Shared/<address>/")."""
    return prefix.rstrip("/")


def resources(usage: StorageUsage) -> list[ResponseItem]:
    """RFC 9208 §5.1 quota resource list; empty when the mailbox has no limit."""
    if usage.quota_bytes is None:
        return []
    return [Atom("STORAGE"), -(-usage.used_bytes // KIB), usage.quota_bytes // KIB]


def exceeds(usage: StorageUsage, adding: int) -> bool:
    """RFC 9208 §4.2.1: whether storing `adding` more octets goes over the limit."""
    return usage.quota_bytes is not None and usage.used_bytes + adding > usage.quota_bytes
