"""The worker side of an optimisation, run by the ``JobRunner`` in a spawned process.

``run_optimization(payload, reporter)`` is the whole computation as one picklable function: the payload is
a serialised ``OptimizeAllocationRequest`` whose ``base_config`` is the resolved fund (live book included,
admitted and served), the answer a serialised ``OptimizeAllocationResponse`` whose optimisation lacks only
what the caller's service sets (id, owner, portfolio, time, deliveries). Progress is reported in units of
paths simulated plus frontier points; a cancel lands between chunks and between frontier points.
``estimate_cost`` is its admission: the work of all its engine runs.
"""

from __future__ import annotations

import dataclasses
import time

from equihome.optimization.v1 import optimization_service_pb2 as service_pb2
from server.admission import RunLimits, too_costly
from server.mapping.config import engine_to_config, load_engine_config
from server.mapping.optimization import (
    check_against_config,
    optimization_proto,
    optimizer_request,
    run_config,
)
from server.mapping.simulation import RUN_PARALLELISM
from server.services.simulation_job import chunk_threads
from server.workers import JobCancelled, JobReporter
from simulation import ENGINE_VERSION, cost, engine
from simulation.config import SimulationConfig
from simulation.optimize.spec import OptimizationError, simulation_runs


class OptimizationFailed(Exception):
    """The optimiser found no allocation (a request whose limits cannot all hold); ``reason`` is its code.
    Raised in the worker; the service maps it to FAILED_PRECONDITION."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return OptimizationFailed, (self.reason, str(self))


def job_payload(request: service_pb2.OptimizeAllocationRequest, config: SimulationConfig) -> bytes:
    """The job's input: ``request`` with ``config`` (resolved, served) as its base config, paths and seed."""
    job = service_pb2.OptimizeAllocationRequest()
    job.CopyFrom(request)
    job.base_config.CopyFrom(engine_to_config(config))
    job.ClearField("paths")
    job.ClearField("seed")
    return job.SerializeToString()


def estimate_cost(
    request: service_pb2.OptimizeAllocationRequest, config: SimulationConfig, limits: RunLimits
) -> cost.RunCost:
    """The cost of all of the optimisation's engine runs (one after another, so memory is one run's); refuses
    it (RUN_TOO_COSTLY naming ``base_config``) beyond ``limits``."""
    runs = simulation_runs(config, optimizer_request(request, config))
    one = cost.estimate(config, config.monte_carlo.chunk_paths, RUN_PARALLELISM)
    total = dataclasses.replace(one, work=one.work * runs)
    if total.work > limits.max_work or total.peak_bytes > limits.worker_memory_bytes:
        raise too_costly(total, limits, "base_config")
    return total


def run_optimization(payload: bytes, reporter: JobReporter) -> bytes:
    from simulation.optimize.run import optimize  # loads the solver: only in the worker that runs the job

    started = time.perf_counter()
    request = service_pb2.OptimizeAllocationRequest.FromString(payload)
    config = run_config(request, load_engine_config(request.base_config, "base_config"))
    check_against_config(request, config)
    try:
        outcome = optimize(
            config,
            optimizer_request(request, config),
            progress=reporter.progress,
            cancelled=reporter.cancelled,
            executor=chunk_threads(),
        )
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    except OptimizationError as failure:
        raise OptimizationFailed(failure.reason, str(failure)) from None
    optimization = optimization_proto(
        outcome, config, engine_version=ENGINE_VERSION, elapsed_seconds=time.perf_counter() - started
    )
    return service_pb2.OptimizeAllocationResponse(optimization=optimization).SerializeToString()
