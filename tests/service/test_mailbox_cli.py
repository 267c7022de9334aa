"""`hygie mailbox …` and `hygie whitelist …` as a directory administrator runs them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailserver import init

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "data"
    init.initialise(data, "hygie.test")
    return data


def hygie(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HYGIE_AUTH_ARGON2_TIME_COST": "1",
        "HYGIE_AUTH_ARGON2_MEMORY_KIB": "8",
        "HYGIE_AUTH_ARGON2_PARALLELISM": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "mailserver", *args, "--data-dir", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_create_patient_prints_the_address_and_refuses_the_same_ins(data_dir: Path) -> None:
    args = [
        "mailbox",
        "create-patient",
        "--ins",
        "279035121518989",
        "--family",
        "Dupont",
        "--given",
        "Marie",
        "--birthdate",
        "1979-03-14",
        "--sex",
        "F",
    ]
    first = hygie(data_dir, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "279035121518989@patient.hygie.test"
    again = hygie(data_dir, *args)
    assert again.returncode == 1
    assert "already issued for this INS" in again.stderr


def test_create_patient_with_a_bad_ins_names_the_reason(data_dir: Path) -> None:
    result = hygie(
        data_dir,
        "mailbox",
        "create-patient",
        "--ins",
        "279035121518988",
        "--family",
        "Dupont",
        "--given",
        "Marie",
        "--birthdate",
        "1979-03-14",
        "--sex",
        "F",
    )
    assert result.returncode == 2
    assert "INS refused (key)" in result.stderr and result.stdout == ""


def test_create_professional_with_password_and_org_membership(data_dir: Path) -> None:
    created = hygie(
        data_dir,
        "mailbox",
        "create-professional",
        "--address",
        "dr.martin@hygie.test",
        "--rpps",
        "10001234567",
        "--family",
        "Martin",
        "--given",
        "Alice",
        "--profession",
        "10",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "dr.martin@hygie.test"
    org = hygie(
        data_dir,
        "mailbox",
        "create-org",
        "--address",
        "cardiologie@hygie.test",
        "--structure-id",
        "750000001",
        "--name",
        "CHU Exemple",
        "--service",
        "Cardiologie",
    )
    assert org.returncode == 0, org.stderr
    member = hygie(
        data_dir, "mailbox", "add-member", "cardiologie@hygie.test", "dr.martin@hygie.test"
    )
    assert member.returncode == 0, member.stderr
    assert hygie(data_dir, "mailbox", "members", "cardiologie@hygie.test").stdout.split() == [
        "dr.martin@hygie.test"
    ]
    shown = hygie(data_dir, "mailbox", "show", "dr.martin@hygie.test")
    assert "national id: 810001234567" in shown.stdout and "type: PER" in shown.stdout
    listing = hygie(data_dir, "auth", "list", "dr.martin@hygie.test")
    assert "\tpassword\t" in listing.stdout


def test_both_or_neither_rpps_and_adeli_is_refused(data_dir: Path) -> None:
    result = hygie(
        data_dir,
        "mailbox",
        "create-professional",
        "--address",
        "x@hygie.test",
        "--family",
        "X",
        "--given",
        "Y",
        "--profession",
        "10",
    )
    assert result.returncode == 2 and "exactly one of --rpps and --adeli" in result.stderr


def test_whitelist_import_with_checksum_add_list_remove(data_dir: Path, tmp_path: Path) -> None:
    xml = tmp_path / "listeblanchemssante.xml"
    shutil.copy(FIXTURES / "listeblanchemssante.xml", xml)
    digest = hashlib.sha256(xml.read_bytes()).hexdigest()
    bad = hygie(data_dir, "whitelist", "import", str(xml), "--sha256", "0" * 64)
    assert bad.returncode == 2 and "SHA-256" in bad.stderr.upper()
    imported = hygie(data_dir, "whitelist", "import", str(xml), "--sha256", digest)
    assert imported.returncode == 0, imported.stderr
    assert "added   labo-exemple.test" in imported.stdout
    again = hygie(data_dir, "whitelist", "import", str(xml))
    assert "added" not in again.stdout and "removed" not in again.stdout
    added = hygie(data_dir, "whitelist", "add", "peer.test", "--cert-dn", "CN=mx.peer.test,C=FR")
    assert added.returncode == 0, added.stderr
    listing = hygie(data_dir, "whitelist", "list").stdout
    assert "peer.test\tCN=mx.peer.test,C=FR\tmanual" in listing
    assert "labo-exemple.test\t" in listing
    removed = hygie(data_dir, "whitelist", "remove", "peer.test")
    assert removed.returncode == 0 and "removed 1 entries" in removed.stdout
    missing = hygie(data_dir, "whitelist", "remove", "peer.test")
    assert missing.returncode == 1 and "not on the whitelist" in missing.stderr
