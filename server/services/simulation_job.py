"""The worker side of a simulation job, run by the ``JobRunner`` in a spawned process.

It lives apart from the servicer so a worker imports only the engine and the result mapping. The result
is serialised in the worker, which keeps that CPU work off the server's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.workers import JobCancelled, JobReporter
from server.mapping.result import result_to_proto
from server.mapping.simulation import RUN_PARALLELISM
from simulation import engine, executors
from simulation.config import load_config

_threads: executors.ThreadPool | None = None


def chunk_threads() -> executors.ThreadPool:
    """This worker's threads for the chunks of its job: a lone job uses every core, two jobs share them."""
    global _threads
    if _threads is None:
        _threads = executors.ThreadPool(RUN_PARALLELISM)
    return _threads


@dataclass(frozen=True)
class SimulationJob:
    config: dict[str, Any]  # the effective engine config (``model_dump(mode="json")``), already validated
    keep_paths: bool  # keep per-path values for the FULL view


def warm_up() -> None:
    """A worker's start-up: a one-path run and its mapping load every module and compiled kernel."""
    config = load_config({"monte_carlo": {"paths": 1}})
    result_to_proto(engine.run(config), config)


def run_simulation(job: SimulationJob, reporter: JobReporter) -> bytes:
    """Run the engine, reporting paths done after each chunk; returns the serialised proto result."""
    config = load_config(job.config)

    def report(progress: engine.Progress) -> None:
        reporter.progress(progress.paths_done, progress.paths_total)

    try:
        result = engine.run(config, progress=report, cancelled=reporter.cancelled, keep_paths=job.keep_paths,
                            executor=chunk_threads())
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    return result_to_proto(result, config).SerializeToString()
