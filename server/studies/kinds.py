"""The registry of study kinds: what each reads from ``StudySpec``, how it is admitted and costed, which
job runs it, and the message it returns in ``StudyResult``.

A kind is served once it has ``admit`` and ``run``; until then a study of that kind is refused with
UNIMPLEMENTED (``metadata.field`` = ``study.spec.<kind>``). The allocation optimiser plugs in with one entry,
from ``server/services/optimization_job.py``::

    def admit_optimization(request, path, limits):
        config = admit(request.base_config, f"{path}.base_config", limits)
        estimate_cost(request, config, limits)  # refuses RUN_TOO_COSTLY
        runs = simulation_runs(config, optimizer_request(request, config))
        return Admitted(job_payload(request, config), runs, engine.path_count(config))

    StudyKind("optimization", OptimizeAllocationResponse, admit_optimization, run_optimization)

(a request naming a ``portfolio_id`` needs its live book, which OptimizationService resolves before
admission; the study service would need the same ``LiveBooks`` step for those).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from equihome.optimization.v1 import optimization_service_pb2 as optimization_pb
from equihome.study.v1 import study_pb2 as pb
from server.admission import RunLimits, admit
from server.errors import InvalidArgument
from server.mapping.simulation import RUN_PARALLELISM
from server.mapping.study import sensitivity_job, stress_job
from server.studies.jobs import run_sensitivity, run_stress_test
from server.workers import JobReporter
from simulation import cost, engine
from simulation.config import SimulationConfig


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


@dataclass(frozen=True)
class StudyKind:
    name: str  # the StudySpec / StudyResult oneof field
    result_message: type[Message]
    admit: Admit | None = None
    run: Run | None = None

    @property
    def served(self) -> bool:
        return self.admit is not None and self.run is not None


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


KINDS: dict[str, StudyKind] = {kind.name: kind for kind in (
    StudyKind("stress_test", pb.StressTestResult, admit_stress_test, run_stress_test),
    StudyKind("sensitivity", pb.SensitivityResult, admit_sensitivity, run_sensitivity),
    StudyKind("optimization", optimization_pb.OptimizeAllocationResponse),  # plugged in by the optimiser
)}
