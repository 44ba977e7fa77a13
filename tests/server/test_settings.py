"""Settings: precedence flags > environment > file > defaults, strict keys, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings, SettingsError, load_settings


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text('port = 6001\nmax_concurrent_runs = 4\ndata_dir = "/srv/equihome"\n')
    return path


def test_defaults_are_safe() -> None:
    settings = load_settings([], environ={})

    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 9464)
    assert settings.data_dir == Path("data")
    assert settings.max_concurrent_runs == 2
    assert settings.max_message_bytes == 8 * 1024 * 1024
    assert settings.auth_mode == "dev_key" and not settings.insecure_disable_auth


def test_flags_beat_environment_beat_file_beat_defaults(config_file: Path) -> None:
    environ = {"EQUIHOME_CONFIG": str(config_file), "EQUIHOME_PORT": "6002"}

    from_file = load_settings([], environ={"EQUIHOME_CONFIG": str(config_file)})
    from_env = load_settings([], environ=environ)
    from_flag = load_settings(["--port", "6003"], environ=environ)

    assert (from_file.port, from_env.port, from_flag.port) == (6001, 6002, 6003)
    assert from_flag.max_concurrent_runs == 4  # untouched keys still come from the file
    assert from_flag.data_dir == Path("/srv/equihome")
    assert from_flag.grace_period_s == 10.0  # and untouched defaults stay


def test_config_flag_and_boolean_flags(config_file: Path) -> None:
    settings = load_settings(
        ["--config", str(config_file), "--insecure-disable-auth", "--no-metrics-enabled"],
        environ={"EQUIHOME_LOG_LEVEL": "debug"},
    )

    assert settings.port == 6001
    assert settings.insecure_disable_auth and settings.auth_mode == "disabled"
    assert not settings.metrics_enabled
    assert settings.log_level == "DEBUG"


def test_unknown_keys_are_rejected_naming_their_source(tmp_path: Path) -> None:
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("prot = 1\n")

    with pytest.raises(SettingsError, match=r"bad.toml: unknown setting\(s\) prot"):
        load_settings(["--config", str(bad_file)], environ={})
    with pytest.raises(SettingsError, match="unknown setting EQUIHOME_PROT"):
        load_settings([], environ={"EQUIHOME_PROT": "1"})
    with pytest.raises(SystemExit):
        load_settings(["--prot", "1"], environ={})


def test_invalid_values_name_their_source() -> None:
    with pytest.raises(
        SettingsError, match="EQUIHOME_MAX_CONCURRENT_RUNS: Input should be greater than or equal to 1"
    ):
        load_settings([], environ={"EQUIHOME_MAX_CONCURRENT_RUNS": "0"})
    with pytest.raises(SettingsError, match="--port: Input should be a valid integer"):
        load_settings(["--port", "many"], environ={})
    with pytest.raises(SettingsError, match="not both"):
        load_settings(["--auth-jwks-url", "https://idp/jwks", "--auth-key-file", "keys.json"], environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(["--config", str(tmp_path / "absent.toml")], environ={})


def test_repr_masks_credentials_in_urls() -> None:
    settings = Settings(auth_jwks_url="https://client:s3cret@idp.example.com/jwks?api_key=k3y")

    shown = f"{settings!r} {settings} {settings.redacted()}"
    assert "s3cret" not in shown and "k3y" not in shown and "//client" not in shown
    assert "idp.example.com/jwks" in shown
    assert (
        settings.auth_jwks_url is not None and "s3cret" in settings.auth_jwks_url
    )  # the value itself is intact


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
