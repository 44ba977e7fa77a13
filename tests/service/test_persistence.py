"""Runs outlive the process: finished ones are served after a restart, unfinished ones become INTERRUPTED;
SIGTERM drains a real ``equihome-sim serve``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from server.settings import Settings
from tests.service.conftest import LONG_PATHS, Client, refusal, running, small_config

Simulation = simulation_pb2.Simulation
FULL = simulation_pb2.SIMULATION_VIEW_FULL
EQUIHOME_SIM = Path(sys.executable).with_name("equihome-sim")


def error_reason(simulation: Simulation) -> str:
    info = error_details_pb2.ErrorInfo()
    assert simulation.error.details[0].Unpack(info)
    return info.reason


async def test_finished_runs_survive_a_restart_and_unfinished_ones_become_interrupted(
    settings: Settings,
) -> None:
    async with running(settings) as first:
        finished = await first.create(small_config())
        before = (await first.until_end(finished.name))[-1].simulation
        unfinished = await first.create(small_config(paths=LONG_PATHS))
        await first.until_progress(unfinished.name)

    async with running(settings) as second:
        after = await second.get(finished.name)
        full = await second.get(finished.name, FULL)
        interrupted = await second.get(unfinished.name)
        watched = await second.until_end(unfinished.name)
        listed = await second.list()
        cancel = await refusal(second.cancel(unfinished.name))

    assert after.state == Simulation.STATE_SUCCEEDED and after.result == before.result
    assert after.end_time == before.end_time
    assert len(full.result.path_detail.lp_net_irr) == 300
    assert interrupted.state == Simulation.STATE_INTERRUPTED
    assert interrupted.error.code == grpc.StatusCode.ABORTED.value[0]
    assert error_reason(interrupted) == "SIMULATION_INTERRUPTED"
    assert [m.simulation.state for m in watched] == [Simulation.STATE_INTERRUPTED]
    assert [s.name for s in listed.simulations] == [unfinished.name, finished.name]
    assert cancel.reason == "RUN_STATE_CONFLICT"


@contextlib.asynccontextmanager
async def serve_process(data_dir: Path, log: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``equihome-sim serve`` on a free port; yields the process and its port, killed if still alive."""
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(EQUIHOME_SIM), "serve", "--port", "0", "--data-dir", str(data_dir), "--no-metrics-enabled",
            "--grace-period-s", "5", stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            banner = (await process.stdout.readline()).decode()
            port = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", banner)
            assert port is not None, banner
            yield process, int(port.group(1))
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_sigterm_drains_a_real_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serve_process(data_dir, tmp_path / "serve.log") as (process, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(SimulationServiceStub(channel), data_dir)
            created = await client.create(small_config(paths=LONG_PATHS))
            await client.until_progress(created.name)
            health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            watch = client.watch(created.name)
            serving = (await health.read()).status
            first = await watch.read()

            process.send_signal(signal.SIGTERM)
            draining = (await health.read()).status
            while await watch.read() is not grpc.aio.EOF:
                pass
            watch_code = await watch.code()
            health.cancel()
        exit_code = await process.wait()

    assert serving == health_pb2.HealthCheckResponse.SERVING
    assert first.simulation.state == Simulation.STATE_RUNNING
    assert draining == health_pb2.HealthCheckResponse.NOT_SERVING
    assert watch_code == grpc.StatusCode.OK
    assert exit_code == 0
