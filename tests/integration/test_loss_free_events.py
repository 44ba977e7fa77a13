"""Loss-free consumption from a guide-exact peer, end to end, over more than 1,000 events.

The strict sandbox (no acknowledgement, no ids, optional fields left out) drops every socket after 25
events, tokens live 3 s (so every socket is rotated about every 1.5 s), and now and then all sockets of
the TLS or the PMS go silent (open, answering pings, carrying nothing). The service keeps two sockets per
system. Then:

* every event that reached at least one socket reaches the gRPC subscriber exactly once, in order (events
  whose content is identical to the one before them cannot be told apart; they are reported);
* what no socket carried is repaired by the first reconciliation after the silence, published as events
  with origin RECONCILIATION, and counted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.frames import decode_frame, event_from_frame
from adapters.sandbox import SandboxConfig, running_sandbox
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2
from server.integration.mirror import LOAN, MARKET_RISK, METRICS, ZONE
from tests.integration.conftest import Service, eventually

ROUNDS = 10
LIVE_PER_ROUND = 99
SILENT_PER_ROUND = 9
PAUSE_S = 0.004
ZONES = {"green": 1, "orange": 2, "red": 3}


async def test_every_event_that_reached_a_socket_arrives_once_and_the_rest_through_reconciliation(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    config = SandboxConfig(events_per_second=0, token_lifetime_seconds=3)
    async with running_sandbox(config) as sandbox:
        sandbox.set_faults({system.value: {"ws_drop_after_events": 25} for system in Upstream})
        service = await make_service(
            sandbox, integration_sync=True, integration_reconcile_interval_s=1.0, integration_poll_interval_s=1.0
        )
        await service.connected()
        await eventually(lambda: mirror_matches_world(service, Upstream.PMS))
        call = await service.subscribe(heartbeat_interval={"seconds": 300})
        received: list[event_pb2.Event] = []
        reader = asyncio.create_task(collect(call, received))

        systems = [Upstream.TRAFFIC_LIGHT, Upstream.PMS, Upstream.UNDERWRITING]
        for round_number in range(ROUNDS):
            for index in range(LIVE_PER_ROUND):
                assert sandbox.emit(systems[index % 3].value) is not None
                await asyncio.sleep(PAUSE_S)
            silenced = systems[round_number % 2]  # the TLS and the PMS in turn
            sandbox.set_faults({silenced.value: {"ws_silent": True}})
            for _ in range(SILENT_PER_ROUND):
                assert sandbox.emit(silenced.value) is not None
                await asyncio.sleep(PAUSE_S)
            await asyncio.sleep(0.05)  # the sockets' senders pass the silenced frames by
            sandbox.set_faults({silenced.value: {"ws_silent": False}})
            # The first reconciliation that starts after the silence repairs what it hid.
            await reconciled_since(service, silenced, time.time_ns() // 1000)
            assert await mirror_matches_world(service, silenced), f"round {round_number}: {silenced} not repaired"

        for system in (Upstream.TRAFFIC_LIGHT, Upstream.PMS):
            await reconciled_since(service, system, time.time_ns() // 1000)
        reached = {system: [d.frame for d in sandbox.deliveries(system.value) if d.sockets > 0] for system in systems}
        lost = sum(d.sockets == 0 for system in systems for d in sandbox.deliveries(system.value))
        live_count = sum(len(frames) for frames in reached.values())
        await eventually(lambda: sum(e.origin == event_pb2.EVENT_ORIGIN_LIVE for e in received) >= live_count, timeout=30)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        reader.cancel()

    total = sum(len(sandbox.deliveries(system.value)) for system in systems)
    assert total >= 1000 and lost >= ROUNDS * SILENT_PER_ROUND
    repeats = 0
    for system in systems:
        live = [e for e in received if e.source == system.proto and e.origin == event_pb2.EVENT_ORIGIN_LIVE]
        repeats += assert_once_in_order(system, reached[system], live)
    assert repeats <= 3, "identical consecutive events are rare; many means the merge is wrong"
    recovered = [e for e in received if e.origin == event_pb2.EVENT_ORIGIN_RECONCILIATION]
    counted = sum(service.sample("equihome_upstream_ws_events_missed_total", system=s.value) for s in systems)
    assert recovered and len(recovered) == counted
    reconnects = service.sample("equihome_upstream_ws_connects_total", system="pms", outcome="ok")
    assert reconnects >= 2 * total / 3 / 25  # the drop knob and the rotations really replaced sockets


async def collect(call: Any, into: list[event_pb2.Event]) -> None:
    async for response in call:
        if response.event.WhichOneof("payload") != "heartbeat":
            into.append(response.event)


def assert_once_in_order(system: Upstream, frames: list[Any], delivered: list[event_pb2.Event]) -> int:
    """``delivered`` is ``frames`` (what reached a socket), each once and in order, except that a frame
    identical to the one before it may have been taken for it. Returns how many such repeats were merged."""
    expected = [event_from_frame(system, decode_frame(frame.text), datetime.now(UTC)) for frame in frames]
    case = lambda event: getattr(event, event.WhichOneof("payload"))  # noqa: E731
    repeats, position = 0, 0
    for index, event in enumerate(expected):
        if position < len(delivered) and case(delivered[position]) == case(event):
            position += 1
        elif index > 0 and frames[index].text == frames[index - 1].text:
            repeats += 1  # indistinguishable from the previous event
        else:
            raise AssertionError(f"{system}: event {index} of {len(expected)} ({frames[index].text}) not delivered in order")
    assert position == len(delivered), f"{system}: {len(delivered) - position} events delivered twice or never sent"
    return repeats


async def reconciled_since(service: Service, system: Upstream, since_us: int) -> None:
    async def done() -> bool:
        newest = await service.runtime.mirror.reconciliations(system.value)
        return bool(newest) and newest[0].start_time.ToMicroseconds() >= since_us and newest[0].complete

    await eventually(done, timeout=20)


async def mirror_matches_world(service: Service, system: Upstream) -> bool:
    world, mirror = service.sandbox.world, service.runtime.mirror
    if system is Upstream.PMS:
        loans = await mirror.items(LOAN, world.portfolio.id)
        metrics = await mirror.items(METRICS, world.portfolio.id)
        return (
            {loan_id: (item.message.loan_amount, item.message.zone) for loan_id, item in loans.items()}  # type: ignore[attr-defined]
            == {loan.id: (loan.amount, ZONES[loan.property.zone.value]) for loan in world.portfolio.loans.values()}
            and world.portfolio.id in metrics
            and metrics[world.portfolio.id].message.irr == world.portfolio.metrics["irr"]  # type: ignore[attr-defined]
        )
    risks = await mirror.items(MARKET_RISK)
    zones = await mirror.items(ZONE)
    return {region: item.message.risk_score for region, item in risks.items()} == {  # type: ignore[attr-defined]
        region.id: region.risk_score for region in world.regions.values()
    } and all(
        property_id in world.properties and item.message.zone == ZONES[world.properties[property_id].zone.value]  # type: ignore[attr-defined]
        for property_id, item in zones.items()
    )
