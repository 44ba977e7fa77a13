"""Monte Carlo driver: chunks of paths, optional worker processes, progress and cancellation.

Memory stays bounded by the chunk size: a chunk returns only per-path scalars, yearly marks and
summed tallies. Results are bit-identical for any chunk size or worker count (see ``streams``).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from . import ENGINE_VERSION, ledger, lifecycle, pathmetrics
from .aggregate import aggregate
from .book import LoanBook, build_book
from .config import SimulationConfig
from .results import RunInfo, SimulationResult
from .streams import BLOCK_PATHS, Purpose, generator


class Cancelled(Exception):
    """The run was cancelled between chunks."""


@dataclass(frozen=True)
class Progress:
    paths_done: int
    paths_total: int
    chunks_done: int
    chunks_total: int
    elapsed_seconds: float


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


def simulate_chunk(config: SimulationConfig, book: LoanBook, first_path: int, n_paths: int) -> pathmetrics.PathResults:
    """The whole pipeline for paths ``[first_path, first_path + n_paths)``."""
    params = lifecycle.ModelParams.from_config(config)
    mkt, outcomes = lifecycle.run_lifecycles(params, book, first_path, n_paths)
    flows = ledger.loan_flows(params, mkt, outcomes, n_paths, ledger.mark_months_for(params))
    cost = ledger.costs(params, flows)
    cash = ledger.run_ledger(params, flows, cost)
    return pathmetrics.compute(params, outcomes, flows, cost, cash)


def path_count(config: SimulationConfig) -> int:
    """Deterministic mode has no randomness left, so it runs a single path."""
    return 1 if config.monte_carlo.deterministic else config.monte_carlo.paths


def chunk_size(config: SimulationConfig) -> int:
    """The configured chunk, rounded up to whole path blocks."""
    return -(-config.monte_carlo.chunk_paths // BLOCK_PATHS) * BLOCK_PATHS


FIRST_CHUNK_PATHS = 4 * BLOCK_PATHS


def chunks(config: SimulationConfig) -> list[tuple[int, int]]:
    """``(first path, paths)`` per chunk. Each worker's first chunk is small, so progress, paths/s and an
    ETA are known within a fraction of a second; results do not depend on the plan."""
    return chunk_plan(path_count(config), config.monte_carlo.chunk_paths, config.monte_carlo.workers)


def chunk_plan(total: int, chunk_paths: int, workers: int) -> list[tuple[int, int]]:
    size = -(-chunk_paths // BLOCK_PATHS) * BLOCK_PATHS  # whole path blocks
    plan, first = [], 0
    while first < total:
        n = min(size if len(plan) >= workers else min(size, FIRST_CHUNK_PATHS), total - first)
        plan.append((first, n))
        first += n
    return plan


def book_for(config: SimulationConfig) -> LoanBook:
    return build_book(config, generator(config.monte_carlo.seed, Purpose.BOOK))


def run(config: SimulationConfig, *, progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None, keep_paths: bool = False) -> SimulationResult:
    started = time.perf_counter()
    book = book_for(config)
    plan = chunks(config)
    total = path_count(config)
    parts: dict[int, pathmetrics.PathResults] = {}
    if progress is not None:
        progress(Progress(0, total, 0, len(plan), time.perf_counter() - started))
    for index, part in _execute(config, book, plan, cancelled):
        parts[index] = part
        if progress is not None:
            done = sum(plan[i][1] for i in parts)
            progress(Progress(done, total, len(parts), len(plan), time.perf_counter() - started))
    results = pathmetrics.PathResults.concatenate([parts[i] for i in range(len(plan))])
    info = RunInfo(seed=config.monte_carlo.seed, engine_version=ENGINE_VERSION, currency=config.fund.currency,
                   paths=total,
                   deterministic=config.monte_carlo.deterministic, chunk_paths=chunk_size(config),
                   workers=config.monte_carlo.workers, loans_in_book=len(book),
                   elapsed_seconds=time.perf_counter() - started)
    return aggregate(config, book, results, info, keep_paths)


def _single_threaded_blas() -> None:
    """Worker initializer: one BLAS thread per worker, so workers do not oversubscribe the cores."""
    threadpool_limits(limits=1, user_api="blas")


def _check(cancelled: CancelCheck | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("simulation cancelled")


def _execute(config: SimulationConfig, book: LoanBook, plan: list[tuple[int, int]],
             cancelled: CancelCheck | None) -> Iterator[tuple[int, pathmetrics.PathResults]]:
    """Yield ``(chunk index, results)`` as chunks finish, checking for cancellation in between."""
    workers = min(config.monte_carlo.workers, len(plan))
    if workers <= 1:
        for index, (first, n) in enumerate(plan):
            _check(cancelled)
            yield index, simulate_chunk(config, book, first, n)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_single_threaded_blas)
    queue = list(enumerate(plan))
    running: dict[Future[pathmetrics.PathResults], int] = {}
    try:
        while queue or running:
            _check(cancelled)
            while queue and len(running) < workers:
                index, (first, n) = queue.pop(0)
                running[pool.submit(simulate_chunk, config, book, first, n)] = index
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
