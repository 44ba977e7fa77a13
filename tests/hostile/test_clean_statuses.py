"""Finding "smaller": malformed messages, huge names in errors, NaN thresholds, missing REQUIRED fields, failed
replies counted as OK, no process metrics, and a traceback when a port is taken."""

from __future__ import annotations

import asyncio
import math
import subprocess
import urllib.request
from pathlib import Path

import grpc

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.errors import unpack
from tests.hostile.conftest import EQUIHOME_SIM, HOSTILE_SETTINGS, Callers, ServerProcess, running_server
from tests.service.conftest import refusal, small_config

GET = "/equihome.simulation.v1.SimulationService/GetSimulation"
CREATE = "/equihome.simulation.v1.SimulationService/CreateSimulation"


def fields(details) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert details.bad_request is not None
    return {violation.field: violation.description for violation in details.bad_request.field_violations}


async def failure(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    """The error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


async def test_invalid_utf8_and_truncated_messages_are_invalid_argument(
    server: ServerProcess, callers: Callers
) -> None:
    """Finding: invalid UTF-8 or a truncated message gives UNKNOWN."""
    not_utf8 = b"\x0a\x04\xff\xfe\xfd\xfc"  # field 1 (name), 4 bytes that are not UTF-8
    whole = service_pb2.CreateSimulationRequest(simulation=simulation_pb2.Simulation(config=small_config()))
    truncated = whole.SerializeToString()[:-3]

    for method, payload in ((GET, not_utf8), (CREATE, truncated)):
        call = callers.channel.unary_unary(method)  # no serializer: the bytes go out as they are
        details = unpack(await failure(call(payload, metadata=server.token("mallory"), timeout=10)))
        assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED"), method


async def test_a_huge_name_is_not_echoed_into_the_error(server: ServerProcess, callers: Callers) -> None:
    """Finding: a 100 KB name is echoed into error metadata (a 7 MB name made a 7 MB trailer)."""
    for size in (100_000, 7_000_000):
        request = service_pb2.GetSimulationRequest(name="simulations/" + "x" * size)
        error = await failure(callers.simulations.GetSimulation(request, metadata=server.token("mallory"), timeout=30))
        details = unpack(error)
        trailer = sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())

        assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
        assert fields(details) == {"name": "at most 128 characters"}
        assert trailer + len(error.details() or "") < 4096, trailer


async def test_a_nan_tier_threshold_is_refused_with_its_field(server: ServerProcess, callers: Callers) -> None:
    """Finding: a NaN tiered threshold is accepted."""
    config = small_config(loans={"appreciation_share_method": "SHARE_METHOD_TIERED"})
    config.loans.tiered.thresholds.extend([math.nan, 0.5, 1.0])
    config.loans.tiered.shares.extend([0.1, 0.2, 0.3, 0.4])

    details = await refusal(callers.simulations.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=simulation_pb2.Simulation(config=config)),
        metadata=server.token("mallory"), timeout=10,
    ))  # fmt: skip

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(details) == {"simulation.config.loans.tiered.thresholds[0]": "must be a finite number"}


async def test_a_create_without_its_required_simulation_starts_nothing(
    server: ServerProcess, callers: Callers
) -> None:
    """Finding: CreateSimulation {} (REQUIRED field missing) starts a default job."""
    metadata = server.token("careless")
    details = await refusal(
        callers.simulations.CreateSimulation(service_pb2.CreateSimulationRequest(), metadata=metadata, timeout=10)
    )
    listed = await callers.simulations.ListSimulations(service_pb2.ListSimulationsRequest(), metadata=metadata)

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert fields(details) == {"simulation": "required"}
    assert list(listed.simulations) == []


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


async def scrape_once_counted(port: int) -> str:
    """The metrics, once the call just answered is counted (the server counts it just after it answers)."""
    for _ in range(50):
        body = await asyncio.to_thread(scrape, port)
        if sample(body, "equihome_grpc_server_handled_total{") > 0:
            return body
        await asyncio.sleep(0.1)
    return body


def sample(body: str, prefix: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix)]
    return sum(values)


async def test_a_reply_too_large_to_send_is_counted_as_a_failure_and_processes_are_measured(tmp_path: Path) -> None:
    """Finding: a call whose reply failed is logged and counted as OK; no process CPU/RSS in the metrics."""
    settings = HOSTILE_SETTINGS | {"max_message_bytes": str(1024 * 1024), "metrics_port": "0"}
    with running_server(tmp_path, settings) as server:
        assert server.metrics_port
        async with grpc.aio.insecure_channel(server.address) as channel:
            from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub

            stub = SimulationServiceStub(channel)
            request = service_pb2.RunSimulationRequest(
                config=small_config(paths=8000, chunk_paths=1000), view=simulation_pb2.SIMULATION_VIEW_FULL
            )  # 8,000 paths x 18 metrics x 8 bytes of path detail: more than the 1 MiB reply limit
            details = await refusal(stub.RunSimulation(request, metadata=server.token("big"), timeout=120))
            body = await scrape_once_counted(server.metrics_port)

    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE")
    run = 'method="/equihome.simulation.v1.SimulationService/RunSimulation"'
    assert sample(body, f'equihome_grpc_server_handled_total{{code="RESOURCE_EXHAUSTED",{run}}}') == 1
    assert sample(body, f'equihome_grpc_server_handled_total{{code="OK",{run}}}') == 0
    assert sample(body, "process_resident_memory_bytes") > 0
    assert sample(body, "process_cpu_seconds_total") > 0
    assert sample(body, "equihome_worker_resident_memory_bytes") > 0  # the worker that ran it
    assert sample(body, "equihome_worker_cpu_seconds_total") > 0


def test_a_second_server_on_taken_ports_says_so_in_one_line(server: ServerProcess, tmp_path: Path) -> None:
    """Finding: a second server on the same machine dies with a traceback because the metrics port is taken."""
    metrics_port = server.metrics_port or 9464
    attempts = {
        "metrics port": ["--port", "0", "--metrics-port", str(metrics_port), "--data-dir", str(tmp_path / "a")],
        "gRPC port": ["--port", str(server.port), "--no-metrics-enabled", "--data-dir", str(tmp_path / "b")],
        "data dir": ["--port", "0", "--no-metrics-enabled", "--data-dir", str(server.data_dir)],
    }
    for what, arguments in attempts.items():
        second = subprocess.run([str(EQUIHOME_SIM), "serve", *arguments], capture_output=True, text=True, timeout=60)
        errors = [line for line in second.stderr.splitlines() if line.startswith("equihome-sim serve:")]

        assert second.returncode == 1, (what, second.stderr[-2000:])
        assert "Traceback" not in second.stderr, what
        assert len(errors) == 1, (what, second.stderr[-2000:])
