"""CPU-bound jobs in spawned worker processes, with progress, cancellation, quotas and back-pressure.

A job is a top-level (picklable) function ``fn(payload, reporter)``. It runs in a worker process of its
own slot (``server/workers.py``: spawned, memory-capped, tied to the server's life), reports with
``reporter.progress(done, total, **info)`` and checks ``reporter.cancelled()`` between chunks of work,
raising ``JobCancelled`` (or calling ``reporter.raise_if_cancelled()``) to stop.

In the server, at most ``max_running`` jobs run and at most ``max_queued`` more wait; one owner may have
at most ``max_per_owner`` of them. Beyond that ``submit`` raises ``ResourceExhausted`` with a retry
estimate. A cancelled job that has not stopped by itself within ``cancel_grace_s`` (a chunk can be long)
has its worker killed, so a cancel always lands within about a second. A worker that dies (killed, out
of memory, crashed) fails only its own job, and its slot gets a fresh worker for the next one; so does a
worker whose job did not succeed, which exits at once (the job may have left chunks running on its
threads).

``JobRunner`` is the one implementation of the small interface the services use (``submit``, ``cancel``,
``snapshot``, ``watch``, ``shutdown``). A distributed runner can replace it: jobs carry their seeds in
their payloads, so where they run never changes their results.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import grpc

from server.errors import Cancelled, NotFound, ResourceExhausted, ServiceError, Unavailable
from server.observability import Metrics
from server.settings import Settings
from server.workers import (
    CANCELLED,
    EXITED,
    FAILED,
    OUT_OF_MEMORY,
    PROGRESS,
    READY,
    RETIRING,
    STARTED,
    SUCCEEDED,
    JobCancelled,
    JobReporter,
    WorkerProcess,
)

__all__ = ["JobCancelled", "JobReporter", "JobRunner", "JobHandle", "JobSnapshot", "JobState", "RunOutOfMemory"]

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.5  # a running job gets this long to stop by itself before its worker is killed
WORKER_STOP_TIMEOUT_S = 5.0
MIB = 1024 * 1024


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


@dataclass(frozen=True)
class JobSnapshot:
    """A job's state and latest progress at one moment."""

    job_id: str
    state: JobState
    done: int = 0
    total: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class RunOutOfMemory(ServiceError):
    """The job needed more memory than its worker may use."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RUN_MEMORY_EXHAUSTED"


class WorkerDied(RuntimeError):
    """The worker process ended while running the job, without the server asking it to."""


# --- The runner ------------------------------------------------------------------------------------


class _Watcher:
    """One watcher's mailbox: only the latest snapshot is kept, so a slow watcher never piles up work."""

    def __init__(self, first: JobSnapshot):
        self.latest = first
        self.changed = asyncio.Event()
        self.changed.set()


@dataclass(eq=False)
class _Job:
    job_id: str
    fn: Callable[[Any, JobReporter], Any]
    payload: Any
    owner: str | None
    outcome: asyncio.Future[Any]
    snapshot: JobSnapshot
    watchers: set[_Watcher] = field(default_factory=set)
    slot: int | None = None
    worker: WorkerProcess | None = None
    ended: asyncio.Future[tuple[Any, ...]] | None = None  # the worker's last word on the job
    cancel_requested: bool = False
    kill_timer: asyncio.TimerHandle | None = None
    started_at: float | None = None


class JobHandle:
    """What ``submit`` returns: the job's id, its latest snapshot and its eventual result."""

    def __init__(self, runner: JobRunner, job: _Job):
        self._runner = runner
        self._job = job

    @property
    def job_id(self) -> str:
        return self._job.job_id

    @property
    def snapshot(self) -> JobSnapshot:
        return self._job.snapshot

    def done(self) -> bool:
        return self._job.outcome.done()

    async def result(self) -> Any:
        """The job's return value; re-raises its exception, or ``errors.Cancelled`` if it was cancelled.

        Cancelling the awaiting task does not cancel the job (use ``JobRunner.cancel``).
        """
        return await asyncio.shield(self._job.outcome)


