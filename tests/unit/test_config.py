"""Config.from_sources: flags win over DICOMWEB_* variables, which win over defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dicomweb.config import Config, ConfigError

NO_ENV: dict[str, str] = {}


def test_defaults() -> None:
    config = Config.from_sources(environ=NO_ENV)
    assert config.data_dir == Path("dicomweb-data")
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.dimse_port == 11112
    assert config.aet == "DICOMWEB"
    assert config.database_url == ""
    assert config.max_request_bytes >= 4 * 1024**3  # a 4 GB study fits


def test_default_database_is_sqlite_inside_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = make_url(Config.from_sources(environ=NO_ENV).resolved_database_url)
    assert url.drivername == "sqlite+aiosqlite"
    database = Path(url.database or "")
    assert database.is_absolute()
    assert database.parent == tmp_path.resolve() / "dicomweb-data"


def test_data_dir_from_environment_is_a_path() -> None:
    config = Config.from_sources(environ={"DICOMWEB_DATA_DIR": "/srv/dicom"})
    assert config.data_dir == Path("/srv/dicom")


def test_data_dir_from_flags_is_a_path() -> None:
    config = Config.from_sources({"data_dir": "/data"}, NO_ENV)
    assert config.data_dir == Path("/data")


def test_sqlite_follows_a_configured_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "elsewhere"
    config = Config.from_sources(environ={"DICOMWEB_DATA_DIR": str(data_dir)})
    url = make_url(config.resolved_database_url)
    assert Path(url.database or "").parent == data_dir.resolve()


def test_sqlite_follows_a_data_dir_given_directly(tmp_path: Path) -> None:
    data_dir = tmp_path / "elsewhere"
    url = make_url(Config(data_dir=data_dir).resolved_database_url)
    assert Path(url.database or "").parent == data_dir.resolve()


def test_explicit_database_url_wins_over_sqlite() -> None:
    url = "postgresql+asyncpg://user@db/dicom"
    config = Config.from_sources(environ={"DICOMWEB_DATABASE_URL": url})
    assert config.resolved_database_url == url


def test_environment_overrides_defaults() -> None:
    config = Config.from_sources(
        environ={
            "DICOMWEB_HOST": "0.0.0.0",
            "DICOMWEB_PORT": "9090",
            "DICOMWEB_DIMSE_PORT": "104",
            "DICOMWEB_AET": "ARCHIVE",
            "DICOMWEB_MAX_REQUEST_BYTES": "1048576",
            "DICOMWEB_BULK_DATA_THRESHOLD": "4096",
            "DICOMWEB_SWEEP_GRACE_SECONDS": "2.5",
            "DICOMWEB_WORKERS": "3",
        }
    )
    assert config.host == "0.0.0.0"
    assert config.port == 9090
    assert config.dimse_port == 104
    assert config.aet == "ARCHIVE"
    assert config.max_request_bytes == 1048576
    assert config.bulk_data_threshold == 4096
    assert config.sweep_grace_seconds == 2.5
    assert config.workers == 3


def test_unprefixed_or_unknown_variables_are_ignored() -> None:
    config = Config.from_sources(
        environ={"PORT": "1", "HOST": "example.org", "DICOMWEB_UNKNOWN": "x", "dicomweb_port": "2"}
    )
    assert config.port == 8080
    assert config.host == "127.0.0.1"


def test_process_environment_is_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMWEB_PORT", "8181")
    monkeypatch.setenv("DICOMWEB_AET", "FROM_ENV")
    config = Config.from_sources()
    assert (config.port, config.aet) == (8181, "FROM_ENV")


def test_flags_override_environment() -> None:
    environ = {"DICOMWEB_PORT": "9090", "DICOMWEB_AET": "ENV_AET", "DICOMWEB_HOST": "0.0.0.0"}
    config = Config.from_sources({"port": 7070, "aet": "FLAG_AET"}, environ)
    assert config.port == 7070
    assert config.aet == "FLAG_AET"
    assert config.host == "0.0.0.0"  # not given as a flag: the environment still counts


def test_flag_values_are_coerced() -> None:
    config = Config.from_sources({"port": "7070", "sweep_grace_seconds": 5}, NO_ENV)
    assert config.port == 7070
    assert config.sweep_grace_seconds == 5.0
    assert isinstance(config.sweep_grace_seconds, float)


def test_none_flags_are_ignored() -> None:
    environ = {"DICOMWEB_PORT": "9090"}
    config = Config.from_sources({"port": None, "aet": None, "host": None}, environ)
    assert config.port == 9090
    assert config.aet == "DICOMWEB"
    assert config.host == "127.0.0.1"


def test_falsy_flags_are_not_ignored() -> None:
    environ = {"DICOMWEB_DIMSE_PORT": "104", "DICOMWEB_SWEEP_GRACE_SECONDS": "60"}
    config = Config.from_sources({"dimse_port": 0, "sweep_grace_seconds": 0.0}, environ)
    assert config.dimse_port == 0
    assert config.sweep_grace_seconds == 0.0


def test_unknown_flags_are_ignored() -> None:
    config = Config.from_sources({"log_level": "debug", "port": 8181}, NO_ENV)
    assert config.port == 8181


@pytest.mark.parametrize(
    ("flags", "environ", "name"),
    [
        ({}, {"DICOMWEB_PORT": "eighty"}, "port"),
        ({}, {"DICOMWEB_PORT": "80.5"}, "port"),
        ({}, {"DICOMWEB_PORT": ""}, "port"),
        ({}, {"DICOMWEB_DIMSE_PORT": "1o4"}, "dimse_port"),
        ({}, {"DICOMWEB_MAX_REQUEST_BYTES": "4G"}, "max_request_bytes"),
        ({}, {"DICOMWEB_SWEEP_GRACE_SECONDS": "ten"}, "sweep_grace_seconds"),
        ({"workers": "many"}, {}, "workers"),
        ({"port": "x"}, {"DICOMWEB_PORT": "9090"}, "port"),
    ],
)
def test_bad_numbers_raise_config_error_naming_the_setting(
    flags: dict[str, str], environ: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_sources(flags, environ)
    # The setting is named as a whole word: "port" must not be satisfied by "dimse_port".
    assert re.search(rf"(?<![a-z_]){name}(?![a-z_])", str(info.value))
    assert isinstance(info.value, ValueError)


def test_config_is_frozen() -> None:
    config = Config.from_sources(environ=NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
