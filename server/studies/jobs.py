"""The worker side of the study kinds, run by the ``JobRunner`` in a spawned process.

Each job reports paths done over all its runs, stops between chunks when cancelled, and returns its result
message serialised (the CPU work of mapping stays off the server's event loop).
"""

from __future__ import annotations

from server.mapping.study import SensitivityJob, StressJob, sensitivity_result_to_proto, stress_result_to_proto
from server.services.simulation_job import chunk_threads
from server.workers import JobCancelled, JobReporter
from simulation import engine, scenarios, sensitivity
from simulation.config import Stress, load_config


def run_stress_test(job: StressJob, reporter: JobReporter) -> bytes:
    """The scenarios, then the grid's cells, each against one shared base run."""
    config = load_config(job.config)
    named = [scenarios.Scenario(name, Stress.model_validate(stress), description)
             for name, description, stress in job.scenarios]
    axes = None
    cells: list[scenarios.Scenario] = []
    if job.grid is not None:
        x, xs, y, ys, template = job.grid
        axes = (scenarios.GridAxis(x, xs), scenarios.GridAxis(y, ys))
        cells = [cell for row in scenarios.grid_stress(*axes, Stress.model_validate(template)) for cell in row]
    try:
        report = scenarios.stress_test(config, [*named, *cells], progress=reporter.progress,
                                       cancelled=reporter.cancelled, executor=chunk_threads())
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    return stress_result_to_proto(report, len(named), axes).SerializeToString()


def run_sensitivity(job: SensitivityJob, reporter: JobReporter) -> bytes:
    """The tornado, then Morris screening when a budget was given; progress counts both."""
    config = load_config(job.config)
    tornado_runs = 2 * len(job.parameters) + 1
    total = job.runs * engine.path_count(config)

    def after(runs_before: int):
        return lambda done, _: reporter.progress(runs_before * engine.path_count(config) + done, total)

    try:
        tornado = sensitivity.tornado(config, job.parameters, job.relative_change, job.metrics,
                                      progress=after(0), cancelled=reporter.cancelled, executor=chunk_threads())
        morris = None
        if job.morris_budget_runs:
            morris = sensitivity.morris(config, job.parameters, job.relative_change, job.morris_metric,
                                        job.morris_budget_runs, progress=after(tornado_runs),
                                        cancelled=reporter.cancelled, executor=chunk_threads())
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    return sensitivity_result_to_proto(tornado, morris).SerializeToString()
