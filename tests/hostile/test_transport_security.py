"""Finding "plaintext only": no TLS option, no warning when binding beyond loopback; data/ was 0755 and the
SQLite files 0644, so every config, result and event was world-readable."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.hostile.certificates import Certificates, make_certificates
from tests.hostile.conftest import EQUIHOME_SIM, HOSTILE_SETTINGS, ServerProcess, running_server

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


async def health_check(channel: grpc.aio.Channel) -> int:
    return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)).status


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await health_check(channel)
    return failure.value.code()


def tls_settings(certificates: Certificates, *, mutual: bool) -> dict[str, str]:
    settings = {"tls_cert_file": str(certificates.server.certificate), "tls_key_file": str(certificates.server.key)}
    if mutual:
        settings["tls_client_ca_file"] = str(certificates.ca.certificate)
    return HOSTILE_SETTINGS | settings


async def test_tls_serves_only_tls(tmp_path: Path, certificates: Certificates) -> None:
    with running_server(tmp_path, tls_settings(certificates, mutual=False)) as server:
        trusted = grpc.ssl_channel_credentials(root_certificates=certificates.ca.certificate.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", trusted) as channel:
            status = await health_check(channel)
        async with grpc.aio.insecure_channel(server.address) as channel:
            plaintext = await refused(channel)

    assert status == SERVING
    assert plaintext == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path: Path, certificates: Certificates) -> None:
    with running_server(tmp_path, tls_settings(certificates, mutual=True)) as server:
        ca = certificates.ca.certificate.read_bytes()
        chain, key = certificates.client.read()
        address = f"localhost:{server.port}"
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca, key, chain)) as channel:
            with_certificate = await health_check(channel)
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)) as channel:
            without = await refused(channel)

    assert with_certificate == SERVING
    assert without == grpc.StatusCode.UNAVAILABLE


def test_plaintext_beyond_loopback_is_loudly_warned_about(tmp_path: Path) -> None:
    with running_server(tmp_path, HOSTILE_SETTINGS | {"host": "0.0.0.0"}) as server:
        warnings = [line for line in server.log_lines() if "PLAINTEXT" in line["message"]]

    assert [line["level"] for line in warnings] == ["WARNING"]


def test_loopback_plaintext_is_not_warned_about(server: ServerProcess) -> None:
    assert not [line for line in server.log_lines() if "PLAINTEXT" in line["message"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_is_private(tmp_path: Path) -> None:
    """A data directory left open by an older version is closed up at start; everything in it is 0600."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "equihome.sqlite3").touch(mode=0o644)
    with running_server(tmp_path, HOSTILE_SETTINGS) as server:
        files = [path for path in server.data_dir.rglob("*") if path.is_file()]
        directories = [server.data_dir, *(path for path in server.data_dir.rglob("*") if path.is_dir())]
        modes = {str(path.relative_to(tmp_path)): mode(path) for path in (*files, *directories)}

    names = {path.name for path in files}
    assert {"equihome.sqlite3", "equihome.sqlite3-wal", "equihome.sqlite3-shm", "page-token.key"} <= names
    assert {"dev-signing-key.jwk", "dev-jwks.json"} <= names
    assert all(modes[str(path.relative_to(tmp_path))] == 0o600 for path in files), modes
    assert all(modes[str(path.relative_to(tmp_path))] == 0o700 for path in directories), modes


def test_unusable_tls_files_are_named_in_one_line(tmp_path: Path, certificates: Certificates) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cases = {
        "cannot read TLS file": (tmp_path / "missing.pem", certificates.server.key),
        "not a PEM certificate chain": (garbage, certificates.server.key),
        "its unencrypted private key": (certificates.server.certificate, certificates.client.key),  # not its key
    }
    for expected, (certificate, key) in cases.items():
        started = subprocess.run(
            [str(EQUIHOME_SIM), "serve", "--port", "0", "--no-metrics-enabled", "--data-dir", str(tmp_path / "data"),
             "--tls-cert-file", str(certificate), "--tls-key-file", str(key)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        errors = [line for line in started.stderr.splitlines() if line.startswith("equihome-sim serve:")]

        assert started.returncode == 1, started.stderr[-2000:]
        assert len(errors) == 1 and expected in errors[0], errors
        assert "Traceback" not in started.stderr
