"""Small asyncio helpers shared by the clock, the sockets and the servers."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("adapters.sandbox")


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait until it has finished; re-raise the error it failed with, if any."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def report_crash(task: asyncio.Task[object]) -> None:
    """Done-callback: log a background task that died of an error instead of letting it pass unseen."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=task.exception())
