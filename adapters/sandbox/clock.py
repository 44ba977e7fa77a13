"""The event clock of one system: publishes world changes at a configurable rate.

The clock keeps to its rate on average: it catches up on short delays, and after falling more than
a second behind it starts afresh instead of bursting. A rate of 0 pauses it; a new rate takes effect
at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from adapters.sandbox.tasks import cancel_and_wait, report_crash

MAX_LAG_SECONDS = 1.0


class EventClock:
    def __init__(self, name: str, rate: float, tick: Callable[[], object]):
        self._name = name
        self._rate = rate
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    @property
    def rate(self) -> float:
        return self._rate

    def start(self) -> None:
        if self._rate > 0:
            self._task = asyncio.create_task(self._run(self._rate), name=f"event clock {self._name}")
            self._task.add_done_callback(report_crash)

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("events per second must be >= 0")
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._rate = rate
        self.start()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        interval = 1 / rate
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._tick()
            next_at = max(next_at + interval, loop.time() - MAX_LAG_SECONDS)
