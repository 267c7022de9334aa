"""Configuration: one TOML file, HYGIE_<SECTION>_<KEY> overrides, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailserver.config import CONFIG_FILE, ConfigError, default_config_text, load_settings


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / CONFIG_FILE).write_text(default_config_text("Hygie.Test"), encoding="utf-8")
    return tmp_path


def test_file_values_are_read_and_paths_resolve_in_the_data_dir(data_dir: Path) -> None:
    settings = load_settings(data_dir, environ={})
    assert settings.server.domain == "hygie.test"
    assert settings.server.patient_domain == "patient.hygie.test"
    assert settings.imap.port == 5143
    assert settings.path(settings.keys.master_key_file) == data_dir.resolve() / "keys/master.key"
    assert settings.database_url == f"sqlite+aiosqlite:///{data_dir.resolve() / 'hygie.db'}"


def test_environment_overrides_any_key(data_dir: Path) -> None:
    settings = load_settings(
        data_dir,
        environ={
            "HYGIE_IMAP_PORT": "0",
            "HYGIE_TLS_STRICT_PROFILE": "true",
            "HYGIE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/hygie",
        },
    )
    assert settings.imap.port == 0
    assert settings.tls.strict_profile is True
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1/hygie"


def test_bad_environment_value_names_key_value_and_what_is_allowed(data_dir: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(data_dir, environ={"HYGIE_IMAP_PORT": "70000"})
    message = str(error.value)
    assert "imap.port" in message and "'70000'" in message
    assert "HYGIE_IMAP_PORT" in message and "less than or equal to 65535" in message


def test_bad_file_value_is_refused(data_dir: Path) -> None:
    text = (data_dir / CONFIG_FILE).read_text().replace('level = "INFO"', 'level = "LOUD"')
    (data_dir / CONFIG_FILE).write_text(text)
    with pytest.raises(
        ConfigError, match=r"logging\.level = 'LOUD' \(from the configuration file\)"
    ):
        load_settings(data_dir, environ={})


def test_unknown_key_is_refused(data_dir: Path) -> None:
    with (data_dir / CONFIG_FILE).open("a") as handle:
        handle.write("\n[retention]\nyears = 10\n[imapz]\nport = 993\n")
    with pytest.raises(ConfigError, match=r"imapz: unknown key"):
        load_settings(data_dir, environ={})


def test_bad_domain_and_database_url_are_refused(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.domain"):
        load_settings(data_dir, environ={"HYGIE_SERVER_DOMAIN": "not a domain"})
    with pytest.raises(ConfigError, match=r"database\.url.*sqlite\+aiosqlite"):
        load_settings(data_dir, environ={"HYGIE_DATABASE_URL": "mysql://root@localhost/x"})


def test_missing_file_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hygie init"):
        load_settings(tmp_path / "nowhere", environ={})


def test_broken_toml_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[server\ndomain=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path, environ={})
