"""Settings: one TOML file in the data directory, every key overridable by environment.

`HYGIE_<SECTION>_<KEY>` overrides `[section] key` (e.g. `HYGIE_IMAP_PORT=1143`). A bad value
stops start-up with a `ConfigError` that names the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_FILE = "hygie.toml"

Port = Annotated[int, Field(ge=0, le=65535, description="0 picks a free port")]
TlsMode = Literal["starttls", "tls", "none"]


class ConfigError(Exception):
    """A configuration value is missing or not allowed; the message says which and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSection(_Section):
    domain: str = Field(min_length=1, description="operator domain, e.g. mssante.example")
    hostname: str = Field(default="", description="host name announced in greetings")
    data_dir: str = Field(default="", description="set from --data-dir; not read from the file")

    @field_validator("domain")
    @classmethod
    def _domain_is_a_dns_name(cls, value: str) -> str:
        labels = value.lower().rstrip(".").split(".")
        if len(labels) < 2 or not all(_is_dns_label(label) for label in labels):
            raise ValueError("must be a DNS domain name such as mssante.example")
        return ".".join(labels)

    @property
    def patient_domain(self) -> str:
        return f"patient.{self.domain}"

    @property
    def announced_hostname(self) -> str:
        return self.hostname or f"mail.{self.domain}"


class DatabaseSection(_Section):
    url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in the data dir")
    keystore_url: str = Field(
        default="", description="key store URL, kept apart from the message store"
    )
    pool_size: int = Field(default=10, ge=1, le=500)
    echo: bool = False

    @field_validator("url", "keystore_url")
    @classmethod
    def _supported_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (or be empty)"
            )
        return value


class KeysSection(_Section):
    master_key_file: str = Field(default="keys/master.key", description="relative to data dir")
    mailbox_key_cache_seconds: int = Field(default=60, ge=0, le=3600)


class TlsSection(_Section):
    certificate: str = "tls/server.pem"
    private_key: str = "tls/server.key"
    ca_bundle: str = Field(default="tls/trusted-cas.pem", description="CAs trusted for peers")
    client_certificate: str = "tls/operator.pem"
    client_private_key: str = "tls/operator.key"
    strict_profile: bool = Field(
        default=False, description="restrict TLS 1.2 to ECDHE-RSA AES-GCM/AES-CBC-SHA2"
    )


class ListenerSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port


class SmtpSection(ListenerSection):
    port: Port = 25


class SubmissionSection(ListenerSection):
    port: Port = 587


class SubmissionsSection(ListenerSection):
    port: Port = 465


class ImapSection(ListenerSection):
    port: Port = 143


class ImapsSection(ListenerSection):
    port: Port = 993


class WebSection(ListenerSection):
    port: Port = 8443


class AdminSection(ListenerSection):
    port: Port = 8444


class OpsSection(ListenerSection):
    port: Port = 9100


class AuthSection(_Section):
    failures_per_account: int = Field(default=10, ge=1, le=10_000)
    failures_per_remote: int = Field(default=30, ge=1, le=100_000)
    failure_window_seconds: int = Field(default=900, ge=1, le=86_400)
    lockout_seconds: int = Field(default=900, ge=1, le=86_400)
    cache_seconds: int = Field(default=60, ge=0, le=3600)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=8, le=4_194_304)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)


class LimitsSection(_Section):
    """SMTP limits; each refusal uses its own reply code (RFC 5321 §4.5.3)."""

    message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=2**31)
    recipients: int = Field(default=100, ge=1, le=10_000)
    connections_per_client: int = Field(default=20, ge=1, le=10_000)
    idle_seconds: int = Field(default=300, ge=5, le=3600)
    commands_per_connection: int = Field(default=1000, ge=10, le=1_000_000)


class QueueSection(_Section):
    """The outbound relay to other operators (RFC 5321 §4.5.4.1 retry strategy)."""

    expire_days: float = Field(default=5, gt=0, le=30, description="then a DSN, and give up")
    first_retry_seconds: int = Field(default=60, ge=1, le=86_400)
    max_retry_seconds: int = Field(default=4 * 3600, ge=1, le=7 * 86_400)
    lease_seconds: int = Field(default=300, ge=10, le=86_400)
    workers: int = Field(default=4, ge=1, le=200)
    connect_timeout_seconds: int = Field(default=30, ge=1, le=600)
    routes: str = Field(
        default="",
        description="static routes 'domain=host:port' separated by commas; others use DNS MX",
    )

    @field_validator("routes")
    @classmethod
    def _routes_are_well_formed(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            domain, _, target = item.partition("=")
            host, _, port = target.rpartition(":")
            if not domain or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"route {item!r} must look like domain=host:port")
        return value

    def route_table(self) -> dict[str, tuple[str, int]]:
        table = {}
        for item in filter(None, (part.strip() for part in self.routes.split(","))):
            domain, _, target = item.partition("=")
            host, _, port = target.rpartition(":")
            table[domain.strip().lower()] = (host.strip("[] "), int(port))
        return table


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str = Field(default="logs/hygie.log", description="relative to data dir; empty: none")


