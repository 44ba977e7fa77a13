"""The server's one typed configuration, read from flags, the environment and an optional TOML file.

Precedence is flags > environment (``EQUIHOME_<FIELD>``) > file > defaults. The file is named by
``--config`` or ``EQUIHOME_CONFIG`` and holds the same keys as the fields below, flat. Unknown keys in
any source are rejected with the source named (``EQUIHOME_PROT``, ``server.toml: prot``), because a
typo that silently falls back to a default is worse than a refusal to start.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

ENV_PREFIX = "EQUIHOME_"
CONFIG_ENV = "EQUIHOME_CONFIG"
CLIENT_ENV = ("EQUIHOME_SERVER", "EQUIHOME_TOKEN")  # read by `equihome-sim remote`, not server settings
DEFAULT_ISSUER = "equihome-dev"
DEFAULT_AUDIENCE = "equihome-simulation"
MIB = 1024 * 1024
UPSTREAM_SETTING_PREFIXES = ("traffic_light", "pms", "underwriting")


class SettingsError(ValueError):
    """A setting could not be read; the message names the source and the key."""


class Settings(BaseModel):
    """Everything the server process needs to start. Defaults are safe for a developer laptop."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    host: str = Field("127.0.0.1", description="interface the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free port")
    metrics_enabled: bool = Field(True, description="serve Prometheus metrics over HTTP")
    metrics_host: str = Field("127.0.0.1", description="interface the metrics exporter binds")
    metrics_port: int = Field(9464, ge=0, le=65535, description="metrics port; 0 picks a free port")
    data_dir: Path = Field(Path("./data"), description="SQLite store, dev signing key, page-token secret")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="root log level")

    max_concurrent_runs: int = Field(
        2, ge=1, description="simulation jobs executing at once (worker processes)"
    )
    max_queued_runs: int = Field(
        16, ge=0, description="accepted jobs waiting for a worker before RESOURCE_EXHAUSTED"
    )
    max_active_runs_per_caller: int = Field(
        8, ge=1, description="queued plus running jobs of one caller (token subject) before RESOURCE_EXHAUSTED"
    )
    worker_memory_mib: int = Field(
        4096, ge=1024,
        description="address space of each worker process (a warm one takes ~600 MiB); larger runs are refused",
    )
    max_run_work: float = Field(
        5e11, gt=0, description="largest run accepted, in loan-months x paths (about 20 CPU-minutes)"
    )
    shutdown_cancels_runs: bool = Field(
        True, description="on shutdown cancel running jobs (else wait for them)"
    )
    grace_period_s: float = Field(10.0, ge=0, description="seconds in-flight RPCs get to finish on shutdown")

    max_concurrent_unary: int = Field(512, ge=1, description="unary calls of all callers with a token at once")
    max_concurrent_streams: int = Field(4096, ge=1, description="streams of all callers with a token at once")
    max_unary_per_caller: int = Field(64, ge=1, description="unary calls of one token subject at once")
    max_streams_per_caller: int = Field(128, ge=1, description="streams of one token subject at once")
    max_unauthenticated_unary: int = Field(
        64, ge=1, description="unary calls without a token at once (reflection; health Check is never limited)"
    )
    max_unauthenticated_streams: int = Field(
        1024, ge=1, description="streams without a token at once (health Watch, reflection)"
    )
    max_message_bytes: int = Field(8 * MIB, ge=1024 * 1024, description="largest request or response message")
    keepalive_time_ms: int = Field(60_000, ge=1000, description="server pings an idle connection this often")
    keepalive_timeout_ms: int = Field(20_000, ge=1000, description="and drops it if the ping is not answered")
    min_ping_interval_ms: int = Field(10_000, ge=0, description="shortest client ping interval tolerated")
    keepalive_permit_without_calls: bool = Field(True, description="allow client pings with no call open")
    max_connection_age_ms: int | None = Field(None, ge=1000, description="recycle connections (L4 balancers)")

    tls_cert_file: Path | None = Field(None, description="PEM certificate chain; serve TLS with tls_key_file")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, callers must present a client certificate it signed (mTLS)"
    )

    auth_jwks_url: str | None = Field(None, description="fetch signing keys from this JWKS URL")
    auth_key_file: Path | None = Field(None, description="read signing keys from this JWK set file")
    auth_issuer: str = Field(DEFAULT_ISSUER, min_length=1, description="required token issuer (iss)")
    auth_audience: str = Field(DEFAULT_AUDIENCE, min_length=1, description="required token audience (aud)")
    auth_leeway_s: int = Field(30, ge=0, le=300, description="clock skew tolerated on exp/nbf/iat")
    insecure_disable_auth: bool = Field(False, description="serve without authentication (development only)")

    # Integrations with the Traffic Light, Portfolio Management and Underwriting systems (docs/integration.md).
    integrations: Literal["off", "sandbox", "external"] = Field(
        "off", description="off; sandbox (start the built-in sandbox in-process); external (use the URLs below)"
    )
    traffic_light_base_url: str | None = Field(None, description="Traffic Light System REST base URL")
    traffic_light_ws_url: str | None = Field(None, description="Traffic Light System WebSocket URL")
    traffic_light_token_url: str | None = Field(None, description="OAuth token endpoint for the TLS client")
    traffic_light_client_id: str | None = Field(None, description="OAuth client id for the TLS")
    traffic_light_client_secret: SecretStr | None = Field(None, description="OAuth client secret for the TLS")
    traffic_light_client_secret_file: Path | None = Field(None, description="file holding the TLS client secret")
    pms_base_url: str | None = Field(None, description="Portfolio Management System REST base URL")
    pms_ws_url: str | None = Field(None, description="Portfolio Management System WebSocket URL")
    pms_token_url: str | None = Field(None, description="OAuth token endpoint for the PMS client")
    pms_client_id: str | None = Field(None, description="OAuth client id for the PMS")
    pms_client_secret: SecretStr | None = Field(None, description="OAuth client secret for the PMS")
    pms_client_secret_file: Path | None = Field(None, description="file holding the PMS client secret")
    underwriting_base_url: str | None = Field(None, description="Underwriting System REST base URL")
    underwriting_ws_url: str | None = Field(None, description="Underwriting System WebSocket URL")
    underwriting_token_url: str | None = Field(None, description="OAuth token endpoint for the Underwriting client")
    underwriting_client_id: str | None = Field(None, description="OAuth client id for the Underwriting System")
    underwriting_client_secret: SecretStr | None = Field(None, description="OAuth client secret for Underwriting")
    underwriting_client_secret_file: Path | None = Field(None, description="file holding the Underwriting secret")
    integration_timeout_s: float = Field(10.0, gt=0, description="timeout of one upstream HTTP request")
    integration_get_attempts: int = Field(3, ge=1, le=10, description="tries of an upstream GET on outages")
    integration_breaker_threshold: int = Field(5, ge=1, description="consecutive outages that open a breaker")
    integration_breaker_reset_s: float = Field(30.0, gt=0, description="seconds an open breaker waits to half-open")
    integration_ws_connections: int = Field(2, ge=1, le=4, description="redundant WebSockets per system")
    integration_ws_ping_interval_s: float = Field(20.0, gt=0, description="WebSocket keepalive ping interval")
    integration_ws_ping_timeout_s: float = Field(10.0, gt=0, description="WebSocket pong deadline")
    integration_ws_idle_timeout_s: float = Field(60.0, gt=0, description="probe a WebSocket silent this long")
    traffic_light_ws_channels: str = Field("zone_updates", description="TLS WebSocket channels, comma-separated")
    pms_ws_channels: str = Field("portfolio_updates", description="PMS WebSocket channels, comma-separated")
    underwriting_ws_channels: str = Field("loan_updates", description="Underwriting channels, comma-separated")
    integration_sync: bool = Field(
        True, description="keep the mirror in step with the systems' REST reads (polling, reconciliation)"
    )
    integration_mirror_portfolios: str = Field(
        "", description="PMS portfolios to mirror from the start, comma-separated (sandbox: its portfolio)"
    )
    integration_mirror_regions: str = Field(
        "", description="regions whose TLS market risk to mirror from the start, comma-separated"
    )
    integration_poll_interval_s: float = Field(60.0, gt=0, description="change polling of the mirrored reads")
    integration_reconcile_interval_s: float = Field(3600.0, gt=0, description="full reconciliation of the mirror")
    integration_reconcile_grace_s: float = Field(
        2.0, ge=0, description="wait for live events before a difference counts as drift"
    )
    integration_push_max_age_s: float = Field(
        86400.0, gt=0, description="a push not accepted this long after it was queued becomes a dead letter"
    )
    integration_push_max_backoff_s: float = Field(300.0, gt=0, description="longest wait between push attempts")
    integration_sandbox_events_per_second: float = Field(
        1.0, ge=0, description="event rate per system of the built-in sandbox (integrations=sandbox)"
    )
    integration_sandbox_extensions: str = Field(
        "", description="extensions to the guide the built-in sandbox adds, comma-separated (docs/sandbox.md)"
    )
    # Automatic re-optimisation after TLS zone and market-risk changes (docs/api.md, OptimizationService).
    reoptimize: bool = Field(True, description="re-optimise the watched portfolios after TLS changes (integrations on)")
    reoptimize_portfolios: str = Field(
        "", description="portfolios re-optimised, comma-separated (default: the mirrored portfolios)"
    )
    reoptimize_debounce_s: float = Field(5.0, gt=0, le=3600, description="quiet period that ends a burst of changes")
    reoptimize_max_wait_s: float = Field(
        60.0, gt=0, le=86400, description="longest wait after a first change while changes keep coming"
    )
    reoptimize_threshold: float = Field(
        0.02, ge=0, le=1, description="send only when a zone weight moved more than this since the last send"
    )
    reoptimize_paths: int = Field(1000, ge=100, le=20_000, description="paths of an automatic re-optimisation")

    # Portfolio impact analysis: the automatic Underwriting flow (server/integration/underwriting_flow.py)
    impact_flow_enabled: bool = Field(
        True, description="analyse every loan_application_submitted and POST it to Underwriting (integrations on)"
    )
    impact_flow_portfolio_id: str = Field(
        "", max_length=128, description="PMS portfolio the flow tests loans against (default: first mirrored one)"
    )
    impact_flow_paths: int = Field(500, ge=100, le=5000, description="paths of each analysis of the flow")
    event_retention_hours: float = Field(24.0, gt=0, description="how long events stay resumable")
    event_subscriber_buffer: int = Field(1024, ge=1, description="events buffered per subscriber before cut-off")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set tls_cert_file and tls_key_file together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.auth_jwks_url and self.auth_key_file:
            raise ValueError("set auth_jwks_url or auth_key_file, not both")
        if self.auth_jwks_url and urlsplit(self.auth_jwks_url).scheme not in {"https", "http"}:
            raise ValueError("auth_jwks_url must be an http(s) URL")
        return self

    @field_validator(
        "traffic_light_ws_channels",
        "pms_ws_channels",
        "underwriting_ws_channels",
        "integration_mirror_portfolios",
        "integration_mirror_regions",
        "integration_sandbox_extensions",
        "reoptimize_portfolios",
    )
    @classmethod
    def _id_list(cls, value: str, info: ValidationInfo) -> str:
        items = id_list(value)
        if info.field_name.endswith("_ws_channels") and not items:
            raise ValueError("name at least one channel")
        if info.field_name == "integration_sandbox_extensions":
            from adapters.sandbox.config import Extensions  # the sandbox's own list

            unknown = sorted(set(items) - set(Extensions.model_fields))
            if unknown:
                raise ValueError(f"unknown extensions {unknown}; expected some of {list(Extensions.model_fields)}")
        if any(len(item) > 128 for item in items):
            raise ValueError("names are at most 128 characters")
        return ",".join(items)

    @model_validator(mode="after")
    def _integrations_configured(self) -> Self:
        problems = []
        for system in UPSTREAM_SETTING_PREFIXES:
            if getattr(self, f"{system}_client_secret") and getattr(self, f"{system}_client_secret_file"):
                problems.append(f"set {system}_client_secret or {system}_client_secret_file, not both")
            for kind, schemes in (("base_url", {"http", "https"}), ("token_url", {"http", "https"}),
                                  ("ws_url", {"ws", "wss"})):  # fmt: skip
                url = getattr(self, f"{system}_{kind}")
                if url and urlsplit(url).scheme not in schemes:
                    problems.append(f"{system}_{kind} must be a {'/'.join(sorted(schemes))} URL")
            if self.integrations == "external":
                missing = [
                    f"{system}_{name}"
                    for name in ("base_url", "ws_url", "token_url", "client_id")
                    if not getattr(self, f"{system}_{name}")
                ]
                if not (getattr(self, f"{system}_client_secret") or getattr(self, f"{system}_client_secret_file")):
                    missing.append(f"{system}_client_secret (or _file)")
                if missing:
                    problems.append(f"integrations=external needs {', '.join(missing)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def auth_mode(self) -> Literal["disabled", "jwks_url", "key_file", "dev_key"]:
        """Where token signing keys come from (``dev_key``: generated under the data directory)."""
        if self.insecure_disable_auth:
            return "disabled"
        if self.auth_jwks_url:
            return "jwks_url"
        return "key_file" if self.auth_key_file else "dev_key"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def redacted(self) -> dict[str, Any]:
        """The settings as plain values with secrets masked: what logs and ``repr`` show."""
        values = self.model_dump(mode="json")  # SecretStr fields dump as "**********"
        for name in ("auth_jwks_url", *(f"{system}_{kind}" for system in UPSTREAM_SETTING_PREFIXES
                                        for kind in ("base_url", "ws_url", "token_url"))):  # fmt: skip
            if values.get(name):
                values[name] = _redact_url(values[name])
        return values

    def __repr_args__(self) -> Any:
        return self.redacted().items()


def id_list(value: str) -> tuple[str, ...]:
    """The non-empty, distinct items of a comma-separated setting, in order."""
    return tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))


