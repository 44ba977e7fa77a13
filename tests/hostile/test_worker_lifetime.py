"""Finding: ``kill -9`` of the server left its workers running, reparented to PID 1, at 100 % CPU and then
hung holding 1 GB each, forever. Workers must end within seconds of their server, whatever killed it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import psutil
import pytest

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from tests.hostile.conftest import HOSTILE_SETTINGS, LONG_PATHS, ServerProcess, running_server
from tests.service.conftest import small_config

WAIT_S = 10.0  # "within seconds", with room for a loaded machine
START_WAIT_S = 60.0  # for the run to get going on a loaded machine: an upper bound, never an assertion


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for PID 1 to reap it
    except psutil.NoSuchProcess:
        return True


async def running_workers(
    stub: SimulationServiceStub, metadata: object, server: ServerProcess
) -> list[psutil.Process]:
    """Start a long run and return the worker processes once it is running."""
    simulation = simulation_pb2.Simulation(config=small_config(paths=LONG_PATHS, chunk_paths=1000))
    created = await stub.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=simulation), metadata=metadata, timeout=30
    )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        got = await stub.GetSimulation(
            service_pb2.GetSimulationRequest(name=created.simulation.name), metadata=metadata, timeout=10
        )
        if got.simulation.progress.paths_completed > 0 and server.workers():
            return server.workers()
        await asyncio.sleep(0.2)
    raise AssertionError("the run never started")


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
async def test_workers_die_with_their_server(tmp_path: Path, signal_number: int) -> None:
    with running_server(tmp_path, HOSTILE_SETTINGS | {"max_concurrent_runs": "2"}) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            await running_workers(SimulationServiceStub(channel), server.token("alice"), server)
        workers = server.peak.tree()[1:]  # every descendant: the workers and multiprocessing's helpers
        os.kill(server.process.pid, signal_number)
        server.process.wait(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not all(gone(worker) for worker in workers):
            await asyncio.sleep(0.1)
        survivors = [worker.pid for worker in workers if not gone(worker)]
        for pid in survivors:  # never leave them behind, even when the test fails
            psutil.Process(pid).kill()

    assert survivors == []
