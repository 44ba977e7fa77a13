"""``equihome-sim sandbox`` / ``python -m adapters.sandbox``: flags, and a real run in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from adapters.sandbox.cli import build_parser, config_from_args, main

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_the_demo_world_and_client() -> None:
    config = parse()

    assert (config.seed, config.events_per_second, config.split_ports) == (7, 1.0, False)
    assert [(client.client_id, client.client_secret) for client in config.clients] == [
        ("equihome-engine", "sandbox-secret")
    ]
    assert len(config.clients[0].scopes) == 6


def test_flags_override_a_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "sandbox.json"
    config_file.write_text(json.dumps({"seed": 11, "loan_count": 50, "faults": {"pms": {"latency_ms": 40}}}))

    config = parse("--config", str(config_file), "--seed", "3", "--client-id", "ci", "--error-rate", "0.2")

    assert (config.seed, config.loan_count) == (3, 50)
    assert config.clients[0].client_id == "ci" and config.clients[0].client_secret == "sandbox-secret"
    assert config.faults.pms.latency_ms == 40
    assert config.faults.pms.error_rate == config.faults.traffic_light.error_rate == 0.2


def test_fault_flags_apply_to_every_system_and_the_json_patch_on_top() -> None:
    faults = parse(
        "--error-rate", "0.1", "--outage", "--sign-with-wrong-key", "--faults", '{"pms": {"error_rate": 0.5}}'
    ).faults

    assert faults.traffic_light.error_rate == faults.underwriting.error_rate == 0.1
    assert faults.pms.error_rate == 0.5
    assert faults.pms.outage and faults.traffic_light.outage
    assert faults.auth.sign_with_wrong_key and not faults.auth.outage


def test_extensions_and_omissions_are_chosen_by_flag() -> None:
    config = parse("--extensions", "frame_ids, loan_links", "--omit-optional-fields", "0", "--ws-silent")

    assert config.extensions.frame_ids and config.extensions.loan_links
    assert not config.extensions.subscription_acks and config.omit_optional_fields == 0
    assert config.faults.pms.ws_silent
    assert parse().extensions == type(config.extensions)()  # all off by default
    with pytest.raises(ValueError, match="unknown extensions"):
        parse("--extensions", "telepathy")


def test_invalid_flags_exit_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--error-rate", "2"])

    assert exited.value.code == 2
    assert "error_rate" in capsys.readouterr().err


def test_the_module_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.sandbox", "--port", "0", "--events-per-second", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner = [process.stdout.readline() for _ in range(4)]
        token_url = banner[1].split()[-1]
        response = httpx.post(
            token_url, data={"grant_type": "client_credentials"}, auth=("equihome-engine", "sandbox-secret")
        )
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert banner[0].startswith("Equihome integration sandbox")
    assert token_url.endswith("/oauth/token")
    assert response.status_code == 200
    assert exit_code == 0, process.stderr.read()
