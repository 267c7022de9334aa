"""`hygie directory import` and `hygie directory search` on an initialised data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailserver import init

FIXTURE = (
    Path(__file__).parent.parent / "fixtures" / "Extraction_Correspondance_MSSante_202611230400.txt"
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    init.initialise(data, "hygie.test")
    return data


def hygie(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailserver", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


def test_import_then_search(data_dir: Path, tmp_path: Path) -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    bad = list(lines)
    bad[3] = bad[3] + "|surplus"  # line 4
    bad[6] = bad[6].replace("@", " at ", 1)  # line 7
    bad.append(bad[1].replace("service0@chu-exemple.test", "service0@hygie.test"))  # local
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("\n".join(bad) + "\n", encoding="utf-8")

    refused = hygie(data_dir, "directory", "import", str(bad_file))
    assert refused.returncode == 1, refused.stderr
    first, second = refused.stdout.splitlines()
    assert first == "line 4: has 32 columns instead of 31: a value holding '|', or a truncated line"
    assert second.startswith("line 7: column 2 (Adresse BAL) ")
    assert "is not a valid mailbox address" in second
    assert "2 bad lines; nothing was imported" in refused.stderr
    assert "importing" in refused.stderr  # the progress bar's label, without a terminal
    nothing = hygie(data_dir, "directory", "search")
    assert nothing.returncode == 0 and nothing.stdout == ""

    skipped = hygie(data_dir, "directory", "import", str(bad_file), "--skip-bad-lines")
    assert skipped.returncode == 0, skipped.stderr
    out = skipped.stdout.splitlines()
    assert out[0] == "added 298, updated 0, unchanged 0, removed 0, skipped (local) 1"
    assert [line.split(":")[0] for line in out[1:]] == ["line 4", "line 7"]
    assert "2 bad lines skipped" in skipped.stderr

    full = hygie(data_dir, "directory", "import", str(FIXTURE))
    assert full.returncode == 0, full.stderr
    assert full.stdout == "added 2, updated 0, unchanged 298, removed 0, skipped (local) 0\n"

    found = hygie(data_dir, "directory", "search", "thomas", "--kind", "PER", "--remote")
    assert found.returncode == 0, found.stderr
    assert "elodie.thomas.1@chu-exemple.test\tPER\tÉlodie THOMAS\tremote" in (
        found.stdout.splitlines()
    )
    assert all("\tPER\t" in line and "thomas" in line for line in found.stdout.splitlines())
    limited = hygie(data_dir, "directory", "search", "--kind", "org", "--limit", "2")
    assert limited.returncode == 0, limited.stderr
    assert limited.stdout.splitlines() == [
        "service0@chu-exemple.test\tORG\tCENTRE HOSPITALIER TEST – Cardiologie\tremote",
        "service100@chu-exemple.test\tORG\tCENTRE HOSPITALIER TEST – Cardiologie\tremote",
    ]
    local = hygie(data_dir, "directory", "search", "--local")
    assert local.returncode == 0 and local.stdout == ""


def test_import_of_a_file_that_is_not_an_extraction(data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a|b|c\n1|2|3\n", encoding="utf-8")
    result = hygie(data_dir, "directory", "import", str(other))
    assert result.returncode == 2
    assert "header column 1 is 'a'" in result.stderr
