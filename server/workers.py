"""Worker processes of the job runner: one spawned process per slot, bounded in memory, tied to the server.

Each worker is started with ``spawn`` (never ``fork``: forking a process that runs gRPC hangs) and talks to
the server over its own pipe, so a worker that dies, or is killed, takes nothing but its own job with it.
Before it runs anything the worker:

- asks the kernel to SIGKILL it when the server dies (``prctl(PR_SET_PDEATHSIG)``, Linux), and starts a
  watchdog thread that exits as soon as its parent changes (any system, and the gap before ``prctl``);
- caps its own address space (``RLIMIT_AS``), so a run that outgrows its estimate fails with
  ``MemoryError`` in that worker instead of growing until the kernel's OOM killer picks a victim;
- ignores Ctrl-C (the server stops its workers itself).

It then runs jobs one at a time: a job is a picklable ``fn(payload, reporter)``; the reporter sends
progress (throttled) over the pipe and reads the job's cancel flag, one byte of shared memory. Every
outcome goes back over the same pipe as the progress, so it can never overtake it.

This module is imported by the worker before any job code, so it uses the standard library only.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import pickle
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any, Protocol

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_CHECK_INTERVAL_S = 0.25
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# Worker -> server messages, each a tuple (kind, job_id, ...).
STARTED, PROGRESS, SUCCEEDED, FAILED, CANCELLED, OUT_OF_MEMORY = (
    "started", "progress", "succeeded", "failed", "cancelled", "out_of_memory")  # fmt: skip
RETIRING = frozenset({FAILED, CANCELLED, OUT_OF_MEMORY})  # the worker exits after sending one of these
READY = "ready"  # (READY, None): warmed up, waiting for jobs
EXITED = "exited"  # made by the server's reader when the pipe closes: (EXITED, None, exit code)


class JobCancelled(Exception):
    """Raised by a job function that noticed ``reporter.cancelled()``."""


class JobReporter(Protocol):
    """What a job function may call; ``Reporter`` implements it in the worker process."""

    def progress(self, done: int, total: int, **info: Any) -> None: ...

    def cancelled(self) -> bool: ...


# --- The worker side ---------------------------------------------------------------------------------


class Reporter:
    """The job's line to the server: cheap to call, and throttled.

    Progress is sent at most every ``min_interval`` seconds, except the first and the final
    (``done >= total > 0``) reports, which always go; what was held back is flushed when the job ends.
    """

    def __init__(self, job_id: str, connection: Connection, cancel_flag: Callable[[], bool], min_interval: float):
        self.job_id = job_id
        self._connection = connection
        self._cancel_flag = cancel_flag
        self._min_interval = min_interval
        self._last_sent = -math.inf
        self._held: tuple[int, int, dict[str, Any]] | None = None

    def progress(self, done: int, total: int, **info: Any) -> None:
        self._held = (int(done), int(total), info)
        final = total > 0 and done >= total
        if final or time.monotonic() - self._last_sent >= self._min_interval:
            self.flush()

    def cancelled(self) -> bool:
        return self._cancel_flag()

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def flush(self) -> None:
        if self._held is not None:
            self._connection.send((PROGRESS, self.job_id, *self._held))
            self._held = None
            self._last_sent = time.monotonic()


def worker_main(
    connection: Connection, cancel_flags: Any, slot: int, parent_pid: int, memory_bytes: int | None,
    progress_interval: float, warm_up: Callable[[], None] | None,
) -> None:  # fmt: skip
    """The worker process: tie to the server, cap memory, warm up, then run jobs until the pipe closes."""
    tie_to_parent(parent_pid)
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in SINGLE_THREADED:  # before NumPy is imported: BLAS gets one thread (jobs bring their own)
        os.environ.setdefault(name, "1")
    if warm_up is not None:
        warm_up()  # imports and compiled kernels, paid before the first job rather than by it
    connection.send((READY, None))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, job = message
        reporter = Reporter(job_id, connection, lambda: bool(cancel_flags[slot]), progress_interval)
        if not _run(job_id, job, reporter, connection):
            # A job that did not succeed may have left work running on other threads (chunks already under
            # way when it was cancelled or one failed), or its heap in pieces (MemoryError): exit at once,
            # without waiting for those threads, and let a fresh worker take the next job.
            os._exit(0)


_kept_between_jobs: dict[str, Callable[[], None]] = {}  # job function -> how to drop what it keeps


def keep_between_jobs(fn: Callable[..., Any], drop: Callable[[], None]) -> None:
    """``fn`` keeps data in this worker from one of its jobs to the next (a cache); ``drop`` frees it before a
    job of another function runs, as that job was admitted against the whole worker's memory."""
    _kept_between_jobs[_qualified(fn)] = drop


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _run(job_id: str, job: bytes, reporter: Reporter, connection: Connection) -> bool:
    """Run one pickled ``(fn, payload)`` and send its outcome; True if it succeeded."""
    connection.send((STARTED, job_id))
    try:
        fn, payload = pickle.loads(job)
        for owner, drop in _kept_between_jobs.items():
            if owner != _qualified(fn):
                drop()
        value = fn(payload, reporter)
        reporter.flush()
        outcome: tuple[Any, ...] = (SUCCEEDED, job_id, value)
    except JobCancelled as stop:
        outcome = (CANCELLED, job_id, str(stop))
    except MemoryError:
        outcome = (OUT_OF_MEMORY, job_id)
    except BaseException as error:  # anything the job raises is the job's failure, not the worker's
        outcome = (FAILED, job_id, _picklable(error))
    try:
        connection.send(outcome)
    except MemoryError:
        connection.send((OUT_OF_MEMORY, job_id))
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        connection.send((FAILED, job_id, RuntimeError(f"the job's outcome could not be sent: {error!r}")))
    return outcome[0] == SUCCEEDED


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def tie_to_parent(parent_pid: int) -> None:
    """Die with the server: the kernel's parent-death signal where there is one, and a watchdog thread."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); relying on the watchdog", ctypes.get_errno())
    if os.getppid() != parent_pid:
        os._exit(1)  # the server died before the signal was armed
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_INTERVAL_S)
    os._exit(1)


# --- The server side ---------------------------------------------------------------------------------

OnMessage = Callable[["WorkerProcess", tuple[Any, ...]], None]


class WorkerProcess:
    """The server's handle on the worker of one slot. Start it, send it jobs, kill it.

    Messages from the worker (and a final ``(EXITED, None, exit code)`` when its pipe closes) are read by
    a thread and handed to ``on_message(worker, message)`` on the event loop, in order. Start workers from
    the event loop's thread: the kernel's parent-death signal fires when the *thread* that started the
    worker ends.
    """

    def __init__(
        self, context: SpawnContext, slot: int, cancel_flags: Any, *, memory_bytes: int | None,
        progress_interval: float, warm_up: Callable[[], None] | None, loop: Any, on_message: OnMessage,
    ):  # fmt: skip
        self.slot = slot
        self._loop = loop
        self._on_message = on_message
        self._connection, child_end = context.Pipe(duplex=True)
        self._process = context.Process(
            target=worker_main,
            args=(child_end, cancel_flags, slot, os.getpid(), memory_bytes, progress_interval, warm_up),
            name=f"equihome-worker-{slot}",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self.killed = False  # by the server (a cancel that did not land in time, or shutdown)
        self.ready = False  # it said READY: started and warmed up
        self._reader = threading.Thread(target=self._read, name=f"equihome-worker-{slot}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.is_alive() and not self.killed

    def send(self, job_id: str, fn: Callable[[Any, JobReporter], Any], payload: Any) -> None:
        """Hand the worker a job (it runs one at a time). Blocking: call it from a thread."""
        self._connection.send((job_id, pickle.dumps((fn, payload), protocol=pickle.HIGHEST_PROTOCOL)))

    def kill(self) -> None:
        """SIGKILL the worker; its job, if any, ends when the pipe closes."""
        self.killed = True
        if self._process.is_alive():
            self._process.kill()

    def stop(self, timeout: float) -> None:
        """Ask an idle worker to exit, then kill it if it has not within ``timeout``. Blocking."""
        try:
            self._connection.send(None)
        except OSError:
            pass  # already gone
        self._process.join(timeout)
        if self._process.is_alive():
            self.kill()
            self._process.join()
        self._reader.join()
        self._connection.close()

    def _read(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                break
            except Exception as error:  # an unreadable message: the worker is no longer trustworthy
                log.error("unreadable message from worker %s: %r", self._process.pid, error)
                self._process.kill()
                break
            self._deliver(message)
        self._process.join()  # the pipe stays open: a job may be being sent (it fails with BrokenPipeError)
        self._deliver((EXITED, None, self._process.exitcode))

    def _deliver(self, message: tuple[Any, ...]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_message, self, message)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting any more
