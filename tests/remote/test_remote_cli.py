"""`equihome-sim remote` and `equihome-sim report simulations/ID` end to end against the real service
(in this process, on 127.0.0.1:0, with its SQLite store and job workers): the commands run in a thread
as a user's shell would run them, while the server runs on the test's event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.auth import SCOPES, issue_dev_token
from server.remote_cli import main as remote
from server.report_cli import main as report
from tests.service.conftest import LONG_PATHS, Service, small_config

Simulation = simulation_pb2.Simulation
pytestmark = pytest.mark.asyncio(loop_scope="module")  # the loop of the shared service (conftest)


def request_file(directory: Path, paths: int = 300, name: str = "small fund") -> Path:
    request = service_pb2.CreateSimulationRequest(
        simulation=Simulation(display_name=name, config=small_config(paths))
    )
    path = directory / f"create_{paths}.json"
    path.write_text(json_format.MessageToJson(request))
    return path


def connection(service: Service, *scopes: str) -> list[str]:
    token = issue_dev_token(service.data_dir, scopes or SCOPES)
    return ["--server", f"127.0.0.1:{service.app.port}", "--token", token]


async def run(command: Any, *args: str) -> int:
    return await asyncio.to_thread(command, list(args))


async def test_create_watch_report_list_get_and_cancel(service: Service, tmp_path: Path, capsys: Any) -> None:
    flags = connection(service)
    report_path = tmp_path / "watched.html"
    assert await run(remote, "create", str(request_file(tmp_path)), "--report", str(report_path), *flags) == 0
    out = capsys.readouterr().out
    name = out.split("created ", 1)[1].split(" ", 1)[0]
    assert "SUCCEEDED" in out and "LP net IRR (mean, 95% CI)" in out and "300/300 paths" in out
    assert f"report written to {report_path}" in out
    assert report_path.stat().st_size > 1_000_000

    assert await run(remote, "list", "--state", "succeeded", *flags) == 0
    assert name in capsys.readouterr().out

    assert await run(remote, "get", name.removeprefix("simulations/"), "--json", *flags) == 0
    saved = tmp_path / "get.json"
    saved.write_text(capsys.readouterr().out)
    fetched = json_format.Parse(saved.read_text(), service_pb2.GetSimulationResponse()).simulation
    assert fetched.name == name and fetched.state == Simulation.STATE_SUCCEEDED
    assert await run(report, str(saved), "-o", str(tmp_path / "from_file.html")) == 0
    assert await run(report, name, "-o", str(tmp_path / "from_server.html"), *flags) == 0
    assert "10 charts" in capsys.readouterr().out

    long_job = request_file(tmp_path, paths=LONG_PATHS)
    assert await run(remote, "create", str(long_job), *flags) == 0
    long_name = capsys.readouterr().out.split("created ", 1)[1].split(" ", 1)[0]
    assert await run(remote, "cancel", long_name, *flags) == 0
    assert "is CANCELLED" in capsys.readouterr().out
    assert await run(remote, "watch", long_name, *flags) == 1  # it ended, but did not succeed
    assert "CANCELLED: Simulation" in capsys.readouterr().out
    assert await run(remote, "cancel", name, *flags) == 1  # a finished job cannot be cancelled
    assert "FAILED_PRECONDITION (RUN_STATE_CONFLICT)" in capsys.readouterr().err


async def test_a_create_retried_by_hand_with_its_request_id_returns_the_same_job(
    service: Service, tmp_path: Path, capsys: Any
) -> None:
    flags = [*connection(service), "--request-id", "0c5b3a52-9d7e-4b58-9a53-2f6a7b1c9d11"]
    names = []
    for _ in range(2):
        assert await run(remote, "create", str(request_file(tmp_path)), *flags) == 0
        names.append(capsys.readouterr().out.split("created ", 1)[1].split(" ", 1)[0])
    assert names[0] == names[1]


async def test_the_token_comes_from_the_environment(
    service: Service, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, token = connection(service)[:2], connection(service)[3]
    monkeypatch.setenv("EQUIHOME_TOKEN", token)
    assert await run(remote, "list", *server) == 0
    monkeypatch.delenv("EQUIHOME_TOKEN")
    assert await run(remote, "list", *server) == 1
    error = capsys.readouterr().err
    assert "UNAUTHENTICATED (TOKEN_MISSING)" in error and "EQUIHOME_TOKEN" in error


async def test_refusals_are_explained(service: Service, tmp_path: Path, capsys: Any) -> None:
    read_only = connection(service, "simulation:read")
    assert await run(remote, "create", str(request_file(tmp_path)), *read_only) == 1
    assert "The token lacks the scope simulation:write" in capsys.readouterr().err

    bad = service_pb2.CreateSimulationRequest(simulation=Simulation(config=small_config()))
    bad.simulation.config.fees.management_fee_rate = 0.5
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json_format.MessageToJson(bad))
    assert await run(remote, "create", str(bad_file), *connection(service)) == 1
    assert "simulation.config.fees.management_fee_rate:" in capsys.readouterr().err

    engine_format = tmp_path / "engine.json"
    engine_format.write_text(json.dumps({"fees": {"origination_fee_recipient": "gp"}}))
    assert await run(remote, "create", str(engine_format), *connection(service)) == 2
    assert "is not a CreateSimulationRequest in protobuf JSON" in capsys.readouterr().err

    assert (
        await run(remote, "get", "simulations/4b8e0a40-1c35-4f0e-b0a4-6c7d9e2f1a33", *connection(service))
        == 1
    )
    assert "NOT_FOUND (SIMULATION_NOT_FOUND)" in capsys.readouterr().err


async def test_an_absent_server_is_named(tmp_path: Path, capsys: Any) -> None:
    assert await run(remote, "list", "--server", "127.0.0.1:9", "--timeout", "10") == 1
    assert "Cannot reach the server at 127.0.0.1:9" in capsys.readouterr().err
