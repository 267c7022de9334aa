"""`hygie init`: a data directory ready to serve, created piece by piece, never overwritten.

Each piece (configuration, master key, development PKI, DKIM key, databases) is created
only when missing, so running it again is harmless and repairs what is absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mailserver import tls
from mailserver.config import CONFIG_FILE, ConfigError, Settings, default_config_text, load_settings
from storage import migrate
from storage.crypto import ENV_MASTER_KEY, MasterKeyring


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def note(self, created: bool, what: str) -> None:
        (self.created if created else self.kept).append(what)


def _relative(settings: Settings, path: Path) -> str:
    try:
        return str(path.relative_to(settings.data_dir))
    except ValueError:
        return str(path)


def _write_config(data_dir: Path, domain: str, report: InitReport) -> Settings:
    config_path = data_dir / CONFIG_FILE
    if not config_path.exists():
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(default_config_text(domain))
        report.note(True, CONFIG_FILE)
    else:
        report.note(False, CONFIG_FILE)
    settings = load_settings(data_dir)
    if settings.server.domain != domain.lower().rstrip("."):
        raise ConfigError(
            f"{config_path} is for domain {settings.server.domain!r}, not {domain!r}: "
            "use another data directory"
        )
    return settings


def _master_key(settings: Settings, report: InitReport) -> None:
    path = settings.path(settings.keys.master_key_file)
    if os.environ.get(ENV_MASTER_KEY):
        report.note(False, f"master key (from {ENV_MASTER_KEY})")
    elif path.exists():
        MasterKeyring.load(path)  # refuse to go on over a damaged key file
        report.note(False, _relative(settings, path))
    else:
        MasterKeyring.generate().save(path)
        report.note(True, _relative(settings, path))


def _pki(settings: Settings, report: InitReport) -> None:
    domain = settings.server.domain
    tls_dir = settings.data_dir / "tls"
    ca_pem, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    if ca_pem.exists() != ca_key.exists():
        raise ConfigError(f"{tls_dir}: ca.pem and ca.key must both exist, or neither")
    if ca_pem.exists():
        ca = tls.Issued(tls.load_certificate(ca_pem), tls.load_private_key(ca_key))
        report.note(False, "tls/ca.pem")
    else:
        ca = tls.create_ca(domain)
        tls.write_private_key(ca_key, ca.key)
        tls.write_certificate(ca_pem, ca.certificate)
        report.note(True, "tls/ca.pem")
    pairs = (
        (settings.tls.certificate, settings.tls.private_key, "server"),
        (settings.tls.client_certificate, settings.tls.client_private_key, "client"),
    )
    for cert_name, key_name, purpose in pairs:
        cert_path, key_path = settings.path(cert_name), settings.path(key_name)
        if cert_path.exists() and key_path.exists():
            report.note(False, _relative(settings, cert_path))
            continue
        if key_path.exists():
            raise ConfigError(f"{key_path} exists without {cert_path}: move it away first")
        if purpose == "server":
            issued = tls.issue_server_certificate(ca, domain, [settings.server.announced_hostname])
        else:
            issued = tls.issue_client_certificate(ca, domain)
        tls.write_private_key(key_path, issued.key)
        tls.write_certificate(cert_path, issued.certificate, ca.certificate)
        report.note(True, _relative(settings, cert_path))
    bundle = settings.path(settings.tls.ca_bundle)
    missing = not bundle.exists()
    if missing:
        tls.write_certificate(bundle, ca.certificate)
    report.note(missing, _relative(settings, bundle))


def _dkim(settings: Settings, report: InitReport) -> None:
    path = settings.path(settings.dkim.private_key)
    if path.exists():
        report.note(False, _relative(settings, path))
        return
    tls.write_private_key(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    report.note(True, _relative(settings, path))


def initialise(data_dir: Path, domain: str) -> tuple[Settings, InitReport]:
    report = InitReport()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = _write_config(data_dir, domain, report)
    _master_key(settings, report)
    _pki(settings, report)
    _dkim(settings, report)
    if settings.logging.file:
        settings.path(settings.logging.file).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade_databases(settings)
    return settings, report


def upgrade_databases(settings: Settings) -> None:
    migrate.upgrade("messages", settings.database_url)
    migrate.upgrade("keystore", settings.keystore_url)
