"""CPU-bound jobs in a pool of spawned worker processes, with progress, cancellation and back-pressure.

A job is a top-level (picklable) function ``fn(payload, reporter)`` run in a worker process started with
``spawn`` (never ``fork``: forking a process that runs gRPC hangs). It reports with
``reporter.progress(done, total, **info)`` and checks ``reporter.cancelled()`` between chunks of work,
raising ``JobCancelled`` (or calling ``reporter.raise_if_cancelled()``) to stop.

In the parent, at most ``max_running`` jobs occupy the pool and at most ``max_queued`` more wait; beyond
that ``submit`` raises ``ResourceExhausted`` with a retry estimate. Each running job owns a *slot*: one
byte of shared memory that is its cancel flag, so ``cancelled()`` is a memory read, not an IPC round
trip. Progress travels over one pipe to a reader thread that hands each message to the event loop,
which fans snapshots out to any number of watchers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from server.errors import Cancelled, NotFound, ResourceExhausted, Unavailable
from server.observability import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)

FINISH_MARKER_WAIT_S = 5.0  # how long a finished job waits for its last progress messages to arrive


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


class JobCancelled(Exception):
    """Raised by a job function that noticed ``reporter.cancelled()``."""


class JobReporter(Protocol):
    """What a job function may call; ``Reporter`` implements it in the worker process."""

    def progress(self, done: int, total: int, **info: Any) -> None: ...

    def cancelled(self) -> bool: ...


# --- The worker side ---------------------------------------------------------------------------

_worker_channel: tuple[Any, Any] | None = None  # (message queue, cancel flags) in a worker process


def _init_worker(messages: Any, cancel_flags: Any, warm_up: Callable[[], None] | None) -> None:
    """Pool initializer: keep the channel to the parent; leave Ctrl-C to the parent's shutdown; pay the
    worker's start-up (imports, compiled kernels) now rather than on the first job."""
    global _worker_channel
    _worker_channel = (messages, cancel_flags)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if warm_up is not None:
        warm_up()


def _ready() -> None:
    """A no-op job: submitting one per slot makes the pool spawn (and warm) every worker."""


def _channel() -> tuple[Any, Any]:
    if _worker_channel is None:
        raise RuntimeError("a Reporter only works inside a JobRunner worker process")
    return _worker_channel


class Reporter:
    """The job's line to the parent: picklable, cheap to call, and throttled.

    Progress is sent at most every ``min_interval`` seconds, except the first and the final
    (``done >= total > 0``) reports, which always go; what was held back is flushed when the job ends.
    """

    def __init__(self, job_id: str, slot: int, min_interval: float):
        self.job_id = job_id
        self._slot = slot
        self._min_interval = min_interval
        self._last_sent = -math.inf
        self._held: tuple[int, int, dict[str, Any]] | None = None

    def progress(self, done: int, total: int, **info: Any) -> None:
        self._held = (int(done), int(total), info)
        final = total > 0 and done >= total
        if final or time.monotonic() - self._last_sent >= self._min_interval:
            self._flush()

    def cancelled(self) -> bool:
        return bool(_channel()[1][self._slot])

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def _flush(self) -> None:
        if self._held is not None:
            _channel()[0].put(("progress", self.job_id, *self._held))
            self._held = None
            self._last_sent = time.monotonic()

    def _started(self) -> None:
        _channel()[0].put(("started", self.job_id))

    def _finished(self) -> None:
        self._flush()
        _channel()[0].put(("finished", self.job_id))


def _run_in_worker(fn: Callable[[Any, JobReporter], Any], payload: Any, reporter: Reporter) -> Any:
    reporter._started()
    try:
        return fn(payload, reporter)
    finally:
        reporter._finished()


