"""The worker side of an impact analysis, run by the ``JobRunner`` in a spawned worker process.

Each worker keeps the base of its latest fund (``simulation.impact.Base``: market paths and per-path flows of
the fund without the loan), keyed by the effective engine config, which holds the book snapshot, the config
and the seed. The next application against the same fund on that worker takes the fast path at once. One base
is kept per worker: it is the largest thing a worker holds (about the memory of the whole run in flight).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from server.mapping.impact import ImpactRequest, analysis_to_proto
from server.services.simulation_job import chunk_threads
from server.workers import JobCancelled, JobReporter, keep_between_jobs
from simulation import engine
from simulation.config import load_config
from simulation.impact import Base, analyze, build_base

_base: tuple[str, Base] | None = None  # (config key, base) of this worker's latest fund


@dataclass(frozen=True)
class ImpactJob:
    config: dict[str, Any]  # the effective engine config (``model_dump(mode="json")``), already admitted
    request: ImpactRequest
    analysis_id: str
    portfolio_id: str


def config_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def drop_cached_base() -> None:
    global _base
    _base = None


def cached_base(config: dict[str, Any], reporter: JobReporter) -> Base:
    global _base
    key = config_key(config)
    if _base is None or _base[0] != key:
        _base = None  # free the old base before building the next
        try:
            _base = (key, build_base(load_config(config), cancelled=reporter.cancelled))
        except engine.Cancelled as stop:
            raise JobCancelled(str(stop)) from None
    return _base[1]


def run_impact(job: ImpactJob, reporter: JobReporter) -> bytes:
    """Analyse the application; returns the serialised ``ImpactAnalysis``."""
    reporter.progress(0, 2)
    base = cached_base(job.config, reporter)
    reporter.progress(1, 2)
    r = job.request
    try:
        result = analyze(
            base,
            r.loan,
            r.policy,
            r.applicant,
            exact=r.exact,
            compare=r.compare,
            executor=chunk_threads(),
            cancelled=reporter.cancelled,
        )
    except engine.Cancelled as stop:
        raise JobCancelled(str(stop)) from None
    reporter.progress(2, 2)
    return analysis_to_proto(
        result, analysis_id=job.analysis_id, portfolio_id=job.portfolio_id
    ).SerializeToString()


keep_between_jobs(run_impact, drop_cached_base)  # another kind of job gets the worker's whole memory
