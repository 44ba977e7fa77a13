"""Work that runs to its end even when the caller awaiting it is cancelled (its deadline passed, it hung up).

An upstream call abandoned half-way would count as an outage, leave the circuit breaker half-open, and
lose an answer that could have filled the cache; so the work runs in a task of its own, and the caller
only stops waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class ShieldedWork:
    """Runs coroutines shielded from their callers' cancellation, and can cancel what is left at close."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # seen: the caller may have gone, and the failure was recorded and logged

    async def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
