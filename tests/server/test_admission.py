"""Admission of configs: bounds the engine leaves open, and chunks fitted to a worker's memory."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format

from equihome.simulation.v1 import simulation_config_pb2
from server import errors
from server.admission import MAX_CHUNK_PATHS, RunLimits, admit
from simulation import cost

GIB = 1024**3
ROOMY = RunLimits(worker_memory_bytes=8 * GIB, max_work=1e13)


def proto(data: dict) -> simulation_config_pb2.SimulationConfig:  # type: ignore[type-arg]
    return json_format.ParseDict(data, simulation_config_pb2.SimulationConfig())


def refusal(data: dict, limits: RunLimits = ROOMY) -> errors.InvalidArgument:  # type: ignore[type-arg]
    with pytest.raises(errors.InvalidArgument) as refused:
        admit(proto(data), "config", limits)
    return refused.value


def test_open_ended_values_are_bounded() -> None:
    config = proto({"fund": {"size": 2e12}, "book": {"regions": [{"name": "r", "weight": 1e7}]}})
    config.fees.fixed_expenses = math.inf
    config.loans.tiered.thresholds.extend([math.nan, -2.0])

    with pytest.raises(errors.InvalidArgument) as refused:
        admit(config, "simulation.config", ROOMY)

    assert refused.value.reason == "CONFIG_INVALID"
    assert dict(refused.value.field_violations) == {
        "simulation.config.fund.size": "at most 1e+12",
        "simulation.config.fees.fixed_expenses": "must be a finite number",
        "simulation.config.loans.tiered.thresholds[0]": "must be a finite number",
        "simulation.config.loans.tiered.thresholds[1]": "at least -1",
        "simulation.config.book.regions[0].weight": "at most 1e+06",
    }


def test_a_run_is_served_in_chunks_that_fit_the_worker() -> None:
    data = {"fund": {"size": 1e9}, "monte_carlo": {"paths": 4000, "chunk_paths": 5000, "workers": 8}}
    tight = RunLimits(worker_memory_bytes=cost.WORKER_BASE_BYTES + 400 * 2**20, max_work=1e13)

    roomy = admit(proto(data), "config", ROOMY)
    fitted = admit(proto(data), "config", tight)

    assert (roomy.monte_carlo.chunk_paths, roomy.monte_carlo.workers) == (MAX_CHUNK_PATHS, 1)
    assert fitted.monte_carlo.chunk_paths < MAX_CHUNK_PATHS
    assert cost.estimate(fitted).peak_bytes <= tight.worker_memory_bytes
    assert fitted.monte_carlo.paths == 4000 and fitted.monte_carlo.seed == roomy.monte_carlo.seed


def test_runs_too_costly_in_memory_or_work_are_refused_with_the_estimate() -> None:
    memory = refusal({"fund": {"size": 1e12}})
    work = refusal({"monte_carlo": {"paths": 1_000_000}}, RunLimits(worker_memory_bytes=64 * GIB, max_work=1e9))

    for refused in (memory, work):
        assert refused.reason == "RUN_TOO_COSTLY"
        assert {"config.monte_carlo.paths", "config.fund.size"} <= dict(refused.field_violations).keys()
    assert float(memory.metadata["estimated_bytes"]) > float(memory.metadata["max_bytes"])
    assert float(work.metadata["estimated_work"]) > float(work.metadata["max_work"]) == 1e9
    assert "CPU-minutes" in work.message and "MiB" in memory.message
