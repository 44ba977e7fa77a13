"""A stored run → the ``Simulation`` resource, in one of the ``SimulationView``s.

A run is stored as a ``RunRecord`` whose ``config`` bytes hold its *spec*: the ``Simulation`` fields fixed at
creation (display name, portfolio, config as sent, effective config, seed, engine version and the
progress totals). State, times and progress come from the record (or, while the run is active in this
process, from its live progress); ``result`` holds the serialised ``SimulationResult`` and ``error`` the
``google.rpc.Status`` of a FAILED run. CANCELLED and INTERRUPTED errors are fixed, so they are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2
from server import errors
from server.mapping.config import engine_to_config
from server.mapping.result import seconds_to_duration
from server.store import RUN_RETENTION, RunRecord, RunState
from simulation import ENGINE_VERSION, engine
from simulation.config import SimulationConfig

Simulation = simulation_pb2.Simulation
View = simulation_pb2.SimulationView

FULL_VIEW_MAX_PATHS = 25_000
RUN_PARALLELISM = 2  # a job's chunks run on this many threads of its worker process (one core each when free)

STATES: dict[RunState, Simulation.State.ValueType] = {
    RunState.PENDING: Simulation.STATE_PENDING,
    RunState.RUNNING: Simulation.STATE_RUNNING,
    RunState.SUCCEEDED: Simulation.STATE_SUCCEEDED,
    RunState.FAILED: Simulation.STATE_FAILED,
    RunState.CANCELLED: Simulation.STATE_CANCELLED,
    RunState.INTERRUPTED: Simulation.STATE_INTERRUPTED,
}
RUN_STATES: dict[Simulation.State.ValueType, RunState] = {number: state for state, number in STATES.items()}


@dataclass(frozen=True)
class LiveProgress:
    """Where an active run is, fresher than its record: PENDING or RUNNING, and the paths done."""

    state: RunState
    paths_done: int


class SimulationInterrupted(errors.ServiceError):
    code = grpc.StatusCode.ABORTED
    default_reason = "SIMULATION_INTERRUPTED"


def simulation_spec(
    *, display_name: str, portfolio_id: str, config_sent: simulation_config_pb2.SimulationConfig,
    config: SimulationConfig, book_snapshot: simulation_pb2.BookSnapshot | None = None,
) -> Simulation:
    """What is fixed when a run is accepted; stored as the record's ``config`` bytes. Explicit loans sent
    in ``config_sent`` are not repeated in the effective config (no reply carries a book twice); a live
    book, which the caller did not send, is there once."""
    effective = engine_to_config(config)
    if config_sent.book.loans and book_snapshot is None:
        del effective.book.loans[:]
    return Simulation(
        display_name=display_name,
        portfolio_id=portfolio_id,
        config=config_sent,
        effective_config=effective,
        seed=config.monte_carlo.seed,
        engine_version=ENGINE_VERSION,
        progress=simulation_pb2.SimulationProgress(
            paths_total=engine.path_count(config), chunks_total=len(engine.chunks(config, RUN_PARALLELISM))
        ),
        book_snapshot=book_snapshot,
    )


def check_view(spec: Simulation, view: View.ValueType) -> None:
    """FULL carries every path; refuse it where the message would outgrow the size limit."""
    paths = spec.progress.paths_total
    if view == simulation_pb2.SIMULATION_VIEW_FULL and paths > FULL_VIEW_MAX_PATHS:
        raise errors.FailedPrecondition(
            f"The FULL view is available for runs of at most {FULL_VIEW_MAX_PATHS} paths; this run has "
            f"{paths}. Use SUMMARY.",
            reason="RESULT_TOO_LARGE",
            metadata={"paths": str(paths), "max_paths": str(FULL_VIEW_MAX_PATHS)},
        )


def simulation_view(
    record: RunRecord,
    view: View.ValueType,
    *,
    spec: Simulation | None = None,
    live: LiveProgress | None = None,
    now: datetime | None = None,
) -> Simulation:
    """The run in ``view`` (BASIC, SUMMARY or FULL; resolve UNSPECIFIED first). ``spec`` saves a parse."""
    spec = spec if spec is not None else Simulation.FromString(record.config)
    check_view(spec, view)
    state = live.state if live is not None else record.state
    paths_done = live.paths_done if live is not None else record.progress_done
    message = Simulation()
    message.CopyFrom(spec)
    message.name = record.name
    message.owner = record.owner
    message.state = STATES[state]
    message.create_time.CopyFrom(_timestamp(record.create_time))
    if record.start_time is not None:
        message.start_time.CopyFrom(_timestamp(record.start_time))
    if state.terminal and record.end_time is not None:
        message.end_time.CopyFrom(_timestamp(record.end_time))
        message.expire_time.CopyFrom(_timestamp(record.end_time + RUN_RETENTION))
    message.progress.CopyFrom(
        progress(spec, paths_done, state=state, start=record.start_time, end=record.end_time, now=now)
    )
    error = run_error(record)
    if error is not None:
        message.error.CopyFrom(error)
    if view == simulation_pb2.SIMULATION_VIEW_BASIC:
        message.ClearField("config")
        message.ClearField("effective_config")
    elif state is RunState.SUCCEEDED and record.result is not None:
        message.result.ParseFromString(record.result)
        if view != simulation_pb2.SIMULATION_VIEW_FULL:
            message.result.ClearField("path_detail")
    return message


def progress(
    spec: Simulation,
    paths_done: int,
    *,
    state: RunState,
    start: datetime | None,
    end: datetime | None,
    now: datetime | None = None,
) -> simulation_pb2.SimulationProgress:
    total, chunks_total = spec.progress.paths_total, spec.progress.chunks_total
    elapsed = 0.0
    if start is not None:
        finish = end if state.terminal and end is not None else (now or datetime.now(UTC))
        elapsed = max((finish - start).total_seconds(), 0.0)
    message = simulation_pb2.SimulationProgress(
        paths_completed=paths_done,
        paths_total=total,
        chunks_completed=chunks_done(spec, paths_done),
        chunks_total=chunks_total,
        elapsed=seconds_to_duration(elapsed),
        fraction_complete=paths_done / total if total else 0.0,
    )
    if not state.terminal and elapsed > 0 and 0 < paths_done < total:
        message.estimated_remaining.CopyFrom(seconds_to_duration(elapsed * (total - paths_done) / paths_done))
    return message


def chunks_done(spec: Simulation, paths_done: int) -> int:
    """Whole chunks in ``paths_done``: the chunks of the engine's plan finish in order, so count the plan's
    prefixes that ``paths_done`` covers."""
    mc = spec.effective_config.monte_carlo
    plan = engine.chunk_plan(spec.progress.paths_total, mc.chunk_paths, RUN_PARALLELISM)
    return int(np.searchsorted(np.cumsum([n for _, n in plan]), paths_done, side="right"))


def sequence(simulation: Simulation) -> int:
    """The position of a snapshot in the run's history, derived from its state so it holds across
    reconnects and restarts: PENDING 1, RUNNING 2 + chunks done, terminal 3 + chunks in the run."""
    if simulation.state == Simulation.STATE_PENDING:
        return 1
    if simulation.state == Simulation.STATE_RUNNING:
        return 2 + simulation.progress.chunks_completed
    return 3 + simulation.progress.chunks_total


def run_error(record: RunRecord) -> status_pb2.Status | None:
    """Why the run did not succeed: stored for FAILED, fixed for CANCELLED and INTERRUPTED."""
    metadata = {"name": record.name}
    if record.state is RunState.FAILED and record.error is not None:
        return status_pb2.Status.FromString(record.error)
    if record.state is RunState.CANCELLED:
        return errors.to_status(
            errors.Cancelled(
                f"Simulation {record.name} was cancelled.", reason="SIMULATION_CANCELLED", metadata=metadata
            )
        )
    if record.state is RunState.INTERRUPTED:
        return errors.to_status(
            SimulationInterrupted(
                f"The server stopped while simulation {record.name} was pending or running; create it "
                "again (the same config and seed give the same result).",
                metadata=metadata,
            )
        )
    return None


def simulation_failed(name: str = "") -> errors.ServiceError:
    """The error of a run the engine failed on; the cause is in the server log, never in the status."""
    return errors.ServiceError(
        "The simulation engine failed; the server log has the details.",
        reason="SIMULATION_FAILED",
        metadata={"name": name} if name else None,
    )


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
