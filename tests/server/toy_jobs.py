"""Job functions for the job runner tests. They live in a module so spawned workers can import them."""

from __future__ import annotations

import time
from typing import Any

from server.jobs import JobCancelled, JobReporter
from server.workers import keep_between_jobs

STEP_S = 0.01


def count(payload: dict[str, Any], reporter: JobReporter) -> dict[str, int]:
    """Counts to ``payload["n"]`` in small steps, reporting each one."""
    total = int(payload["n"])
    for done in range(1, total + 1):
        time.sleep(STEP_S)
        reporter.progress(done, total, phase="counting")
    return {"counted": total}


def spin(payload: dict[str, Any], reporter: JobReporter) -> str:
    """Works in 10 ms chunks, checking for cancellation between them; gives up after ``max_steps``."""
    for step in range(int(payload.get("max_steps", 2000))):
        if reporter.cancelled():
            raise JobCancelled(f"stopped after {step} steps")
        reporter.progress(step, 0)
        time.sleep(STEP_S)
    return "never cancelled"


def fail(payload: str, reporter: JobReporter) -> None:
    reporter.progress(1, 2)
    raise ValueError(f"bad payload: {payload}")


def stubborn(payload: dict[str, Any], reporter: JobReporter) -> str:
    """Never looks at its cancel flag (like one long chunk of work): only killing its worker stops it."""
    reporter.progress(1, 0)
    time.sleep(float(payload.get("seconds", 60)))
    return "finished"


def hog(payload: dict[str, Any], reporter: JobReporter) -> int:
    """Allocates ``payload["mib"]`` MiB, touching every page, and returns how many it holds."""
    reporter.progress(1, 0)
    blocks = [bytearray(1024 * 1024) for _ in range(int(payload["mib"]))]
    return len(blocks)


def pid(payload: Any, reporter: JobReporter) -> int:
    """The worker's process id."""
    import os

    return os.getpid()


_kept: list[Any] = []  # what ``remember`` keeps in its worker from one job to the next


def remember(payload: Any, reporter: JobReporter) -> int:
    """Keeps ``payload`` in the worker; returns how many are kept."""
    _kept.append(payload)
    return len(_kept)


def kept(payload: Any, reporter: JobReporter) -> int:
    return len(_kept)


keep_between_jobs(remember, _kept.clear)
