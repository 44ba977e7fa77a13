"""EventService streams under concurrency: 10,000 events from two publishers, heartbeats every 10 ms,
several subscribers (one filtered, one slow enough to be cut off and resume). No subscriber misses or
repeats an event, and no heartbeat's cursor passes an event it has not delivered. A real bus on a real
SQLite log; the streams are the ones EventService serves (``event_stream``)."""

from __future__ import annotations

import asyncio
import bisect
import random
from dataclasses import dataclass, field
from pathlib import Path

from datetime import timedelta

from prometheus_client import CollectorRegistry

from equihome.events.v1 import event_pb2, event_service_pb2
from server.errors import ResourceExhausted
from server.integration.bus import EventBus
from server.integration.event_keys import EventFilter
from server.integration.metrics import BusMetrics
from server.integration.subscription import event_stream
from server.store import Store

EVENTS = 10_000
HEARTBEAT_S = 0.01
WANTED = event_pb2.EVENT_TYPE_SIMULATION_COMPLETED


@dataclass
class Received:
    events: list[int] = field(default_factory=list)  # cursors, in arrival order
    resumes: int = 0
    bad_heartbeats: list[tuple[int, int]] = field(default_factory=list)  # (heartbeat cursor, newest delivered)
    heartbeats: int = 0


def publish(bus: EventBus, index: int) -> None:
    if index % 3 == 0:
        bus.publish_engine_event(event_pb2.SimulationCompleted(name=f"simulations/{index}"))
    else:
        bus.publish_engine_event(event_pb2.SimulationProgressed(name=f"simulations/{index}"))


async def consume(bus: EventBus, event_filter: EventFilter, expected: set[int], into: Received, pause_s: float) -> None:
    """Read until every expected cursor arrived, or a heartbeat says the stream has covered the last one,
    resuming from the last cursor after a cut-off."""
    ordered = sorted(expected)
    seen: set[int] = set()
    position: int | None = None
    while len(seen) < len(expected):
        try:
            async for raw in event_stream(bus, event_filter, position, HEARTBEAT_S):
                event = event_service_pb2.SubscribeEventsResponse.FromString(raw).event
                cursor = int(event.cursor)
                if event.HasField("heartbeat"):
                    into.heartbeats += 1
                    due = bisect.bisect_right(ordered, cursor)  # expected events up to the heartbeat's cursor
                    if due > len(seen):
                        into.bad_heartbeats.append((cursor, max(seen, default=0)))
                    if cursor >= EVENTS:
                        return  # everything published is behind this heartbeat
                else:
                    into.events.append(cursor)
                    seen.add(cursor)
                position = cursor
                if len(seen) == len(expected):
                    return
                if pause_s:
                    await asyncio.sleep(random.uniform(0, pause_s))
        except ResourceExhausted:
            into.resumes += 1  # too slow: resubscribe after the last cursor, as a client does


async def test_no_subscriber_misses_or_repeats_an_event_whatever_the_heartbeats_and_publishers(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    bus = EventBus(store, BusMetrics(CollectorRegistry()), subscriber_buffer=200, retention=timedelta(hours=1))
    await bus.start()
    everything = set(range(1, EVENTS + 1))
    wanted = {cursor for cursor in everything if (cursor - 1) % 3 == 0}  # publish order = cursor order, see below
    subscribers = {
        "fast": (EventFilter(), everything, 0.0),
        "also fast": (EventFilter(), everything, 0.0),
        "filtered": (EventFilter.of([WANTED]), wanted, 0.0),
        "slow": (EventFilter(), everything, 0.0005),
    }
    received = {name: Received() for name in subscribers}
    readers = [
        asyncio.create_task(consume(bus, event_filter, expected, received[name], pause))
        for name, (event_filter, expected, pause) in subscribers.items()
    ]
    while bus.attachments < len(subscribers):
        await asyncio.sleep(0.001)

    async def publisher(indices: range) -> None:
        for index in indices:
            publish(bus, index)
            if random.random() < 0.02:
                await asyncio.sleep(random.uniform(0, 0.02))  # let heartbeats fall due between bursts

    # One publisher at a time keeps cursor order equal to index order (so the filter's share is known);
    # the two still interleave with the writer, the heartbeats and the readers.
    first, second = range(0, EVENTS // 2), range(EVENTS // 2, EVENTS)
    await publisher(first)
    await publisher(second)
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    await bus.close()
    await store.close()

    for name, (_, expected, _) in subscribers.items():
        got = received[name]
        assert len(got.events) == len(set(got.events)), f"{name} received an event twice"
        assert set(got.events) == expected, f"{name} missed {len(expected - set(got.events))} events"
        assert got.events == sorted(got.events), f"{name} received events out of order"
        assert got.bad_heartbeats == [], f"{name}: heartbeats passed undelivered events {got.bad_heartbeats[:3]}"
    assert sum(got.heartbeats for got in received.values()) > 0
    assert received["slow"].resumes >= 1  # it really was cut off and resumed
