"""The one place that opens TLS contexts, and the development PKI `hygie init` creates.

Rules followed here (MISSION "Transport"): TLS 1.2 minimum everywhere; a strict profile
restricts TLS 1.2 to the ECDHE-RSA suites 0xC030, 0xC02F, 0xC028, 0xC027; operators
authenticate each other with client certificates chaining to a configured CA bundle.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from asyncio import sslproto
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailserver.config import Settings

# OpenSSL names of 0xC030, 0xC02F, 0xC028, 0xC027 (RFC 5289).
STRICT_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE-RSA-AES128-SHA256",
    )
)
DEV_KEY_BITS = 2048
ClientAuth = Literal["none", "optional", "required"]


def _tighten(context: ssl.SSLContext, strict: bool) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if strict:
        context.set_ciphers(STRICT_TLS12_CIPHERS)


# A TLS record is at most 16 KiB (RFC 8446 §5.1); asyncio reads into a 256 KiB buffer per
# connection by default, which dominates the memory of idle IMAP connections.
ASYNCIO_TLS_READ_BUFFER = 16 * 1024


def tune_asyncio_tls_buffers() -> None:
    """Make asyncio's per-connection TLS read buffer one record long (process-wide)."""
    sslproto.SSLProtocol.max_size = ASYNCIO_TLS_READ_BUFFER


def server_context(settings: Settings, client_auth: ClientAuth = "none") -> ssl.SSLContext:
    """A server context; `client_auth` asks for (or requires) a peer certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _tighten(context, settings.tls.strict_profile)
    context.load_cert_chain(
        settings.path(settings.tls.certificate), settings.path(settings.tls.private_key)
    )
    if client_auth != "none":
        context.load_verify_locations(cafile=settings.path(settings.tls.ca_bundle))
        context.verify_mode = ssl.CERT_REQUIRED if client_auth == "required" else ssl.CERT_OPTIONAL
    return context


def client_context(settings: Settings, *, present_certificate: bool = True) -> ssl.SSLContext:
    """A client context verifying the peer against the CA bundle, with our operator cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _tighten(context, settings.tls.strict_profile)
    context.load_verify_locations(cafile=settings.path(settings.tls.ca_bundle))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if present_certificate:
        context.load_cert_chain(
            settings.path(settings.tls.client_certificate),
            settings.path(settings.tls.client_private_key),
        )
    return context


def subject_dn(certificate: x509.Certificate) -> str:
    """The subject as an RFC 4514 string (most specific RDN first)."""
    return certificate.subject.rfc4514_string()


def peer_subject_dn(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    der = ssl_object.getpeercert(binary_form=True)
    return subject_dn(x509.load_der_x509_certificate(der)) if der else None


# -- development PKI -------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Hygie development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=DEV_KEY_BITS)


def create_ca(domain: str) -> Issued:
    key = new_rsa_key()
    name = _name(f"Hygie development CA for {domain}", f"Hygie {domain}")
    certificate = (
        _builder(name, name, key.public_key(), days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def _issue(
    ca: Issued, subject: x509.Name, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
) -> Issued:
    key = new_rsa_key()
    builder = (
        _builder(subject, ca.certificate.subject, key.public_key(), days=825)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def issue_server_certificate(ca: Issued, domain: str, extra_names: list[str]) -> Issued:
    """For the domain, `patient.<domain>`, the mail host, and loopback (for local use)."""
    dns = [domain, f"patient.{domain}", *extra_names, "localhost"]
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    return _issue(ca, _name(domain, f"Hygie {domain}"), ExtendedKeyUsageOID.SERVER_AUTH, names)


def issue_client_certificate(ca: Issued, domain: str) -> Issued:
    """The operator certificate presented to other operators (its DN goes on whitelists)."""
    subject = _name(domain, f"Hygie {domain}")
    return _issue(ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(domain)])


def write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """PKCS#8 PEM, created with mode 0600 and never overwritten."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_certificate(path: Path, *certificates: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: expected an RSA private key")
    return key
