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

WAIT_S = 60.0  # upper bound for a wait on a loaded machine, never an assertion on speed


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


class WorkerCpu:
    """CPU seconds the server's workers use from now on (a worker that exits keeps its last reading; one
    started later, e.g. to replace a killed one, is not counted). CPU time, not wall time: a busy machine
    slows everything down, but a worker that stops computing uses no more of it."""

    def __init__(self, server: ServerProcess):
        self._workers = server.workers()
        self._start = {worker.pid: self._cpu(worker) or 0.0 for worker in self._workers}
        self._last = dict(self._start)

    @staticmethod
    def _cpu(worker: psutil.Process) -> float | None:
        try:
            times = worker.cpu_times()
        except psutil.Error:
            return None  # exited
        return times.user + times.system

    def used(self) -> float:
        for worker in self._workers:
            now = self._cpu(worker)
            if now is not None:
                self._last[worker.pid] = now
        return sum(self._last[pid] - self._start[pid] for pid in self._start)

    async def until_used(self, seconds: float) -> None:
        await self._until(lambda used, _: used >= seconds, f"the workers never used {seconds} s of CPU")

    async def until_idle(self) -> None:
        """Until no CPU is used for a second (a worker that is gone uses none)."""
        await self._until(lambda _, lately: lately < 0.02, "the workers kept computing")

    async def _until(self, condition, failure: str) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        before = self.used()
        while time.monotonic() - started < WAIT_S:
            await asyncio.sleep(1.0)
            now = self.used()
            if condition(now, now - before):
                return
            before = now
        raise AssertionError(failure)


async def warm_and_idle(server: ServerProcess) -> None:
    """Until the server has a worker and its workers use no CPU: started and warmed up."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT_S:
        if server.workers():
            await WorkerCpu(server).until_idle()
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the server has no worker")


# 1,280 loans over 30 years, recycled about 12 times: seconds of CPU per chunk of a few hundred paths,
# within the memory of one test worker (and of the whole tree, on a server that does not cap it).
SLOW_CHUNKS = {
    "fund": {"size": 4e8, "deployment_target_fraction": 0.8, "term_years": 30, "reinvestment_period_years": 29,
             "min_remaining_term_to_reinvest_years": 0.5},
    "loans": {"term_months": 360},
    "market": {"avg_exit_year": 2.0, "min_hold_years": 0.5},
}  # fmt: skip
# At most 0.5 s of the job's two chunk threads between a cancel and the kill of their worker; on a server
# that only stops between chunks, the chunks under way (about 3 CPU-seconds each here) run to their end.
LEFT_OVER_CPU_S = 1.0


async def test_a_run_stops_when_its_caller_is_gone(server: ServerProcess, callers: Callers) -> None:
    """A run whose chunks take seconds stops within about a second of its deadline passing, and of its caller
    hanging up: the CPU its worker uses after the caller left is measured, not the wall clock."""
    config = small_config(paths=700, chunk_paths=1000, **SLOW_CHUNKS)
    request = service_pb2.RunSimulationRequest(config=config)
    metadata = server.token("impatient")

    await warm_and_idle(server)
    expired = await refusal(callers.simulations.RunSimulation(request, metadata=metadata, timeout=0.8))
    after_deadline = WorkerCpu(server)
    await after_deadline.until_idle()
    left_after_deadline = after_deadline.used()

    await warm_and_idle(server)  # the worker that replaced a killed one has warmed up
    running = WorkerCpu(server)
    hung_up = callers.simulations.RunSimulation(request, metadata=metadata)
    await running.until_used(0.3)
    after_hang_up = WorkerCpu(server)
    hung_up.cancel()
    await after_hang_up.until_idle()
    left_after_hang_up = after_hang_up.used()

    assert expired.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert left_after_deadline < LEFT_OVER_CPU_S, left_after_deadline
    assert left_after_hang_up < LEFT_OVER_CPU_S, left_after_hang_up
