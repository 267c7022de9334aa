"""DKIM (RFC 6376) with dkimpy: our signing key and the verification of inbound mail.

Public keys of other operators are looked up in a local file of known records first
(`[dkim] trusted_keys_file`: lines `<selector>._domainkey.<domain> <TXT value>`), which
lets a closed trust space work without public DNS, then, if enabled, in DNS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger("hygie.dkim")


@dataclass(frozen=True)
class DkimResult:
    """One signature's outcome, for Authentication-Results (RFC 8601 §2.7.1)."""

    result: str  # pass, fail, neutral, temperror, permerror, none
    domain: str = ""
    selector: str = ""

    def header_part(self) -> str:
        if self.result == "none":
            return "dkim=none"
        return f"dkim={self.result} header.d={self.domain} header.s={self.selector}"


def public_record(private_key_pem: bytes) -> str:
    """The TXT record value publishing the public half of a DKIM key (RFC 6376 §3.6.1)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("DKIM keys are RSA keys")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


class KnownKeys:
    """DKIM key records known locally, by record name."""

    def __init__(self, records: dict[str, str], *, use_dns: bool) -> None:
        self.records = {name.lower().rstrip("."): value for name, value in records.items()}
        self.use_dns = use_dns

    @classmethod
    def load(cls, path: Path | None, *, use_dns: bool) -> KnownKeys:
        records: dict[str, str] = {}
        if path is not None and path.exists():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, _, value = line.partition(" ")
                if not value.strip():
                    raise ValueError(f"{path}:{number}: expected '<name> <TXT value>'")
                records[name] = value.strip()
        return cls(records, use_dns=use_dns)

    def lookup(self, name: bytes, timeout: int = 5) -> bytes | None:
        key = name.decode("ascii", "replace").lower().rstrip(".")
        if key in self.records:
            return self.records[key].encode()
        if self.use_dns:
            return dkim.dnsplug.get_txt(name, timeout=timeout)  # type: ignore[no-any-return]
        return None


def _verify_all(message: bytes, keys: KnownKeys) -> list[DkimResult]:
    verifier = dkim.DKIM(message, minkey=1024)
    results = []
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    for index, signature in enumerate(signatures):
        tags = _tags(signature)
        domain, selector = tags.get("d", ""), tags.get("s", "")
        try:
            ok = verifier.verify(idx=index, dnsfunc=keys.lookup)
            results.append(DkimResult("pass" if ok else "fail", domain, selector))
        except dkim.KeyFormatError:
            results.append(DkimResult("permerror", domain, selector))
        except dkim.ValidationError as exc:
            # A body altered after signing is a failed signature (RFC 6376 §6.1.3); any
            # other validation problem is a malformed signature (RFC 8601 §2.7.1).
            failed = "body hash mismatch" in str(exc)
            results.append(DkimResult("fail" if failed else "permerror", domain, selector))
        except (dkim.DnsTimeoutError, OSError):
            results.append(DkimResult("temperror", domain, selector))
        except dkim.DKIMException:
            results.append(DkimResult("fail", domain, selector))
    return results or [DkimResult("none")]


def _tags(signature: bytes) -> dict[str, str]:
    tags = {}
    for part in signature.decode("ascii", "replace").split(";"):
        name, _, value = part.partition("=")
        tags[name.strip().lower()] = "".join(value.split())
    return tags


async def verify(message: bytes, keys: KnownKeys) -> list[DkimResult]:
    """Every signature's result; RSA and DNS work run off the event loop."""
    return await asyncio.to_thread(_verify_all, message, keys)


def sign(message: bytes, *, selector: str, domain: str, private_key_pem: bytes) -> bytes:
    """The DKIM-Signature header line(s) to prepend (relaxed/relaxed, rsa-sha256)."""
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        private_key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return bytes(header)
