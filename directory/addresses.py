"""Mail addresses of the trust space: syntax and normal form (lower-case, IDNA domain)."""

from __future__ import annotations

import re

from directory.whitelist_xml import normalise_domain

# RFC 5322 §3.2.3: dot-atom-text = 1*atext *("." 1*atext)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
_MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets, with "<" and ">"


def normalise_address(value: str) -> str:
    """Return the address lower-cased, or raise ValueError saying what is wrong."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise ValueError("it must look like name@domain")
    if not _DOT_ATOM.fullmatch(local):
        raise ValueError(f"the part before '@' ({local!r}) has characters not allowed there")
    if len(local) > _MAX_LOCAL_PART:
        raise ValueError(f"the part before '@' is longer than {_MAX_LOCAL_PART} characters")
    try:
        domain = normalise_domain(domain)
    except ValueError as exc:
        raise ValueError(f"the domain {domain!r} is invalid: {exc}") from None
    address = f"{local.lower()}@{domain}"
    if len(address) > _MAX_ADDRESS:
        raise ValueError(f"longer than {_MAX_ADDRESS} characters")
    return address
