"""``run_optimization``, the picklable job the runner (and a generic job resource) runs: bytes in, bytes out,
progress between chunks and frontier points, a cancel that lands, and the admission of its cost."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from equihome.optimization.v1 import allocation_pb2
from equihome.optimization.v1 import optimization_service_pb2 as pb
from server.admission import RunLimits
from server.errors import InvalidArgument
from server.services.optimization_job import estimate_cost, job_payload, run_optimization
from server.workers import JobCancelled
from simulation.config import load_config
from tests.service.conftest import SMALL_FUND


class Reporter:
    def __init__(self, cancel_after: int | None = None):
        self.updates: list[tuple[int, int]] = []
        self.cancel_after = cancel_after

    def progress(self, done: int, total: int, **info: Any) -> None:
        self.updates.append((done, total))

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.updates) >= self.cancel_after

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled("cancelled")


def small_config(paths: int = 100):
    data = copy.deepcopy(SMALL_FUND)
    data["monte_carlo"] = {"paths": paths, "chunk_paths": 100}
    return load_config(data)


def test_the_job_answers_a_serialised_response_and_reports_all_its_work() -> None:
    request = pb.OptimizeAllocationRequest(frontier_points=5)
    payload = job_payload(request, small_config())
    assert pickle.loads(pickle.dumps(run_optimization)) is run_optimization
    reporter = Reporter()
    answer = pb.OptimizeAllocationResponse.FromString(run_optimization(payload, reporter))
    assert len(answer.optimization.frontier) == 5 and answer.optimization.paths == 100
    # 3 sub-funds and the re-simulation of 100 paths each, then 5 frontier points
    assert reporter.updates[-1] == (4 * 100 + 5, 4 * 100 + 5)
    assert all(a[0] <= b[0] for a, b in zip(reporter.updates, reporter.updates[1:]))


def test_a_cancel_lands_between_chunks() -> None:
    payload = job_payload(pb.OptimizeAllocationRequest(frontier_points=5), small_config(300))
    reporter = Reporter(cancel_after=2)
    with pytest.raises(JobCancelled):
        run_optimization(payload, reporter)
    assert reporter.updates[-1][0] < reporter.updates[-1][1]


def test_the_cost_counts_every_engine_run() -> None:
    config = small_config(200)
    plain = estimate_cost(pb.OptimizeAllocationRequest(), config, RunLimits(8 << 30, 1e12))
    more = estimate_cost(
        pb.OptimizeAllocationRequest(resimulate_key_points=True), config, RunLimits(8 << 30, 1e12)
    )
    assert more.work == pytest.approx(plain.work * 7 / 4)  # 3 sub-funds + 1 re-simulation, then 3 more
    with pytest.raises(InvalidArgument) as refused:
        estimate_cost(pb.OptimizeAllocationRequest(), config, RunLimits(8 << 30, plain.work / 2))
    assert refused.value.reason == "RUN_TOO_COSTLY"


def test_an_optimisation_without_a_sharpe_maximum_leaves_it_unset() -> None:
    config = small_config().model_copy(
        update={"reporting": small_config().reporting.model_copy(update={"risk_free_rate": 0.5})}
    )
    request = pb.OptimizeAllocationRequest(objective=allocation_pb2.OBJECTIVE_MIN_VARIANCE, frontier_points=3)
    answer = pb.OptimizeAllocationResponse.FromString(
        run_optimization(job_payload(request, config), Reporter())
    )
    assert not answer.optimization.HasField("max_sharpe") and answer.optimization.HasField("recommended")
