"""The event bus: every event is stored in the EventLog, gets its cursor there, then reaches subscribers.

Publishing never waits: ``publish`` queues the event and one writer task appends whatever has queued up
in one transaction (``EventLog.append_many``), then fans the batch out in cursor order. Each event is
serialised once, as the ``SubscribeEventsResponse`` every subscriber receives, so fan-out costs a queue
append per subscriber. Subscribers have bounded buffers; one that overflows is cut off (the stream
ends with SUBSCRIBER_TOO_SLOW) without holding up the others. A subscriber still replaying the log
is not cut off: its live buffer is dropped and it replays further (the log has everything).

The bus owns the ``events`` table: its rows carry the topic ``BUS_TOPIC`` and an ``Event`` without
cursor. Rows of other topics are stepped over. Retention: ``prune`` removes events older than the
retention; resuming before them is ``CURSOR_EXPIRED``.

Our own events: ``publish_engine_event(SimulationProgressed | SimulationCompleted |
ImpactAnalysisCompleted)`` stamps source and time and publishes; see docs/integration.md.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.type.v1 import system_pb2
from server.errors import FailedPrecondition, InvalidArgument
from server.integration.event_keys import EventFilter, EventKey, event_key
from server.integration.metrics import BusMetrics
from server.store import EventLog, Store

log = logging.getLogger(__name__)

T = TypeVar("T")
BUS_TOPIC = "equihome.events.v1.Event"
MAX_BATCH = 1000
REPLAY_PAGE = 500
CLOSE_TIMEOUT_S = 5.0

EnginePayload = (
    event_pb2.SimulationProgressed
    | event_pb2.SimulationCompleted
    | event_pb2.ImpactAnalysisCompleted
    | event_pb2.OptimizationCompleted
    | event_pb2.StudyCompleted
)
_ENGINE_FIELDS = {
    event_pb2.SimulationProgressed: "simulation_progressed",
    event_pb2.SimulationCompleted: "simulation_completed",
    event_pb2.ImpactAnalysisCompleted: "impact_analysis_completed",
    event_pb2.OptimizationCompleted: "optimization_completed",
    event_pb2.StudyCompleted: "study_completed",
}


@dataclass(frozen=True)
class Delivery:
    """One stored event as subscribers receive it."""

    cursor: int
    key: EventKey | None  # None: a row the bus did not write (never delivered)
    response: bytes  # the serialised SubscribeEventsResponse


@dataclass(eq=False)
class Subscriber:
    """One subscription's filter and bounded buffer; the bus offers it every event, in cursor order."""

    filter: EventFilter
    capacity: int
    catching_up: bool
    offered: int  # the newest cursor the bus has offered this subscriber (matching or not)
    buffer: deque[Delivery] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False  # while catching up: the buffer was dropped, replay further
    cut_off: bool = False  # live and too slow: the stream must end

    def offer(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` if it matches; False when this subscriber has just been cut off."""
        self.offered = delivery.cursor
        if self.cut_off or delivery.key is None or not self.filter.matches(delivery.key):
            return True
        if len(self.buffer) < self.capacity:
            self.buffer.append(delivery)
            self.ready.set()
            return True
        self.buffer.clear()
        if self.catching_up:
            self.overflowed = True
            return True
        self.cut_off = True
        self.ready.set()
        return False


@dataclass
class _Pending:
    event: event_pb2.Event
    origin_time: float | None


class EventBus:
    def __init__(self, store: Store, metrics: BusMetrics, *, subscriber_buffer: int, retention: timedelta):
        self._store = store
        self._log: EventLog = store.events
        self._metrics = metrics
        self._subscriber_buffer = subscriber_buffer
        self.retention = retention
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._subscribers: set[Subscriber] = set()
        self._writer: asyncio.Task[None] | None = None
        self.head = 0  # the newest cursor fanned out
        self.attachments = 0  # subscriptions attached since start
        self.streams_ended = False  # set at shutdown: every stream ends (OK) at its next step
        # Told (cursor, upstream origin time) of every event at fan-out; for measurements (bench/).
        self.fan_out_observers: list[Callable[[int, float | None], None]] = []

    async def start(self) -> None:
        self.head = await self.last_issued_cursor()
        self._writer = asyncio.create_task(self._write_forever(), name="event bus writer")
        self._writer.add_done_callback(_report_writer_crash)

    async def close(self) -> None:
        """Store what is still queued, then stop the writer."""
        if self._writer is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._pending.join()
        except TimeoutError:
            log.error("events not stored at shutdown", extra={"count": self._pending.qsize()})
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None

    # Publishing.

    def publish(self, event: event_pb2.Event, *, origin_time: float | None = None) -> None:
        """Queue ``event`` (payload, source and time set; no cursor). ``origin_time`` (epoch seconds) is
        when the upstream published it, for the lag metric."""
        event_key(event)  # refuse an event without payload here, not in the writer
        self._pending.put_nowait(_Pending(event, origin_time))
        self._metrics.pending.set(self._pending.qsize())

    def publish_engine_event(self, payload: EnginePayload) -> None:
        """Publish one of this service's own events (source SIMULATION_ENGINE, time now)."""
        event = event_pb2.Event(source=system_pb2.SYSTEM_SIMULATION_ENGINE, time=_now())
        getattr(event, _ENGINE_FIELDS[type(payload)]).CopyFrom(payload)
        self.publish(event)

    async def _write_forever(self) -> None:
        while True:
            batch = await take_batch(self._pending, MAX_BATCH)
            try:
                cursors = await self._append([item.event.SerializeToString() for item in batch])
                self._fan_out(batch, cursors)
            finally:
                for _ in batch:
                    self._pending.task_done()
            self._metrics.pending.set(self._pending.qsize())

    async def _append(self, payloads: list[bytes]) -> list[int]:
        """Append with retries: while the database refuses writes, delivery waits; nothing is dropped."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((sqlite3.OperationalError, OSError)),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.05),
            stop=stop_never,
            reraise=True,
            before_sleep=lambda state: log.error(
                "cannot store events; retrying", exc_info=state.outcome.exception() if state.outcome else None
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._log.append_many(payloads, topic=BUS_TOPIC)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _fan_out(self, batch: list[_Pending], cursors: list[int]) -> None:
        now = time.time()
        for item, cursor in zip(batch, cursors, strict=True):
            item.event.cursor = str(cursor)
            delivery = Delivery(cursor, event_key(item.event), _response(item.event))
            self.head = cursor
            for subscriber in list(self._subscribers):
                if not subscriber.offer(delivery):
                    self._subscribers.discard(subscriber)
                    self._metrics.cut_off.inc()
                    log.warning("event subscriber too slow; cut off", extra={"cursor": cursor})
            event_type = event_pb2.EventType.Name(delivery.key.type)  # type: ignore[union-attr]
            self._metrics.published.labels(type=event_type).inc()
            if item.origin_time is not None:
                self._metrics.upstream_lag.observe(max(0.0, now - item.origin_time))
            for observer in self.fan_out_observers:
                observer(cursor, item.origin_time)

    # Subscribing.

    def attach(self, event_filter: EventFilter, *, catching_up: bool) -> Subscriber:
        subscriber = Subscriber(event_filter, self._subscriber_buffer, catching_up, offered=self.head)
        self._subscribers.add(subscriber)
        self.attachments += 1
        self._metrics.subscribers.set(len(self._subscribers))
        return subscriber

    def end_streams(self) -> None:
        """Server shutdown: wake every subscription so its stream ends with OK (clients resume by cursor)."""
        self.streams_ended = True
        for subscriber in self._subscribers:
            subscriber.ready.set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def detach(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._metrics.subscribers.set(len(self._subscribers))

    async def read_after(self, cursor: int, limit: int = REPLAY_PAGE) -> list[Delivery]:
        """Stored events after ``cursor``, as deliveries; rows the bus cannot read are logged and skipped."""
        deliveries = []
        for record in await self._log.read_after(cursor, limit=limit):
            if record.topic != BUS_TOPIC:
                deliveries.append(Delivery(record.cursor, None, b""))
                continue
            try:
                event = event_pb2.Event.FromString(record.payload)
                event.cursor = str(record.cursor)
                deliveries.append(Delivery(record.cursor, event_key(event), _response(event)))
            except (DecodeError, ValueError) as error:
                self._metrics.unreadable.inc()
                where = {"cursor": record.cursor, "error": str(error)}
                log.error("unreadable event in the log; skipped", extra=where)
                deliveries.append(Delivery(record.cursor, None, b""))
        return deliveries

    async def check_resumable(self, cursor: int) -> None:
        """Raise unless every event after ``cursor`` is still stored."""
        issued = await self.last_issued_cursor()
        if cursor > issued:
            raise InvalidArgument(
                "start_after_cursor is not a cursor this service issued.",
                [("start_after_cursor", "newer than any event")],
                reason="FIELD_INVALID",
            )
        first, _ = await self._log.bounds()
        if cursor < issued and (first == 0 or first > cursor + 1):
            raise self.expired(cursor)

    def expired(self, cursor: int) -> FailedPrecondition:
        return FailedPrecondition(
            f"Events after cursor {cursor} are past the {self.retention} retention; "
            "resubscribe without a cursor and reconcile with Get/List calls.",
            reason="CURSOR_EXPIRED",
            metadata={"cursor": str(cursor), "retention": str(self.retention)},
        )

    async def last_issued_cursor(self) -> int:
        """The newest cursor ever issued, even if pruned since (SQLite's AUTOINCREMENT counter)."""

        def work(connection: sqlite3.Connection) -> int:
            row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return int(row[0]) if row else 0

        return await self._store.call(work)

    async def prune(self) -> int:
        deleted = await self._log.prune(max_age=self.retention)
        if deleted:
            log.info("old events pruned", extra={"deleted": deleted})
        return deleted


async def take_batch(queue: asyncio.Queue[T], limit: int) -> list[T]:
    """The next item of ``queue`` (waiting for one) and whatever else is queued, up to ``limit``."""
    batch = [await queue.get()]
    while len(batch) < limit and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


def _report_writer_crash(writer: asyncio.Task[None]) -> None:
    if not writer.cancelled() and writer.exception() is not None:
        log.critical(
            "the event bus writer failed: events are no longer stored or delivered",
            exc_info=writer.exception(),
        )


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _response(event: event_pb2.Event) -> bytes:
    return event_service_pb2.SubscribeEventsResponse(event=event).SerializeToString()


def heartbeat(cursor: int) -> bytes:
    """A heartbeat at ``cursor`` (the newest position the subscription has covered), serialised."""
    event = event_pb2.Event(
        cursor=str(cursor),
        time=_now(),
        source=system_pb2.SYSTEM_SIMULATION_ENGINE,
        heartbeat=event_pb2.Heartbeat(),
    )
    return _response(event)
