"""Admission of a simulation config: sane bounds, engine validation, then the run's cost against the limits.

``admit`` turns a proto ``SimulationConfig`` into the engine config this server will run, or refuses it with
INVALID_ARGUMENT naming every offending field. In order:

1. *Bounds* the engine leaves open: the serialised config is at most ``MAX_CONFIG_BYTES``; every number is
   finite (a NaN tier threshold is refused, not run); money is at most ``MAX_MONEY``; years, months,
   weights and list lengths have the ceilings below; strings are short. (CONFIG_INVALID)
2. The engine's own validation (``simulation.config``). (CONFIG_INVALID)
3. *Cost* (``simulation.cost``): the run must fit a worker's memory limit, in chunks made as small as
   needed (results do not depend on the chunk size), and its work must not exceed ``max_run_work``.
   (RUN_TOO_COSTLY, with the estimate and the limit)

It is CPU work proportional to the book (tens of milliseconds per thousand loans), so services run it off
the event loop. The served config also runs on one worker process per job (whose ``RUN_PARALLELISM``
threads compute that many chunks at once, which the memory estimate counts): the server's pool of
workers is its parallelism.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from equihome.simulation.v1 import simulation_config_pb2 as pb
from server.errors import InvalidArgument
from server.mapping.config import load_engine_config
from server.mapping.simulation import RUN_PARALLELISM
from server.settings import Settings
from simulation import cost
from simulation.config import SimulationConfig

MIB = 1024 * 1024
MAX_CONFIG_BYTES = 4 * MIB  # a book of about 70,000 explicit loans; leaves room in an 8 MiB reply
MAX_MONEY = 1e12  # any amount in the fund currency
MAX_CONFIG_STRING_CHARS = 128
MAX_CHUNK_PATHS = 1000  # about 0.5 s of the default fund per chunk on one core: cancels land quickly
MAX_WORKERS_PER_RUN = 1  # a job is one worker process; the runner's pool size is the server's parallelism


def _field(message: type[Message], name: str) -> tuple[str, str]:
    return message.DESCRIPTOR.full_name, name


# Ceilings on values the engine bounds below only, floors where it bounds neither way, and list lengths.
MONEY_FIELDS = [
    _field(pb.FundTerms, "size"), _field(pb.Fees, "fixed_expenses"), _field(pb.Fees, "organisation_costs"),
    _field(pb.ExistingLoan, "amount"), _field(pb.ExistingLoan, "property_value"),
    *(_field(pb.GeneratedBook, name) for name in ("avg_loan_size", "loan_size_sd", "min_loan_size", "max_loan_size")),
]  # fmt: skip
CEILINGS: dict[tuple[str, str], float] = {
    **dict.fromkeys(MONEY_FIELDS, MAX_MONEY),
    _field(pb.FundTerms, "min_remaining_term_to_reinvest_years"): 30.0,
    _field(pb.StepDown, "after_year"): 30.0,
    _field(pb.CallScheduleEntry, "year"): 30.0,
    _field(pb.ExistingLoan, "origination_month"): 360,
    _field(pb.ExistingLoan, "planned_exit_month"): 720,
    _field(pb.Region, "weight"): 1e6,
    _field(pb.TieredShare, "thresholds"): 1000.0,
}
FLOORS: dict[tuple[str, str], float] = {_field(pb.TieredShare, "thresholds"): -1.0}
MAX_ITEMS: dict[tuple[str, str], int] = {
    _field(pb.Book, "loans"): 100_000,
    _field(pb.Book, "regions"): 64,
    _field(pb.FundTerms, "capital_call_schedule"): 360,
    _field(pb.TieredShare, "thresholds"): 32,
    _field(pb.TieredShare, "shares"): 33,
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


@dataclass(frozen=True)
class RunLimits:
    """What one run may cost on this server."""

    worker_memory_bytes: int
    max_work: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RunLimits:
        return cls(worker_memory_bytes=settings.worker_memory_mib * MIB, max_work=settings.max_run_work)


def admit(message: pb.SimulationConfig, request_path: str, limits: RunLimits) -> SimulationConfig:
    """The engine config to run for ``message``, served within ``limits``; ``InvalidArgument`` otherwise."""
    check_bounds(message, request_path)
    return served(load_engine_config(message, request_path), request_path, limits)


def check_bounds(message: pb.SimulationConfig, request_path: str) -> None:
    """Refuse ``message`` (CONFIG_INVALID) when it is too large or a value is beyond the bounds above."""
    size = message.ByteSize()
    if size > MAX_CONFIG_BYTES:
        raise InvalidArgument(
            f"The simulation config is {size} bytes; at most {MAX_CONFIG_BYTES} are accepted.",
            [(request_path, f"at most {MAX_CONFIG_BYTES} bytes serialised")],
            reason="CONFIG_INVALID",
            metadata={"bytes": str(size), "max_bytes": str(MAX_CONFIG_BYTES)},
        )
    problems = list(bound_violations(message, request_path))
    if problems:
        raise InvalidArgument(
            "The simulation config is invalid; the field violations list every problem.", problems,
            reason="CONFIG_INVALID",
        )  # fmt: skip


def bound_violations(message: Message, path: str) -> Iterator[tuple[str, str]]:
    """``(field path, problem)`` for every value of ``message`` beyond the bounds above."""
    owner = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        name = f"{path}.{field.name}"
        key = (owner, field.name)
        if field.is_repeated:
            most = MAX_ITEMS.get(key)
            if most is not None and len(value) > most:
                yield name, f"at most {most} items"
                continue
            for index, item in enumerate(value):
                yield from _value_violations(field, key, item, f"{name}[{index}]")
        else:
            yield from _value_violations(field, key, value, name)


def _value_violations(field: FieldDescriptor, key: tuple[str, str], value: object,
                      path: str) -> Iterator[tuple[str, str]]:  # fmt: skip
    if field.message_type is not None:
        yield from bound_violations(value, path)  # type: ignore[arg-type]
    elif field.type == FieldDescriptor.TYPE_STRING:
        if len(value) > MAX_CONFIG_STRING_CHARS:  # type: ignore[arg-type]
            yield path, f"at most {MAX_CONFIG_STRING_CHARS} characters"
    elif field.type in _FLOATS and not math.isfinite(value):  # type: ignore[arg-type]
        yield path, "must be a finite number"
    elif field.enum_type is None and field.type != FieldDescriptor.TYPE_BOOL:
        ceiling, floor = CEILINGS.get(key), FLOORS.get(key)
        if ceiling is not None and value > ceiling:  # type: ignore[operator]
            yield path, f"at most {ceiling:g}"
        if floor is not None and value < floor:  # type: ignore[operator]
            yield path, f"at least {floor:g}"


def served(config: SimulationConfig, request_path: str, limits: RunLimits) -> SimulationConfig:
    """``config`` as this server runs it: one worker, chunks small enough to fit the worker's memory and
    for a cancel to land quickly; ``InvalidArgument`` (RUN_TOO_COSTLY) when it cannot fit at all."""
    chunk = cost.largest_chunk_within(config, limits.worker_memory_bytes, MAX_CHUNK_PATHS, RUN_PARALLELISM)
    estimate = cost.estimate(config, chunk or cost.served_chunk_paths(config, 1), RUN_PARALLELISM)
    if chunk is None or estimate.work > limits.max_work:
        raise too_costly(estimate, limits, request_path)
    mc = config.monte_carlo
    served_values = {"workers": min(mc.workers, MAX_WORKERS_PER_RUN), "chunk_paths": min(mc.chunk_paths, chunk)}
    if served_values == {"workers": mc.workers, "chunk_paths": mc.chunk_paths}:
        return config
    return config.model_copy(update={"monte_carlo": mc.model_copy(update=served_values)})


def too_costly(estimate: cost.RunCost, limits: RunLimits, request_path: str) -> InvalidArgument:
    """Name the fields that drive the cost: the paths, and what sets the number of loans."""
    memory = estimate.peak_bytes > limits.worker_memory_bytes
    what = (f"about {_mib(estimate.peak_bytes)} MiB of memory even in the smallest chunks, more than the "
            f"{_mib(limits.worker_memory_bytes)} MiB a worker may use" if memory else
            f"about {estimate.cpu_seconds / 60:.0f} CPU-minutes ({estimate.work:.3g} loan-months x paths), more "
            f"than the {limits.max_work:.3g} accepted for one run")  # fmt: skip
    loans = f"{estimate.loans:.3g} loans in the book"
    violations = [
        (f"{request_path}.monte_carlo.paths", f"{estimate.paths} paths of {loans}: {what}"),
        (f"{request_path}.fund.size", f"with book.generated.avg_loan_size, sets {loans}"),
        (f"{request_path}.book.generated.avg_loan_size", f"with fund.size, sets {loans}"),
    ]
    return InvalidArgument(
        f"This run would need {what}. Run fewer paths or a smaller book.",
        violations,
        reason="RUN_TOO_COSTLY",
        metadata={
            "estimated_bytes": f"{estimate.peak_bytes:.0f}", "max_bytes": str(limits.worker_memory_bytes),
            "estimated_work": f"{estimate.work:.3g}", "max_work": f"{limits.max_work:.3g}",
            "loans": f"{estimate.loans:.0f}",
        },
    )  # fmt: skip


def _mib(size: float) -> str:
    return f"{size / MIB:,.0f}" if math.isfinite(size) else "unbounded"
