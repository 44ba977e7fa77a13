"""The registry of study kinds: what each reads from ``StudySpec``, how it is admitted and costed, which
job runs it, and the message it returns in ``StudyResult``.

A kind's ``refusal`` turns what its worker raises when the request cannot be met (not a failure of the
server) into the caller's error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from equihome.optimization.v1 import optimization_service_pb2 as optimization_pb
from equihome.study.v1 import study_pb2 as pb
from server.admission import RunLimits, admit, served
from server.errors import FailedPrecondition, InvalidArgument, ServiceError
from server.mapping.optimization import check_against_config, check_request, optimizer_request, run_config
from server.mapping.simulation import RUN_PARALLELISM
from server.mapping.study import sensitivity_job, stress_job
from server.services.optimization_job import OptimizationFailed, estimate_cost, job_payload, run_optimization
from server.studies.jobs import run_sensitivity, run_stress_test
from server.workers import JobReporter
from simulation import cost, engine
from simulation.config import SimulationConfig
from simulation.optimize.spec import simulation_runs
from simulation.sensitivity import SensitivityUnanswerable


@dataclass(frozen=True)
class Admitted:
    """A spec accepted to run: the job's picklable input and how much it will simulate."""

    payload: Any
    runs: int
    paths_per_run: int

    @property
    def paths_total(self) -> int:
        return self.runs * self.paths_per_run


Admit = Callable[[Any, str, RunLimits], Admitted]  # (spec message, its request path, limits)
Run = Callable[[Any, JobReporter], bytes]  # in a worker: the result message, serialised
Refusal = Callable[[Exception], ServiceError | None]


@dataclass(frozen=True)
class StudyKind:
    name: str  # the StudySpec / StudyResult oneof field
    result_message: type[Message]
    admit: Admit
    run: Run
    refusal: Refusal | None = None


def _base(config: Any, path: str, limits: RunLimits) -> SimulationConfig:
    return admit(config, f"{path}.config", limits)


def within_budget(config: SimulationConfig, runs: int, path: str, limits: RunLimits) -> None:
    """Refuse (RUN_TOO_COSTLY) a study whose runs together exceed one run's work limit (a study is one
    job), or whose memory does: one run's peak plus the base run's per-path results, held while each
    variant runs."""
    estimate = cost.estimate(config, config.monte_carlo.chunk_paths, RUN_PARALLELISM)
    work = estimate.work * runs
    memory = estimate.peak_bytes + cost.result_bytes_per_path(config) * engine.path_count(config)
    if work <= limits.max_work and memory <= limits.worker_memory_bytes:
        return
    paths = engine.path_count(config)
    what = (f"about {work * cost.SECONDS_PER_WORK / 60:.0f} CPU-minutes, more than the {limits.max_work:.3g} work "
            "accepted for one job" if work > limits.max_work else
            f"about {memory / 2**20:,.0f} MiB, more than the {limits.worker_memory_bytes / 2**20:,.0f} MiB of a worker")
    raise InvalidArgument(
        f"This study runs {runs} simulations of {paths} paths: {what}. Run fewer paths, scenarios or parameters.",
        [(f"{path}.config.monte_carlo.paths", f"{runs} runs x {paths} paths is too much")],
        reason="RUN_TOO_COSTLY",
        metadata={"runs": str(runs), "estimated_work": f"{work:.3g}", "max_work": f"{limits.max_work:.3g}",
                  "estimated_bytes": f"{memory:.0f}", "max_bytes": str(limits.worker_memory_bytes)},
    )


def admit_stress_test(spec: pb.StressTestSpec, path: str, limits: RunLimits) -> Admitted:
    config = _base(spec.config, path, limits)
    job = stress_job(spec, config, path)
    within_budget(config, job.runs, path, limits)
    return Admitted(job, job.runs, engine.path_count(config))


def admit_sensitivity(spec: pb.SensitivitySpec, path: str, limits: RunLimits) -> Admitted:
    config = _base(spec.config, path, limits)
    job = sensitivity_job(spec, config, path)
    within_budget(config, job.runs, path, limits)
    return Admitted(job, job.runs, engine.path_count(config))


def admit_optimization(request: optimization_pb.OptimizeAllocationRequest, path: str,
                       limits: RunLimits) -> Admitted:
    """An optimisation of the fund in ``base_config``. A live book (``portfolio_id``) is optimised by
    OptimizeAllocation, which loads it; a study runs on the config it is given."""
    if request.portfolio_id:
        raise InvalidArgument(
            "A study optimises the fund of its base_config; optimise a live portfolio with OptimizeAllocation.",
            [(f"{path}.portfolio_id", "not accepted in a study; use OptimizeAllocation")],
            reason="FIELD_INVALID")
    if request.send_recommendations:
        raise InvalidArgument(
            "A study does not send recommendations; use OptimizeAllocation with send_recommendations.",
            [(f"{path}.send_recommendations", "not accepted in a study")], reason="FIELD_INVALID")
    try:
        check_request(request)
        config = served(run_config(request, admit(request.base_config, "base_config", limits)), "base_config",
                        limits)
        check_against_config(request, config)
        estimate_cost(request, config, limits)
    except InvalidArgument as refused:
        refused.field_violations = [(f"{path}.{field}", why) for field, why in refused.field_violations]
        raise
    one_run = engine.path_count(config)
    return Admitted(job_payload(request, config), _optimization_runs(request, config), one_run)


def _optimization_runs(request: optimization_pb.OptimizeAllocationRequest, config: SimulationConfig) -> int:
    return simulation_runs(config, optimizer_request(request, config))


def sensitivity_refusal(failure: Exception) -> ServiceError | None:
    if isinstance(failure, SensitivityUnanswerable):
        return FailedPrecondition(f"The sensitivity cannot be computed: {failure}.", reason="SENSITIVITY_UNANSWERABLE")
    return None


def optimization_refusal(failure: Exception) -> ServiceError | None:
    if isinstance(failure, OptimizationFailed):
        return FailedPrecondition(f"No allocation satisfies the request: {failure}.", reason=failure.reason)
    return None


KINDS: dict[str, StudyKind] = {kind.name: kind for kind in (
    StudyKind("stress_test", pb.StressTestResult, admit_stress_test, run_stress_test),
    StudyKind("sensitivity", pb.SensitivityResult, admit_sensitivity, run_sensitivity, sensitivity_refusal),
    StudyKind("optimization", optimization_pb.OptimizeAllocationResponse, admit_optimization, run_optimization,
              optimization_refusal),
)}