class JobRunner:
    """Runs jobs in memory-capped worker processes with bounded concurrency, queue and per-owner quota."""

    def __init__(
        self,
        *,
        max_running: int = 2,
        max_queued: int = 16,
        max_per_owner: int | None = None,
        memory_bytes: int | None = None,
        progress_interval: float = 0.05,
        on_load_change: Callable[[int, int], None] | None = None,
        keep_finished: int = 256,
        cancel_on_shutdown: bool = True,
        cancel_grace_s: float = CANCEL_GRACE_S,
        warm_up: Callable[[], None] | None = None,
    ):
        if max_running < 1 or max_queued < 0 or (max_per_owner is not None and max_per_owner < 1):
            raise ValueError("max_running and max_per_owner must be >= 1 and max_queued >= 0")
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_per_owner = max_per_owner
        self.memory_bytes = memory_bytes
        self.cancel_on_shutdown = cancel_on_shutdown
        self._cancel_grace_s = cancel_grace_s
        self._warm_up = warm_up
        self._eager = False  # start_workers was called: keep every slot's worker started
        self._progress_interval = progress_interval
        self._on_load_change = on_load_change
        self._keep_finished = keep_finished
        self._context = multiprocessing.get_context("spawn")
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._free_slots = list(range(max_running))
        self._workers: dict[int, WorkerProcess] = {}
        self._owners: Counter[str] = Counter()  # active (queued or running) jobs per owner
        self._finished: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._drivers: set[asyncio.Task[None]] = set()
        self._mean_duration: float | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancel_flags: Any = None  # shared bytes, one cancel flag per slot

    # Life cycle --------------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Metrics | None = None, warm_up: Callable[[], None] | None = None
    ) -> JobRunner:
        """A runner sized by the settings, reporting its load and workers to ``metrics``; ``start()`` next."""
        runner = cls(
            max_running=settings.max_concurrent_runs,
            max_queued=settings.max_queued_runs,
            max_per_owner=settings.max_active_runs_per_caller,
            memory_bytes=settings.worker_memory_mib * MIB,
            on_load_change=metrics.set_run_load if metrics is not None else None,
            cancel_on_shutdown=settings.shutdown_cancels_runs,
            warm_up=warm_up,
        )
        if metrics is not None:
            metrics.workers.track(runner.worker_pids)
        return runner

    async def start(self) -> None:
        """Get ready to run jobs; a slot's worker starts when the slot first gets a job, or with
        ``start_workers``."""
        if self._loop is not None:
            raise RuntimeError("the job runner is already started")
        self._loop = asyncio.get_running_loop()
        self._cancel_flags = self._context.Array("b", self.max_running, lock=False)

    def start_workers(self) -> None:
        """Start every slot's worker now (each runs ``warm_up`` in the background), so no request waits for
        a worker's start-up. Call it from the event loop once the server serves: a server that fails to
        start never pays for workers."""
        self._eager = True
        if not self._closing:
            for slot in range(self.max_running):
                self._worker_for(slot)

    async def __aenter__(self) -> JobRunner:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.shutdown()

    async def shutdown(
        self, *, cancel_running: bool | None = None, abandon_after_s: float | None = None
    ) -> None:
        """Stop accepting jobs, cancel the queued ones, cancel (or wait for) the running ones, stop the workers.

        ``cancel_running`` defaults to the runner's ``cancel_on_shutdown``. Queued jobs never start once
        shutdown has begun. With ``abandon_after_s``, running jobs that have not ended by then are killed
        with their workers: no worker outlives the runner.
        """
        if self._closing or self._loop is None:
            return
        self._closing = True
        for job in list(self._queue):
            self.cancel(job.job_id)
        if self.cancel_on_shutdown if cancel_running is None else cancel_running:
            for job_id in list(self._jobs):
                self.cancel(job_id)
        if self._drivers:
            _, pending = await asyncio.wait(set(self._drivers), timeout=abandon_after_s)
            if pending:
                log.error("%d job(s) still running at shutdown; killing their workers", len(pending))
                for worker in self._workers.values():
                    worker.kill()
                await asyncio.wait(pending)
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(asyncio.to_thread(worker.stop, WORKER_STOP_TIMEOUT_S) for worker in workers))

    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in list(self._workers.values()) if worker.pid is not None]

    # Submitting, cancelling, watching ----------------------------------------------------------

    @property
    def running(self) -> int:
        return self.max_running - len(self._free_slots)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self,
        fn: Callable[[Any, JobReporter], Any],
        payload: Any,
        *,
        job_id: str | None = None,
        owner: str | None = None,
    ) -> JobHandle:
        """Accept a job: start it now if a slot is free, else queue it, else refuse with a retry estimate.

        An ``owner`` already at its quota of active jobs is refused too (RUN_QUOTA_EXHAUSTED).
        """
        if self._loop is None:
            raise RuntimeError("start the job runner before submitting jobs")
        if self._closing:
            raise Unavailable("The server is shutting down.", retry_after=5.0, reason="SHUTTING_DOWN")
        job_id = job_id or uuid.uuid4().hex
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already active")
        if owner is not None and self.max_per_owner is not None and self._owners[owner] >= self.max_per_owner:
            raise ResourceExhausted(
                f"This caller already has {self.max_per_owner} simulations queued or running, the most allowed; "
                "wait for one to end or cancel one.",
                retry_after=self._retry_estimate(),
                reason="RUN_QUOTA_EXHAUSTED",
                metadata={"owner": owner, "max_active_runs": str(self.max_per_owner)},
            )
        if not self._free_slots and len(self._queue) >= self.max_queued:
            raise ResourceExhausted(
                f"All {self.max_running} workers are busy and {self.max_queued} jobs are queued.",
                retry_after=self._retry_estimate(),
                reason="RUN_CAPACITY_EXHAUSTED",
                metadata={"max_running": str(self.max_running), "max_queued": str(self.max_queued)},
            )
        job = _Job(job_id, fn, payload, owner, self._loop.create_future(), JobSnapshot(job_id, JobState.QUEUED))
        job.outcome.add_done_callback(_mark_retrieved)
        self._jobs[job_id] = job
        if owner is not None:
            self._owners[owner] += 1
        if self._free_slots:
            self._launch(job)
        else:
            self._queue.append(job)
        self._report_load()
        return JobHandle(self, job)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or stop a running one (its worker is killed if it does not stop
        by itself within the grace period); False if it is not active."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if job in self._queue:
            self._queue.remove(job)
            self._finish(job, JobState.CANCELLED, error=Cancelled(f"Job {job_id} was cancelled."))
            self._report_load()
        elif job.slot is not None and not job.cancel_requested:
            assert self._cancel_flags is not None and self._loop is not None
            job.cancel_requested = True
            self._cancel_flags[job.slot] = 1
            job.kill_timer = self._loop.call_later(self._cancel_grace_s, self._kill_worker_of, job)
        return True

    def snapshot(self, job_id: str) -> JobSnapshot | None:
        """The latest snapshot of an active or recently finished job."""
        job = self._jobs.get(job_id)
        return job.snapshot if job is not None else self._finished.get(job_id)

    def watcher_count(self, job_id: str) -> int:
        job = self._jobs.get(job_id)
        return len(job.watchers) if job is not None else 0

    async def watch(self, job_id: str) -> AsyncIterator[JobSnapshot]:
        """Snapshots of a job, latest first, until (and including) its terminal one.

        Intermediate snapshots may be skipped when the watcher is slower than the job; the terminal one
        never is. Close the iterator (``contextlib.aclosing``) or cancel its consumer to stop watching.
        """
        job = self._jobs.get(job_id)
        if job is None:
            final = self._finished.get(job_id)
            if final is None:
                raise NotFound(f"Job {job_id} is not known.", metadata={"job_id": job_id})
            yield final
            return
        watcher = _Watcher(job.snapshot)
        job.watchers.add(watcher)
        try:
            while True:
                await watcher.changed.wait()
                watcher.changed.clear()
                snapshot = watcher.latest
                yield snapshot
                if snapshot.terminal:
                    return
        finally:
            job.watchers.discard(watcher)

    # Inside the runner -------------------------------------------------------------------------

    def _launch(self, job: _Job) -> None:
        assert self._cancel_flags is not None and self._loop is not None
        job.slot = self._free_slots.pop()
        self._cancel_flags[job.slot] = 0
        driver = self._loop.create_task(self._drive(job), name=f"job-{job.job_id}")
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)

    def _worker_for(self, slot: int) -> WorkerProcess:
        """The slot's worker, started now (from the event loop's thread) if it has none or it died."""
        worker = self._workers.get(slot)
        if worker is None or not worker.alive:
            assert self._loop is not None
            worker = WorkerProcess(
                self._context, slot, self._cancel_flags, memory_bytes=self.memory_bytes,
                progress_interval=self._progress_interval, warm_up=self._warm_up, loop=self._loop,
                on_message=self._on_message,
            )  # fmt: skip
            self._workers[slot] = worker
        return worker

    async def _drive(self, job: _Job) -> None:
        """Run one job in its slot's worker and settle its outcome."""
        assert self._loop is not None and job.slot is not None
        try:
            worker = job.worker = self._worker_for(job.slot)
            job.ended = self._loop.create_future()
            try:
                await asyncio.to_thread(worker.send, job.job_id, job.fn, job.payload)
            except OSError:
                pass  # the worker died before it took the job: its EXITED message settles it
            kind, _, *detail = await job.ended
            self._settle(job, kind, detail)
        except Exception as error:  # e.g. a payload that cannot be pickled
            log.warning("job %s could not be run: %r", job.job_id, error)
            self._finish(job, JobState.FAILED, error=error)
        finally:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            self._release(job)

    def _settle(self, job: _Job, kind: str, detail: list[Any]) -> None:
        if kind == SUCCEEDED:
            self._finish(job, JobState.SUCCEEDED, value=detail[0])
        elif kind == CANCELLED or (kind == EXITED and job.cancel_requested):
            self._finish(job, JobState.CANCELLED, error=Cancelled(f"Job {job.job_id} was cancelled."))
        elif kind == OUT_OF_MEMORY:
            limit = self.memory_bytes or 0
            log.warning("job %s ran out of memory (worker limit %d MiB)", job.job_id, limit // MIB)
            self._finish(job, JobState.FAILED, error=RunOutOfMemory(
                f"The run needed more than the {limit // MIB} MiB a worker may use; run fewer loans or paths.",
                metadata={"max_bytes": str(limit)},
            ))  # fmt: skip
        elif kind == FAILED:
            log.warning("job %s failed: %r", job.job_id, detail[0])
            self._finish(job, JobState.FAILED, error=detail[0])
        else:
            exit_code = detail[0]
            log.error("worker process of job %s ended unexpectedly (exit code %s)", job.job_id, exit_code)
            self._finish(job, JobState.FAILED, error=WorkerDied(f"the worker process ended with {exit_code}"))

    def _kill_worker_of(self, job: _Job) -> None:
        if job.worker is not None and not job.outcome.done():
            log.info("job %s did not stop within %.1f s of its cancel; killing its worker",
                     job.job_id, self._cancel_grace_s)  # fmt: skip
            job.worker.kill()

    def _on_message(self, worker: WorkerProcess, message: tuple[Any, ...]) -> None:
        """A message from ``worker`` (on the event loop): progress, an outcome, or its exit."""
        kind, job_id, *rest = message
        if kind == READY:
            worker.ready = True
            return
        if (kind == EXITED or kind in RETIRING) and self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]  # gone, or about to go: the slot gets a fresh worker
        if kind == EXITED and self._eager and worker.ready and not self._closing and worker.slot not in self._workers:
            self._worker_for(worker.slot)  # warm before the next job needs it (never after a failed start)
        job = next((job for job in self._jobs.values() if job.worker is worker and job.ended is not None), None)
        if job is None or (job_id is not None and job_id != job.job_id):
            return  # a late message about a job already settled
        if kind == STARTED:
            job.started_at = time.monotonic()
            self._publish(job, replace(job.snapshot, state=JobState.RUNNING))
        elif kind == PROGRESS:
            done, total, info = rest
            self._publish(job, replace(job.snapshot, done=done, total=total, info=info))
        elif job.ended is not None and not job.ended.done():
            job.ended.set_result(message)

    def _release(self, job: _Job) -> None:
        if job.slot is not None:
            self._free_slots.append(job.slot)
            job.slot = None
        if job.started_at is not None:
            duration = time.monotonic() - job.started_at
            previous = self._mean_duration
            self._mean_duration = duration if previous is None else 0.8 * previous + 0.2 * duration
        while self._free_slots and self._queue and not self._closing:
            self._launch(self._queue.popleft())
        self._report_load()

    def _finish(
        self, job: _Job, state: JobState, *, value: Any = None, error: BaseException | None = None
    ) -> None:
        self._publish(job, replace(job.snapshot, state=state))
        self._jobs.pop(job.job_id, None)
        if job.owner is not None:
            self._owners[job.owner] -= 1
            if self._owners[job.owner] <= 0:
                del self._owners[job.owner]
        self._finished[job.job_id] = job.snapshot
        while len(self._finished) > self._keep_finished:
            self._finished.popitem(last=False)
        if error is not None:
            job.outcome.set_exception(error)
        else:
            job.outcome.set_result(value)

    def _publish(self, job: _Job, snapshot: JobSnapshot) -> None:
        job.snapshot = snapshot
        for watcher in job.watchers:
            watcher.latest = snapshot
            watcher.changed.set()

    def _report_load(self) -> None:
        if self._on_load_change is not None:
            self._on_load_change(self.running, self.queued)

    def _retry_estimate(self) -> float:
        """Seconds until a slot is likely free: mean job time x how many rounds of the pool are ahead."""
        per_job = self._mean_duration if self._mean_duration is not None else 10.0
        rounds = math.ceil((len(self._queue) + 1) / self.max_running)
        return float(min(max(per_job * rounds, 1.0), 3600.0))


def _mark_retrieved(outcome: asyncio.Future[Any]) -> None:
    """Outcomes nobody awaits are still recorded in the snapshot and logged; don't also warn at GC."""
    if not outcome.cancelled():
        outcome.exception()
