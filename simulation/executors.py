"""Where the chunks of a run are computed: in this process, or in a persistent pool of worker processes.

An executor takes a run's task (config and book) and its chunk plan, and yields each chunk's results as
they finish. Results depend only on the chunk's paths (``streams``), never on which process computed them,
so any executor — a distributed one too (e.g. Dask), given the same task — returns the same numbers.

The process pool is started once and reused by every run: start-up (spawning, imports, compiled kernels)
is paid once, not per run. A run's task is pickled once and sent as bytes; each worker unpickles it once
per run and keeps it while the run's chunks arrive.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from threadpoolctl import threadpool_limits

from . import ledger, lifecycle, pathmetrics
from .book import LoanBook
from .config import SimulationConfig

Plan = list[tuple[int, int]]  # (first path, paths) per chunk
CancelCheck = Callable[[], bool]


class Cancelled(Exception):
    """The run was cancelled between chunks."""


@dataclass(frozen=True)
class RunTask:
    """Everything a chunk needs besides its paths: read-only for the whole run."""

    config: SimulationConfig
    book: LoanBook


def simulate_chunk(task: RunTask, first_path: int, n_paths: int) -> pathmetrics.PathResults:
    """The whole pipeline for paths ``[first_path, first_path + n_paths)``."""
    params = lifecycle.params_for(task.config)
    mkt, outcomes = lifecycle.run_lifecycles(params, task.book, first_path, n_paths)
    flows = ledger.loan_flows(params, mkt, outcomes, n_paths, ledger.mark_months_for(params))
    cost = ledger.costs(params, flows)
    cash = ledger.run_ledger(params, flows, cost)
    return pathmetrics.compute(params, outcomes, flows, cost, cash)


class ChunkExecutor(Protocol):
    parallelism: int  # chunks computed at once; the chunk plan is cut to keep them all busy

    def run(self, task: RunTask, plan: Plan, cancelled: CancelCheck | None) -> Iterator[tuple[int, pathmetrics.PathResults]]:
        """Yield ``(chunk index, results)`` as chunks finish; raise ``Cancelled`` between chunks."""
        ...


def check(cancelled: CancelCheck | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("simulation cancelled")


class InProcess:
    """Chunks one after the other in the calling process."""

    parallelism = 1

    def run(self, task: RunTask, plan: Plan, cancelled: CancelCheck | None) -> Iterator[tuple[int, pathmetrics.PathResults]]:
        for index, (first, n) in enumerate(plan):
            check(cancelled)
            yield index, simulate_chunk(task, first, n)


class ProcessPool:
    """A persistent pool of spawned worker processes, one BLAS thread each, shared by every run."""

    def __init__(self, workers: int):
        self.parallelism = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker)

    def warm_up(self) -> None:
        """Start every worker and load the compiled kernels, so the first run pays no start-up."""
        for future in [self._pool.submit(_warm) for _ in range(self.parallelism)]:
            future.result()

    def run(self, task: RunTask, plan: Plan, cancelled: CancelCheck | None) -> Iterator[tuple[int, pathmetrics.PathResults]]:
        payload = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        key = hashlib.sha256(payload).hexdigest()
        return _spread(self._pool, self.parallelism, plan, cancelled, _chunk_in_worker, key, payload)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ThreadPool:
    """Threads of this process: the compiled kernels and the large array operations release the GIL, so
    chunks on two threads use two cores for most of their work. For a process that runs one job at a time."""

    def __init__(self, threads: int):
        self.parallelism = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="equihome-chunk")

    def run(self, task: RunTask, plan: Plan, cancelled: CancelCheck | None) -> Iterator[tuple[int, pathmetrics.PathResults]]:
        return _spread(self._pool, self.parallelism, plan, cancelled, simulate_chunk, task)


def _spread(pool: Executor, parallelism: int, plan: Plan, cancelled: CancelCheck | None,
            chunk: Callable[..., pathmetrics.PathResults], *task: object) -> Iterator[tuple[int, pathmetrics.PathResults]]:
    """Keep ``parallelism`` chunks of the plan in flight on ``pool``, yielding each as it finishes."""
    queue = list(enumerate(plan))
    running: dict[Future[pathmetrics.PathResults], int] = {}
    try:
        while queue or running:
            check(cancelled)
            while queue and len(running) < parallelism:
                index, (first, n) = queue.pop(0)
                running[pool.submit(chunk, *task, first, n)] = index
            done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result()
    finally:
        for future in running:
            future.cancel()
        wait(running)  # a chunk already computing cannot be interrupted: leave nothing running behind the run


_pools: dict[int, ProcessPool] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int) -> ProcessPool:
    """The process-wide pool of ``workers`` processes, started on first use."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ProcessPool(workers)
        return _pools[workers]


def executor_for(config: SimulationConfig) -> ChunkExecutor:
    """The default executor of a run: in process, or the shared pool of ``monte_carlo.workers`` processes."""
    workers = config.monte_carlo.workers
    return InProcess() if workers <= 1 else shared_pool(workers)


@atexit.register
def _shutdown_pools() -> None:
    for pool in _pools.values():
        pool.shutdown()


# Worker side ----------------------------------------------------------------------------------------

_TASKS: OrderedDict[str, RunTask] = OrderedDict()  # the latest runs' tasks in this worker
_TASKS_KEPT = 4


def _init_worker() -> None:
    """One BLAS thread per worker, so workers do not oversubscribe the cores."""
    threadpool_limits(limits=1, user_api="blas")


def _chunk_in_worker(key: str, payload: bytes, first: int, n: int) -> pathmetrics.PathResults:
    task = _TASKS.get(key)
    if task is None:
        task = _TASKS[key] = pickle.loads(payload)
        while len(_TASKS) > _TASKS_KEPT:
            _TASKS.popitem(last=False)
    _TASKS.move_to_end(key)
    return simulate_chunk(task, first, n)


def _warm() -> None:
    """A tiny run, which loads (or compiles once into the cache) every kernel of the pipeline."""
    from .config import load_config
    from .engine import book_for

    config = load_config({"monte_carlo": {"paths": 1}})
    simulate_chunk(RunTask(config, book_for(config)), 0, 1)
