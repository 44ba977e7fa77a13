"""One broadcaster per system: numbered event frames fanned out to subscribed sockets.

Publishing never waits for a socket. Each subscription has its own queue of at most
``queue_size`` event frames; a subscription whose queue is full is detached and asked to close
(1008, "slow consumer"), so one slow client costs the others nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapters.sandbox.frames import EventFrame, utc_timestamp
from adapters.sandbox.systems import ALL_CHANNELS, System

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class CloseRequest:
    code: int
    reason: str


class Wake:
    """Queued to make a socket's sender re-read the fault settings."""


WAKE = Wake()
QueueItem = EventFrame | str | CloseRequest | Wake  # str = an encoded control frame


class Subscription:
    """One socket's channels and outgoing queue."""

    def __init__(self, system: System, queue_size: int):
        self.system = system
        self.channels: set[str] = set()
        self._queue_size = queue_size
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue()  # bounded by hand: control items always fit
        self._queued_events = 0
        self.closing: CloseRequest | None = None

    def wants(self, channel: str) -> bool:
        return ALL_CHANNELS in self.channels or channel in self.channels

    def offer(self, frame: EventFrame) -> bool:
        """Queue an event frame; False when the queue is full."""
        if self._queued_events >= self._queue_size:
            return False
        self._queued_events += 1
        self._queue.put_nowait(frame)
        return True

    def reply(self, control_text: str) -> None:
        self._queue.put_nowait(control_text)

    def wake(self) -> None:
        self._queue.put_nowait(WAKE)

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close the socket next, dropping whatever is still queued."""
        if self.closing is not None:
            return
        self.closing = CloseRequest(code, reason)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued_events = 0
        self._queue.put_nowait(self.closing)

    async def next_item(self) -> QueueItem:
        item = await self._queue.get()
        if isinstance(item, EventFrame):
            self._queued_events -= 1
        return item


class Broadcaster:
    def __init__(self, system: System, queue_size: int):
        self.system = system
        self._queue_size = queue_size
        self._ids = itertools.count(1)
        self._subscriptions: set[Subscription] = set()

    @property
    def subscriptions(self) -> Iterable[Subscription]:
        return tuple(self._subscriptions)

    def attach(self) -> Subscription:
        subscription = Subscription(self.system, self._queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: str, data: dict[str, Any]) -> EventFrame:
        frame = EventFrame(
            id=next(self._ids),
            channel=self.system.channel_of(event),
            event=event,
            data=data,
            timestamp=utc_timestamp(),
        )
        for subscription in self.subscriptions:
            if subscription.wants(frame.channel) and not subscription.offer(frame):
                self.detach(subscription)
                subscription.close(CLOSE_POLICY_VIOLATION, "slow consumer: send queue full")
        return frame

    def close_all(self, code: int, reason: str) -> None:
        for subscription in self.subscriptions:
            self.detach(subscription)
            subscription.close(code, reason)

    def wake_all(self) -> None:
        for subscription in self.subscriptions:
            subscription.wake()
