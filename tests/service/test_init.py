"""`hygie init`: a complete data directory, idempotent, never overwriting a key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

HYGIE = [sys.executable, "-m", "mailserver"]


def hygie(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYGIE, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_init_creates_everything_and_keeps_secrets_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = hygie("init", "--data-dir", str(data), "--domain", "hygie.test")
    assert result.returncode == 0, result.stderr
    for relative in (
        "hygie.toml",
        "keys/master.key",
        "keys/keystore.db",
        "hygie.db",
        "tls/ca.pem",
        "tls/server.pem",
        "tls/server.key",
        "tls/operator.pem",
        "tls/operator.key",
        "tls/trusted-cas.pem",
        "dkim/hygie.key",
    ):
        assert (data / relative).is_file(), relative
    for secret in (
        "keys/master.key",
        "tls/ca.key",
        "tls/server.key",
        "tls/operator.key",
        "dkim/hygie.key",
        "hygie.db",
        "keys/keystore.db",
    ):
        assert stat.S_IMODE(os.stat(data / secret).st_mode) == 0o600, secret
    # the master key is a file of its own, never a row of the database
    master = (data / "keys/master.key").read_bytes()
    assert master not in (data / "hygie.db").read_bytes()

    server = x509.load_pem_x509_certificate((data / "tls/server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"hygie.test", "patient.hygie.test"} <= set(names.get_values_for_type(x509.DNSName))
    operator = x509.load_pem_x509_certificate((data / "tls/operator.pem").read_bytes())
    usage = operator.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    ca = x509.load_pem_x509_certificate((data / "tls/ca.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    operator.verify_directly_issued_by(ca)


def test_init_twice_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hygie("init", "--data-dir", str(data), "--domain", "hygie.test").returncode == 0
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and p.suffix != ".db"}
    again = hygie("init", "--data-dir", str(data), "--domain", "hygie.test")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and "kept    keys/master.key" in again.stdout
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_init_repairs_a_missing_piece_without_touching_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hygie("init", "--data-dir", str(data), "--domain", "hygie.test").returncode == 0
    master = (data / "keys/master.key").read_bytes()
    (data / "tls/operator.pem").unlink()
    (data / "tls/operator.key").unlink()
    result = hygie("init", "--data-dir", str(data), "--domain", "hygie.test")
    assert result.returncode == 0, result.stderr
    assert "created tls/operator.pem" in result.stdout
    assert (data / "keys/master.key").read_bytes() == master


def test_init_refuses_another_domain_in_an_existing_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hygie("init", "--data-dir", str(data), "--domain", "hygie.test").returncode == 0
    result = hygie("init", "--data-dir", str(data), "--domain", "other.test")
    assert result.returncode == 2
    assert "is for domain 'hygie.test'" in result.stderr


def test_bad_configuration_stops_startup_with_the_key_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hygie("init", "--data-dir", str(data), "--domain", "hygie.test").returncode == 0
    env = {**os.environ, "HYGIE_OPS_PORT": "http"}
    result = hygie("serve", "--data-dir", str(data), env=env)
    assert result.returncode == 2
    assert "ops.port = 'http' (from environment variable HYGIE_OPS_PORT)" in result.stderr
