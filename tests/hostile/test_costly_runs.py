"""Finding "one call can take the host down": RunSimulation with ``config.fund.size = 1e12`` (or a tiny
``avg_loan_size``) passed validation, its worker grew to 15-18 GB until the OOM killer ended it, and it kept
running about 60 s after the caller got DEADLINE_EXCEEDED; ``fund.size = 1e308`` gave INTERNAL."""

from __future__ import annotations

import asyncio
import time

import grpc
import psutil

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from tests.hostile.conftest import HOSTILE_SETTINGS, Callers, ServerProcess
from tests.service.conftest import refusal, small_config

WAIT_S = 10.0  # "within a second", with room for a loaded machine


def fields(details) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert details.bad_request is not None
    return {violation.field: violation.description for violation in details.bad_request.field_violations}


HUGE_BOOKS = {
    "a trillion fund": {"fund": {"size": 1e12}},
    "one-dollar loans": {"book": {"generated": {"avg_loan_size": 1, "min_loan_size": 1}}},
}


async def test_runs_that_cannot_fit_are_refused_before_they_start(server: ServerProcess, callers: Callers) -> None:
    metadata = server.token("hungry")
    for what, sections in HUGE_BOOKS.items():
        config = small_config(paths=1000, **sections)
        unary = await refusal(callers.simulations.RunSimulation(
            service_pb2.RunSimulationRequest(config=config), metadata=metadata, timeout=60))
        job = await refusal(callers.simulations.CreateSimulation(
            service_pb2.CreateSimulationRequest(simulation=simulation_pb2.Simulation(config=config)),
            metadata=metadata, timeout=60,
        ))  # fmt: skip

        for details, path in ((unary, "config"), (job, "simulation.config")):
            assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_COSTLY"), what
            assert {f"{path}.monte_carlo.paths", f"{path}.fund.size", f"{path}.book.generated.avg_loan_size"} <= set(
                fields(details))
            metadata_ = details.error_info.metadata
            limit = int(HOSTILE_SETTINGS["worker_memory_mib"]) * 1024**2
            assert float(metadata_["estimated_bytes"]) > float(metadata_["max_bytes"]) == limit
    listed = await callers.simulations.ListSimulations(service_pb2.ListSimulationsRequest(), metadata=metadata)
    assert list(listed.simulations) == []  # nothing was stored, nothing ran


async def test_an_absurd_fund_size_is_invalid_argument(server: ServerProcess, callers: Callers) -> None:
    details = await refusal(callers.simulations.RunSimulation(
        service_pb2.RunSimulationRequest(config=small_config(fund={"size": 1e308})),
        metadata=server.token("hungry"), timeout=60,
    ))  # fmt: skip

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(details) == {"config.fund.size": "at most 1e+12"}


def worker_cpu(server: ServerProcess) -> float:
    total = 0.0
    for worker in server.workers():
        try:
            times = worker.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def until_idle(server: ServerProcess) -> None:
    """Return once no worker uses CPU any more (two samples 0.3 s apart agree); fail after ``WAIT_S``."""
    await _until(server, lambda used: used < 0.05, "the workers were still computing after the caller left")


async def until_busy(server: ServerProcess) -> None:
    await _until(server, lambda used: used > 0.1, "the run never started computing")


async def _until(server: ServerProcess, condition, failure: str) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    before = worker_cpu(server)
    while time.monotonic() - started < WAIT_S:
        await asyncio.sleep(0.3)
        now = worker_cpu(server)
        if condition(now - before):
            return
        before = now
    raise AssertionError(failure)


async def test_a_run_stops_when_its_caller_is_gone(server: ServerProcess, callers: Callers) -> None:
    """A run whose chunks take seconds (a 3,500-loan book) stops soon after its deadline passes, and after
    its caller hangs up without a deadline."""
    config = small_config(paths=2000, chunk_paths=1000, fund={"size": 1e9, "deployment_target_fraction": 0.8})
    request = service_pb2.RunSimulationRequest(config=config)
    metadata = server.token("impatient")

    expired = await refusal(callers.simulations.RunSimulation(request, metadata=metadata, timeout=2.0))
    assert expired.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await until_idle(server)

    hung_up = callers.simulations.RunSimulation(request, metadata=metadata)
    await until_busy(server)
    hung_up.cancel()
    await until_idle(server)