# --- The parent side ---------------------------------------------------------------------------


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
    outcome: asyncio.Future[Any]
    snapshot: JobSnapshot
    watchers: set[_Watcher] = field(default_factory=set)
    slot: int | None = None
    worker_finished: asyncio.Event = field(default_factory=asyncio.Event)
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
    """Runs jobs in a spawn-based process pool with bounded concurrency and a bounded queue."""

    def __init__(
        self,
        *,
        max_running: int = 2,
        max_queued: int = 16,
        progress_interval: float = 0.05,
        on_load_change: Callable[[int, int], None] | None = None,
        keep_finished: int = 256,
        cancel_on_shutdown: bool = True,
        warm_up: Callable[[], None] | None = None,
    ):
        if max_running < 1 or max_queued < 0:
            raise ValueError("max_running must be >= 1 and max_queued >= 0")
        self.max_running = max_running
        self.max_queued = max_queued
        self.cancel_on_shutdown = cancel_on_shutdown
        self._warm_up = warm_up
        self._progress_interval = progress_interval
        self._on_load_change = on_load_change
        self._keep_finished = keep_finished
        self._context = multiprocessing.get_context("spawn")
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._free_slots = list(range(max_running))
        self._finished: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._drivers: set[asyncio.Task[None]] = set()
        self._mean_duration: float | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._messages: Any = None
        self._cancel_flags: Any = None  # shared bytes, one cancel flag per slot
        self._reader: threading.Thread | None = None

    # Life cycle --------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None,
                      warm_up: Callable[[], None] | None = None) -> JobRunner:
        """A runner sized by the settings, reporting its load to ``metrics``; call ``start()`` next."""
        return cls(
            max_running=settings.max_concurrent_runs,
            max_queued=settings.max_queued_runs,
            on_load_change=metrics.set_run_load if metrics is not None else None,
            cancel_on_shutdown=settings.shutdown_cancels_runs,
            warm_up=warm_up,
        )

    async def start(self) -> None:
        """Create the pool and the progress reader thread. With ``warm_up``, every worker is started and
        warmed now, in the background, so no request waits for a worker's start-up."""
        if self._loop is not None:
            raise RuntimeError("the job runner is already started")
        self._loop = asyncio.get_running_loop()
        self._messages = self._context.SimpleQueue()
        self._cancel_flags = self._context.Array("b", self.max_running, lock=False)
        self._pool = self._new_pool()
        if self._warm_up is not None:
            for _ in range(self.max_running):
                self._pool.submit(_ready)
        self._reader = threading.Thread(target=self._read_messages, name="equihome-job-progress", daemon=True)
        self._reader.start()

    async def __aenter__(self) -> JobRunner:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.shutdown()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.max_running,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(self._messages, self._cancel_flags, self._warm_up),
        )

    async def shutdown(
        self, *, cancel_running: bool | None = None, abandon_after_s: float | None = None
    ) -> None:
        """Stop accepting jobs, cancel the queued ones, cancel (or wait for) the running ones, stop the pool.

        ``cancel_running`` defaults to the runner's ``cancel_on_shutdown``. Queued jobs never start once
        shutdown has begun. With ``abandon_after_s``, running jobs that have not ended by then are
        abandoned (logged); their worker processes are left to finish on their own.
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
                log.error("%d job(s) still running at shutdown; abandoning them", len(pending))
        assert self._pool is not None and self._reader is not None
        pool, abandoned = self._pool, bool(self._drivers)
        await asyncio.to_thread(pool.shutdown, wait=not abandoned, cancel_futures=True)
        self._messages.put(None)  # the reader thread's stop signal
        await asyncio.to_thread(self._reader.join)

    # Submitting, cancelling, watching ----------------------------------------------------------

    @property
    def running(self) -> int:
        return self.max_running - len(self._free_slots)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self, fn: Callable[[Any, JobReporter], Any], payload: Any, *, job_id: str | None = None
    ) -> JobHandle:
        """Accept a job: start it now if a slot is free, else queue it, else refuse with a retry estimate."""
        if self._loop is None:
            raise RuntimeError("start the job runner before submitting jobs")
        if self._closing:
            raise Unavailable("The server is shutting down.", retry_after=5.0, reason="SHUTTING_DOWN")
        job_id = job_id or uuid.uuid4().hex
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already active")
        if not self._free_slots and len(self._queue) >= self.max_queued:
            raise ResourceExhausted(
                f"All {self.max_running} workers are busy and {self.max_queued} jobs are queued.",
                retry_after=self._retry_estimate(),
                reason="RUN_CAPACITY_EXHAUSTED",
                metadata={"max_running": str(self.max_running), "max_queued": str(self.max_queued)},
            )
        job = _Job(job_id, fn, payload, self._loop.create_future(), JobSnapshot(job_id, JobState.QUEUED))
        job.outcome.add_done_callback(_mark_retrieved)
        self._jobs[job_id] = job
        if self._free_slots:
            self._launch(job)
        else:
            self._queue.append(job)
        self._report_load()
        return JobHandle(self, job)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or ask a running one to stop; False if it is not active."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if job in self._queue:
            self._queue.remove(job)
            self._finish(job, JobState.CANCELLED, error=Cancelled(f"Job {job_id} was cancelled."))
            self._report_load()
        elif job.slot is not None:
            assert self._cancel_flags is not None
            self._cancel_flags[job.slot] = 1
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
        assert self._cancel_flags is not None
        job.slot = self._free_slots.pop()
        self._cancel_flags[job.slot] = 0
        assert self._loop is not None
        driver = self._loop.create_task(self._drive(job), name=f"job-{job.job_id}")
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)

    async def _drive(self, job: _Job) -> None:
        """Run one job in the pool and settle its outcome."""
        assert self._pool is not None and job.slot is not None
        reporter = Reporter(job.job_id, job.slot, self._progress_interval)
        try:
            value = await asyncio.wrap_future(
                self._pool.submit(_run_in_worker, job.fn, job.payload, reporter)
            )
        except BrokenProcessPool as error:
            log.error("worker process died while running job %s; replacing the pool", job.job_id)
            self._replace_broken_pool()
            self._finish(job, JobState.FAILED, error=error)
        except JobCancelled:
            await self._await_last_messages(job)
            self._finish(job, JobState.CANCELLED, error=Cancelled(f"Job {job.job_id} was cancelled."))
        except Exception as error:
            await self._await_last_messages(job)
            log.warning("job %s failed: %r", job.job_id, error)
            self._finish(job, JobState.FAILED, error=error)
        else:
            await self._await_last_messages(job)
            self._finish(job, JobState.SUCCEEDED, value=value)
        finally:
            self._release(job)

    async def _await_last_messages(self, job: _Job) -> None:
        """Results and progress use different pipes; let the job's final progress land before its end."""
        try:
            await asyncio.wait_for(job.worker_finished.wait(), FINISH_MARKER_WAIT_S)
        except TimeoutError:
            log.warning("job %s ended without its final progress message", job.job_id)

    def _replace_broken_pool(self) -> None:
        broken = self._pool
        if broken is not None and not self._closing:
            self._pool = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)

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

    def _read_messages(self) -> None:
        """Reader thread: pass every worker message to the event loop until the stop signal."""
        assert self._loop is not None
        while True:
            message = self._messages.get()
            if message is None:
                return
            self._loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind, job_id, *rest = message
        job = self._jobs.get(job_id)
        if job is None:
            return  # a late message from a job already settled
        if kind == "started":
            job.started_at = time.monotonic()
            self._publish(job, replace(job.snapshot, state=JobState.RUNNING))
        elif kind == "progress":
            done, total, info = rest
            self._publish(job, replace(job.snapshot, done=done, total=total, info=info))
        elif kind == "finished":
            job.worker_finished.set()


def _mark_retrieved(outcome: asyncio.Future[Any]) -> None:
    """Outcomes nobody awaits are still recorded in the snapshot and logged; don't also warn at GC."""
    if not outcome.cancelled():
        outcome.exception()