class DkimSection(_Section):
    selector: str = Field(default="hygie", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    private_key: str = "dkim/hygie.key"
    trusted_keys_file: str = Field(
        default="dkim/trusted-keys.txt",
        description="other operators' DKIM records: '<selector>._domainkey.<domain> <TXT>'",
    )
    dns: bool = Field(default=False, description="also look DKIM keys up in public DNS")


class RetentionSection(_Section):
    """Retention rules (MISSION "Storage and retention") and how often the jobs run."""

    enabled: bool = Field(default=True, description="run the retention jobs inside serve")
    interval_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    message_years: int = Field(default=10, ge=1, le=100, description="then messages are purged")
    deletion_months: int = Field(default=3, ge=0, le=120, description="closure on request")
    archive_months: int = Field(default=12, ge=0, le=1200, description="other closures")
    inactivity_months: int = Field(default=12, ge=1, le=120, description="no login: warning")
    grace_days: int = Field(default=30, ge=1, le=365, description="after the warning: closure")
    functional_log_months: int = Field(default=6, ge=1, le=120)
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="rows per transaction")
    inactivity_kinds: str = Field(
        default="PER,ORG,APP,CAB,PAT", description="mailbox types closed when inactive"
    )

    @field_validator("inactivity_kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        kinds = [part.strip().upper() for part in value.split(",") if part.strip()]
        unknown = sorted(set(kinds) - {"PER", "ORG", "APP", "CAB", "PAT"})
        if unknown:
            raise ValueError(f"unknown mailbox types {', '.join(unknown)}: use PER,ORG,APP,CAB,PAT")
        return ",".join(kinds)


class Settings(_Section):
    server: ServerSection
    database: DatabaseSection = DatabaseSection()
    keys: KeysSection = KeysSection()
    tls: TlsSection = TlsSection()
    smtp: SmtpSection = SmtpSection()
    submission: SubmissionSection = SubmissionSection()
    submissions: SubmissionsSection = SubmissionsSection()
    imap: ImapSection = ImapSection()
    imaps: ImapsSection = ImapsSection()
    web: WebSection = WebSection()
    admin: AdminSection = AdminSection()
    ops: OpsSection = OpsSection()
    auth: AuthSection = AuthSection()
    limits: LimitsSection = LimitsSection()
    queue: QueueSection = QueueSection()
    logging: LoggingSection = LoggingSection()
    dkim: DkimSection = DkimSection()
    retention: RetentionSection = RetentionSection()

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    def path(self, relative: str) -> Path:
        """A path from the configuration, resolved against the data directory."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'hygie.db'}"

    @property
    def keystore_url(self) -> str:
        return self.database.keystore_url or (
            f"sqlite+aiosqlite:///{self.data_dir / 'keys' / 'keystore.db'}"
        )


def _is_dns_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
    )


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Map `HYGIE_<SECTION>_<KEY>` variables onto (section, key) → (value, variable)."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for section_name, field in Settings.model_fields.items():
        section_type = field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        for key in section_type.model_fields:
            variable = f"HYGIE_{section_name}_{key}".upper()
            if variable in environ:
                found.setdefault(section_name, {})[key] = (environ[variable], variable)
    return found


def _describe(error: Mapping[str, Any], sources: Mapping[tuple[str, ...], str]) -> str:
    location = tuple(str(part) for part in error["loc"])
    key = ".".join(location)
    source = sources.get(location, "the configuration file")
    if error["type"] == "missing":
        return f"{key}: missing (set it in the [{location[0]}] section or the environment)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key in {source} (remove it, or check its spelling)"
    value = error.get("input")
    return f"{key} = {value!r} (from {source}): {error['msg']}"


def load_settings(
    data_dir: Path, environ: Mapping[str, str] | None = None, *, require_file: bool = True
) -> Settings:
    """Read `<data_dir>/hygie.toml`, apply environment overrides, and validate everything."""
    environ = os.environ if environ is None else environ
    config_path = data_dir / CONFIG_FILE
    raw: dict[str, Any] = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    elif require_file:
        raise ConfigError(
            f"{config_path} does not exist: run `hygie init --data-dir {data_dir} "
            "--domain DOMAIN` first"
        )
    sources: dict[tuple[str, ...], str] = {}
    for section, keys in _env_overrides(environ).items():
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: must be a table ([{section}]), not a single value")
        for key, (value, variable) in keys.items():
            target[key] = value
            sources[(section, key)] = f"environment variable {variable}"
    server = raw.setdefault("server", {})
    if isinstance(server, dict):
        server["data_dir"] = str(data_dir.resolve())
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, sources) for error in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc


def default_config_text(domain: str) -> str:
    """The commented configuration `hygie init` writes into a new data directory."""
    return f"""\
# Hygie configuration. Every key can be overridden by HYGIE_<SECTION>_<KEY>.
# Relative paths are resolved against this data directory.

[server]
domain = "{domain}"
# hostname = "mail.{domain}"

[database]
# Empty: SQLite in this directory. PostgreSQL: "postgresql+asyncpg://user@host/db".
url = ""
# The key store lives apart from the message store (crypto-shredding needs that).
keystore_url = ""

[keys]
master_key_file = "keys/master.key"

[tls]
certificate = "tls/server.pem"
private_key = "tls/server.key"
ca_bundle = "tls/trusted-cas.pem"
client_certificate = "tls/operator.pem"
client_private_key = "tls/operator.key"
strict_profile = false

[smtp]
host = "127.0.0.1"
port = 2525

[submission]
host = "127.0.0.1"
port = 5587

[submissions]
host = "127.0.0.1"
port = 5465

[imap]
host = "127.0.0.1"
port = 5143

[imaps]
host = "127.0.0.1"
port = 5993

[web]
host = "127.0.0.1"
port = 8443

[admin]
host = "127.0.0.1"
port = 8444

[ops]
host = "127.0.0.1"
port = 9100

[logging]
level = "INFO"
file = "logs/hygie.log"

[dkim]
selector = "hygie"
private_key = "dkim/hygie.key"
"""