def _redact_url(url: str) -> str:
    """Drop credentials and query string, which is where secrets hide in URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (
        ("***@" if parts.username or parts.password else "") + host + (f":{parts.port}" if parts.port else "")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


FIELD_NAMES = tuple(Settings.model_fields)


def settings_parser() -> argparse.ArgumentParser:
    """A parser with one flag per setting plus ``--config``; use it as ``parents=[settings_parser()]``.

    Flags left out of the command line are absent from the result, so they never mask lower sources.
    """
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group(
        "server settings (flags > EQUIHOME_* environment > TOML file > defaults)"
    )
    group.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            action = "store_true" if name == "insecure_disable_auth" else argparse.BooleanOptionalAction
            group.add_argument(
                flag, dest=name, action=action, default=argparse.SUPPRESS, help=field.description
            )
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=field.description)
    return parser


def load_settings(
    argv: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from ``argv`` flags, ``environ`` (default ``os.environ``) and the TOML file they name."""
    parser = argparse.ArgumentParser(prog="equihome-sim serve", parents=[settings_parser()])
    flags = vars(parser.parse_args(list(argv)))
    return settings_from_sources(flags, os.environ if environ is None else environ)


def settings_from_sources(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Merge parsed ``flags`` (setting name → value, plus ``config``) with the environment and the file.

    Keys of ``flags`` that are not settings are ignored, so a subcommand can pass its whole namespace.
    """
    flags = {key: value for key, value in flags.items() if key in Settings.model_fields or key == "config"}
    config_path = flags.pop("config", None) or environ.get(CONFIG_ENV)
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}

    if config_path:
        for key, value in _read_file(Path(config_path)).items():
            merged[key], sources[key] = value, f"{config_path}: {key}"
    for env_key, value in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key in (CONFIG_ENV, *CLIENT_ENV):
            continue
        key = env_key.removeprefix(ENV_PREFIX).lower()
        if key not in Settings.model_fields:
            raise SettingsError(f"unknown setting {env_key} (known: {', '.join(_env_names())})")
        merged[key], sources[key] = value, env_key
    for key, value in flags.items():
        merged[key], sources[key] = value, "--" + key.replace("_", "-")

    try:
        return Settings(**merged)
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            key = str(issue["loc"][0]) if issue["loc"] else ""
            problems.append(f"{sources.get(key, key or 'settings')}: {issue['msg']}")
        raise SettingsError("; ".join(problems)) from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"settings file {path} is not valid TOML: {error}") from error
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise SettingsError(
            f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(FIELD_NAMES)})"
        )
    return values


def _env_names() -> list[str]:
    return [ENV_PREFIX + name.upper() for name in FIELD_NAMES]
