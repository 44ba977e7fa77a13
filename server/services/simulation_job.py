"""The worker side of a simulation job, run by the ``JobRunner`` in a spawned process.

It lives apart from the servicer so a worker imports only the engine and the result mapping. The result
is serialised in the worker, which keeps that CPU work off the server's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.workers import JobCancelled, JobReporter
from server.mapping.result import result_to_proto
from simulation import engine
from simulation.config import load_config


@dataclass(frozen=True)
class SimulationJob:
    config: dict[str, Any]  # the effective engine config (``model_dump(mode="json")``), already validated
    keep_paths: bool  # keep per-path values for the FULL view


def run_simulation(job: SimulationJob, reporter: JobReporter) -> bytes:
    """Run the engine, reporting paths done after each chunk; returns the serialised proto result."""
    config = load_config(job.config)

    def report(progress: engine.Progress) -> None:
        reporter.progress(progress.paths_done, progress.paths_total)

    try:
        result = engine.run(config, progress=report, cancelled=reporter.cancelled, keep_paths=job.keep_paths)
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    return result_to_proto(result, config).SerializeToString()
