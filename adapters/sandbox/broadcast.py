"""One broadcaster per system: numbered event frames fanned out to subscribed sockets.

Publishing never waits for a socket. Each subscription has its own queue of at most
``queue_size`` event frames; a subscription whose queue is full is detached and asked to close
(1008, "slow consumer"), so one slow client costs the others nothing.

The broadcaster remembers its latest frames and how many sockets each one was written to intact
(``deliveries``), so a test can tell the events that reached a client from those no socket carried.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.sandbox.frames import EventFrame, utc_timestamp
from adapters.sandbox.systems import ALL_CHANNELS, System

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
KEPT_DELIVERIES = 100_000


@dataclass(frozen=True)
class CloseRequest:
    code: int
    reason: str


class Wake:
    """Queued to make a socket's sender re-read the fault settings."""


WAKE = Wake()
QueueItem = EventFrame | str | CloseRequest | Wake  # str = an encoded control frame


@dataclass
class FrameDelivery:
    """A published frame and the number of sockets it was written to intact."""

    frame: EventFrame
    sockets: int = 0


class Subscription:
    """One socket's channels and outgoing queue."""

    def __init__(self, system: System, channels: Mapping[str, tuple[str, ...]], queue_size: int):
        self.system = system
        self.channels: set[str] = set()
        self._events_of = channels
        self._queue_size = queue_size
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue()  # bounded by hand: control items always fit
        self._queued_events = 0
        self.closing: CloseRequest | None = None

    def wants(self, event: str) -> bool:
        if ALL_CHANNELS in self.channels:
            return True
        return any(event in self._events_of.get(channel, ()) for channel in self.channels)

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
    def __init__(
        self, system: System, channels: Mapping[str, tuple[str, ...]], queue_size: int, *, frame_ids: bool
    ):
        self.system = system
        self.channels = channels
        self._queue_size = queue_size
        self._frame_ids = frame_ids
        self._ids = itertools.count(1)
        self._subscriptions: set[Subscription] = set()
        self._deliveries: deque[FrameDelivery] = deque(maxlen=KEPT_DELIVERIES)
        self._by_id: dict[int, FrameDelivery] = {}

    @property
    def subscriptions(self) -> Iterable[Subscription]:
        return tuple(self._subscriptions)

    def attach(self) -> Subscription:
        subscription = Subscription(self.system, self.channels, self._queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: str, data: dict[str, Any]) -> EventFrame:
        frame = EventFrame(
            id=next(self._ids), event=event, data=data, timestamp=utc_timestamp(), with_ids=self._frame_ids
        )
        self._remember(frame)
        for subscription in self.subscriptions:
            if subscription.wants(frame.event) and not subscription.offer(frame):
                self.detach(subscription)
                subscription.close(CLOSE_POLICY_VIOLATION, "slow consumer: send queue full")
        return frame

    def sent(self, frame: EventFrame) -> None:
        """``frame`` was written intact to one more socket."""
        delivery = self._by_id.get(frame.id)
        if delivery is not None:
            delivery.sockets += 1

    def deliveries(self) -> list[FrameDelivery]:
        """The latest frames published, oldest first, with the sockets each reached."""
        return list(self._deliveries)

    def _remember(self, frame: EventFrame) -> None:
        if len(self._deliveries) == self._deliveries.maxlen:
            del self._by_id[self._deliveries[0].frame.id]
        delivery = FrameDelivery(frame)
        self._deliveries.append(delivery)
        self._by_id[frame.id] = delivery

    def close_all(self, code: int, reason: str) -> None:
        for subscription in self.subscriptions:
            self.detach(subscription)
            subscription.close(code, reason)

    def wake_all(self) -> None:
        for subscription in self.subscriptions:
            subscription.wake()
