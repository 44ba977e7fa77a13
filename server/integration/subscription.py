"""One SubscribeEvents stream: replay from the log, switch to live without a gap, heartbeats, cut-off.

Without a start cursor the stream begins at the bus head. With one, the subscriber is attached to the
bus *first* (so live events start buffering), then the log is replayed from the cursor until a read
comes back short; everything fanned out meanwhile is in the buffer, and buffered events the replay
already covered are skipped by cursor. If the buffer overflowed during replay, it is dropped and the
replay continues from where it was. The switch to live happens between two awaits, so no event can
fall between replay and buffer.

The stream ends (OK) once the bus ends all streams at shutdown. It yields serialised
``SubscribeEventsResponse`` messages (shared by all subscribers). While nothing is delivered for
``heartbeat_s`` it yields a heartbeat whose cursor is the newest event the bus has offered this
subscriber, and only when its buffer is empty and it was not cut off: every event up to that cursor was
delivered or filtered out, so resuming from it skips nothing. (A heartbeat due while an event waits in
the buffer gives way to the event; one due as the subscriber is cut off gives way to the error.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.errors import ResourceExhausted
from server.integration.bus import REPLAY_PAGE, EventBus, Subscriber, heartbeat
from server.integration.event_keys import EventFilter

TOO_SLOW_RETRY_AFTER_S = 1.0


async def event_stream(
    bus: EventBus, event_filter: EventFilter, start_after: int | None, heartbeat_s: float
) -> AsyncIterator[bytes]:
    if start_after is not None:
        await bus.check_resumable(start_after)
    subscriber = bus.attach(event_filter, catching_up=start_after is not None)
    try:
        position = bus.head
        if start_after is not None:
            position = start_after
            async for response, position in _replay(bus, subscriber, start_after):
                if bus.streams_ended:
                    return
                yield response
            subscriber.catching_up = False
        while not bus.streams_ended:
            while subscriber.buffer and not bus.streams_ended:
                delivery = subscriber.buffer.popleft()
                if delivery.cursor > position:
                    position = delivery.cursor
                    yield delivery.response
            if subscriber.cut_off:
                raise ResourceExhausted(
                    "This subscriber did not keep up with the event stream; "
                    "resubscribe with the last cursor.",
                    TOO_SLOW_RETRY_AFTER_S,
                    reason="SUBSCRIBER_TOO_SLOW",
                    metadata={"cursor": str(position), "buffer": str(subscriber.capacity)},
                )
            subscriber.ready.clear()
            try:
                async with asyncio.timeout(heartbeat_s):
                    await subscriber.ready.wait()
            except TimeoutError:
                if not (bus.streams_ended or subscriber.buffer or subscriber.cut_off):
                    position = max(position, subscriber.offered)
                    yield heartbeat(position)
    finally:
        bus.detach(subscriber)


async def _replay(
    bus: EventBus, subscriber: Subscriber, start_after: int
) -> AsyncIterator[tuple[bytes, int]]:
    """Matching stored events after ``start_after``, with the position reached after each."""
    position = start_after
    while True:
        subscriber.overflowed = False
        while True:
            page = await bus.read_after(position, REPLAY_PAGE)
            for delivery in page:
                if delivery.cursor != position + 1:
                    raise bus.expired(position)  # pruned while we replayed
                position = delivery.cursor
                if delivery.key is not None and subscriber.filter.matches(delivery.key):
                    yield delivery.response, position
            if len(page) < REPLAY_PAGE:
                break
        if not subscriber.overflowed:
            return
        subscriber.buffer.clear()  # the live buffer overflowed while we replayed: keep replaying
