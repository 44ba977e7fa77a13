"""Monte Carlo driver: chunks of paths, optional worker processes, progress and cancellation.

Memory stays bounded by the chunk size: a chunk returns only per-path scalars, yearly marks and
summed tallies. Results are bit-identical for any chunk size or worker count (see ``streams``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import ENGINE_VERSION, pathmetrics
from .aggregate import aggregate
from .book import LoanBook, build_book
from .config import SimulationConfig
from .executors import Cancelled, CancelCheck, ChunkExecutor, RunTask, executor_for
from .results import RunInfo, SimulationResult
from .streams import BLOCK_PATHS, Purpose, generator

__all__ = ["Cancelled", "Progress", "book_for", "chunk_plan", "chunk_size", "chunks", "path_count", "run",
           "simulate_paths"]


@dataclass(frozen=True)
class Progress:
    paths_done: int
    paths_total: int
    chunks_done: int
    chunks_total: int
    elapsed_seconds: float


ProgressCallback = Callable[[Progress], None]


def path_count(config: SimulationConfig) -> int:
    """Deterministic mode has no randomness left, so it runs a single path."""
    return 1 if config.monte_carlo.deterministic else config.monte_carlo.paths


def chunk_size(config: SimulationConfig) -> int:
    """The configured chunk, rounded up to whole path blocks."""
    return -(-config.monte_carlo.chunk_paths // BLOCK_PATHS) * BLOCK_PATHS


FIRST_CHUNK_PATHS = 2 * BLOCK_PATHS


def chunks(config: SimulationConfig, parallelism: int | None = None) -> list[tuple[int, int]]:
    """``(first path, paths)`` per chunk for an executor running ``parallelism`` chunks at once (default:
    ``monte_carlo.workers``). Results do not depend on the plan."""
    parallel = config.monte_carlo.workers if parallelism is None else parallelism
    return chunk_plan(path_count(config), config.monte_carlo.chunk_paths, parallel)


def chunk_plan(total: int, chunk_paths: int, parallelism: int) -> list[tuple[int, int]]:
    """A run that fits in one round of chunks is split evenly over the executor; a longer one starts with a
    small chunk per executor slot, so progress, paths/s and an ETA are known within a fraction of a second,
    then goes on in chunks of ``chunk_paths`` rounded up to whole path blocks. With several slots, the last
    round is cut into two smaller chunks per slot, so the slots finish together instead of one idling while
    another ends a full chunk."""
    size = -(-chunk_paths // BLOCK_PATHS) * BLOCK_PATHS
    if total <= size * parallelism:
        return _even(0, total, parallelism)
    plan, first = [], 0
    while first < total:
        if parallelism > 1 and len(plan) >= parallelism and total - first <= size * parallelism:
            return plan + _even(first, total - first, 2 * parallelism)
        n = min(size if len(plan) >= parallelism else min(size, FIRST_CHUNK_PATHS), total - first)
        plan.append((first, n))
        first += n
    return plan


def _even(start: int, paths: int, parts: int) -> list[tuple[int, int]]:
    """``paths`` from ``start`` in at most ``parts`` chunks of whole path blocks, as equal as blocks allow."""
    blocks = -(-paths // BLOCK_PATHS)
    per_chunk = -(-blocks // min(parts, blocks)) * BLOCK_PATHS
    return [(start + offset, min(per_chunk, paths - offset)) for offset in range(0, paths, per_chunk)]


def book_for(config: SimulationConfig) -> LoanBook:
    return build_book(config, generator(config.monte_carlo.seed, Purpose.BOOK))


def run(config: SimulationConfig, *, progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None, keep_paths: bool = False,
        executor: ChunkExecutor | None = None) -> SimulationResult:
    """Simulate the fund; chunks run on ``executor`` (by default in this process, or in the shared pool of
    ``monte_carlo.workers`` processes)."""
    started = time.perf_counter()
    book = book_for(config)
    executor = executor if executor is not None else executor_for(config)
    plan = chunks(config, executor.parallelism)
    total = path_count(config)
    results = simulate_paths(config, book, executor, plan, progress=progress, cancelled=cancelled, started=started)
    info = RunInfo(seed=config.monte_carlo.seed, engine_version=ENGINE_VERSION, currency=config.fund.currency,
                   paths=total,
                   deterministic=config.monte_carlo.deterministic, chunk_paths=chunk_size(config), chunks=len(plan),
                   workers=config.monte_carlo.workers, loans_in_book=len(book),
                   elapsed_seconds=time.perf_counter() - started)
    return aggregate(config, book, results, info, keep_paths)


def simulate_paths(config: SimulationConfig, book: LoanBook, executor: ChunkExecutor, plan: list[tuple[int, int]],
                   *, progress: ProgressCallback | None = None,
                   cancelled: CancelCheck | None = None, started: float | None = None) -> pathmetrics.PathResults:
    """The per-path results of ``config`` on ``book``, chunk by chunk, without the across-path aggregation
    (stress tests and sensitivities compare several runs path by path)."""
    started = time.perf_counter() if started is None else started
    total = sum(n for _, n in plan)
    parts: dict[int, pathmetrics.PathResults] = {}
    if progress is not None:
        progress(Progress(0, total, 0, len(plan), time.perf_counter() - started))
    for index, part in executor.run(RunTask(config, book), plan, cancelled):
        parts[index] = part
        if progress is not None:
            done = sum(plan[i][1] for i in parts)
            progress(Progress(done, total, len(parts), len(plan), time.perf_counter() - started))
    return pathmetrics.PathResults.concatenate([parts[i] for i in range(len(plan))])
