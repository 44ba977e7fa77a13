"""SubscribeEvents end to end: sandbox WebSockets -> adapters -> event log -> gRPC subscribers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.frames import decode_frame, event_from_frame
from adapters.sandbox import Sandbox, SandboxConfig, running_sandbox
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.type.v1 import system_pb2
from server.errors import unpack
from server.integration.runtime import EVENT_SERVICE, INTEGRATION_SERVICE
from tests.integration.conftest import Service, eventually, take
from tests.sandbox.support import subscribers

GUIDE_EVENTS = {system: system.events for system in Upstream}


def expected_event(system: Upstream, frame: Any) -> event_pb2.Event:
    """What the service must deliver for a sandbox frame: its data mapped to our message."""
    return event_from_frame(system, decode_frame(frame.text), datetime.now(UTC))


def same_payload(delivered: event_pb2.Event, expected: event_pb2.Event) -> bool:
    case = expected.WhichOneof("payload")
    return delivered.WhichOneof("payload") == case and getattr(delivered, case) == getattr(expected, case)


async def emit_paced(sandbox: Sandbox, plan: list[tuple[Upstream, str | None]], pause_s: float) -> list[tuple[Upstream, Any]]:
    """Emit the planned events ``pause_s`` apart; the frames, in order."""
    frames = []
    for system, event in plan:
        frame = sandbox.emit(system.value, event)
        assert frame is not None
        frames.append((system, frame))
        await asyncio.sleep(pause_s)
    return frames


async def test_every_upstream_event_arrives_typed_in_cursor_order(service: Service) -> None:
    call = await service.subscribe()
    frames = [(system, service.sandbox.emit(system.value, event)) for system in Upstream for event in system.events]

    events = await take(call, len(frames))

    cursors = [int(event.cursor) for event in events]
    assert cursors == list(range(cursors[0], cursors[0] + len(frames)))
    for (system, frame), event in zip(frames, events, strict=True):
        assert event.source == system.proto
        assert event.time.ToNanoseconds() > 0
        assert same_payload(event, expected_event(system, frame))
    call.cancel()


async def test_filters_select_types_portfolio_region_and_property(service: Service) -> None:
    head = service.runtime.bus.head
    zone = service.sandbox.emit("traffic-light", "zone_classification_updated")
    risk = service.sandbox.emit("traffic-light", "market_risk_updated")
    service.sandbox.emit("underwriting", "loan_application_submitted")
    metrics = service.sandbox.emit("pms", "metrics_updated")
    second_risk = service.sandbox.emit("traffic-light", "market_risk_updated")
    assert zone and risk and metrics and second_risk
    await eventually(lambda: service.runtime.bus.head >= head + 5)
    risks_in_region = [frame for frame in (risk, second_risk) if frame.data["region_id"] == risk.data["region_id"]]
    expectations = [
        ({"event_types": [event_pb2.EVENT_TYPE_MARKET_RISK_UPDATED]}, [risk, second_risk]),
        ({"property_id": zone.data["property_id"]}, [zone]),
        ({"portfolio_id": "portfolio_456"}, [metrics]),
        ({"region_id": risk.data["region_id"]}, risks_in_region),
        ({"event_types": [event_pb2.EVENT_TYPE_METRICS_UPDATED], "region_id": risk.data["region_id"]}, []),
    ]
    beat = duration_pb2.Duration(seconds=1)
    for request, frames in expectations:
        call = await service.subscribe(start_after_cursor=str(head), heartbeat_interval=beat, **request)
        messages = await take(call, len(frames) + 1, skip_heartbeats=False)
        payloads = [event.WhichOneof("payload") for event in messages]
        assert payloads == [frame.event for frame in frames] + ["heartbeat"], request
        call.cancel()


async def test_heartbeats_carry_the_newest_cursor_so_a_filtered_subscriber_resumes_past_skipped_events(
    service: Service,
) -> None:
    call = await service.subscribe(
        event_types=[event_pb2.EVENT_TYPE_LOAN_APPROVED], heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    service.sandbox.emit("pms", "metrics_updated")
    service.sandbox.emit("pms", "metrics_updated")
    await eventually(lambda: service.runtime.bus.head >= 2)
    head = service.runtime.bus.head

    (beat,) = await take(call, 1, skip_heartbeats=False)

    assert beat.WhichOneof("payload") == "heartbeat" and int(beat.cursor) == head
    call.cancel()


def reached(sandbox: Sandbox, frames: list[tuple[Upstream, Any]]) -> list[tuple[Upstream, Any]]:
    """The frames a socket of ours was sent intact. The guide's systems do not replay, so an event
    published while no socket was subscribed (both reconnecting at once on a starved machine) is gone
    upstream; the mirror's reconciliation recovers such changes (test_loss_free_events.py)."""
    sockets = {
        (system, delivery.frame.id): delivery.sockets
        for system in {system for system, _ in frames}
        for delivery in sandbox.deliveries(system.value)
    }
    return [(system, frame) for system, frame in frames if sockets[(system, frame.id)] > 0]


async def test_a_websocket_drop_loses_no_event(service: Service) -> None:
    """Sockets are dropped every 5 events (TLS) and every 0.3 s (PMS) while events keep coming: every
    event that reached a socket reaches the gRPC subscriber once, in upstream order, with consecutive
    cursors."""
    service.sandbox.set_faults(
        {"traffic-light": {"ws_drop_after_events": 5}, "pms": {"ws_drop_every_seconds": 0.3}}
    )
    call = await service.subscribe()
    plan = [(Upstream.TRAFFIC_LIGHT, None), (Upstream.PMS, None)] * 60
    frames = reached(service.sandbox, await emit_paced(service.sandbox, plan, pause_s=0.008))

    events = await take(call, len(frames))

    cursors = [int(event.cursor) for event in events]
    assert cursors == list(range(cursors[0], cursors[0] + len(frames)))
    assert len(frames) >= 110  # losses need both sockets down together: rare, and only on a starved machine
    for system in (Upstream.TRAFFIC_LIGHT, Upstream.PMS):
        sent = [frame for source, frame in frames if source is system]
        received = [event for event in events if event.source == system.proto]
        assert len(received) == len(sent)
        assert all(same_payload(event, expected_event(system, frame)) for event, frame in zip(received, sent, strict=True))
    reconnects = service.sample("equihome_upstream_ws_connects_total", system="traffic-light", outcome="ok")
    assert reconnects >= 60 / 5  # the knob really dropped the sockets
    call.cancel()


async def test_malformed_frames_are_counted_and_skipped(service: Service) -> None:
    connects = service.sample("equihome_upstream_ws_connects_total", system="underwriting", outcome="ok")
    call = await service.subscribe()
    service.sandbox.set_faults({"underwriting": {"malformed_frame_rate": 1.0, "malformed_frame_kind": "mixed"}})
    for _ in range(6):
        service.sandbox.emit("underwriting", "loan_application_submitted")
    await eventually(lambda: service.sample("equihome_upstream_ws_frames_total", system="underwriting", kind="malformed") >= 6)
    assert service.sample("equihome_upstream_ws_connects_total", system="underwriting", outcome="ok") == connects
    service.sandbox.reset_faults()
    good = service.sandbox.emit("underwriting", "loan_approved")

    (event,) = await take(call, 1)

    assert same_payload(event, expected_event(Upstream.UNDERWRITING, good))  # the skipped ones never arrive
    call.cancel()


async def test_engine_events_are_published_through_the_bus(service: Service) -> None:
    call = await service.subscribe(portfolio_id="portfolio_9")
    progress = event_pb2.SimulationProgressed(
        name="simulations/abc", portfolio_id="portfolio_9", state=simulation_pb2.Simulation.STATE_RUNNING
    )
    service.runtime.bus.publish_engine_event(event_pb2.SimulationProgressed(name="simulations/other", portfolio_id="x"))
    service.runtime.bus.publish_engine_event(progress)

    (event,) = await take(call, 1)

    assert event.source == system_pb2.SYSTEM_SIMULATION_ENGINE and event.simulation_progressed == progress
    call.cancel()


async def test_subscription_requests_are_validated(service: Service) -> None:
    service.sandbox.emit("pms", "metrics_updated")
    await eventually(lambda: service.runtime.bus.head >= 1)
    for request, reason in (
        ({"start_after_cursor": "abc"}, "FIELD_INVALID"),
        ({"start_after_cursor": "99999"}, "FIELD_INVALID"),
        ({"event_types": [event_pb2.EVENT_TYPE_UNSPECIFIED]}, "FIELD_INVALID"),
        ({"heartbeat_interval": duration_pb2.Duration(nanos=1000)}, "FIELD_INVALID"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await take(service.events.SubscribeEvents(_request(**request)), 1)
        assert unpack(caught.value).reason == reason, request


async def test_a_cursor_past_the_retention_is_expired(sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]) -> None:
    service = await make_service(sandbox, event_retention_hours=1e-6)  # 3.6 ms
    await service.connected()
    service.sandbox.emit("pms", "metrics_updated")
    service.sandbox.emit("pms", "metrics_updated")
    await eventually(lambda: service.runtime.bus.head >= 2)
    await asyncio.sleep(0.01)
    assert await service.runtime.bus.prune() == 2

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await take(service.events.SubscribeEvents(_request(start_after_cursor="1")), 1)

    details = unpack(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED")


def _request(**fields: Any) -> Any:
    from equihome.events.v1 import event_service_pb2

    return event_service_pb2.SubscribeEventsRequest(**fields)


async def test_resume_after_a_server_restart_has_no_gap_and_no_duplicate(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    first = await make_service(sandbox)
    await first.connected()
    call = await first.subscribe()
    before = await emit_paced(sandbox, [(Upstream.PMS, None)] * 5, pause_s=0)
    delivered = await take(call, 5)
    resume_from = delivered[1].cursor

    await first.app.shutdown(grace=1)
    assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK

    second = await make_service(sandbox)
    await second.connected()
    resumed = await second.subscribe(start_after_cursor=resume_from)
    replayed = await take(resumed, 3)
    after = await emit_paced(sandbox, [(Upstream.UNDERWRITING, None)] * 2, pause_s=0)
    live = await take(resumed, 2)

    assert replayed == delivered[2:]  # the same events, cursors and times, from the log
    cursors = [int(event.cursor) for event in [*replayed, *live]]
    assert cursors == list(range(int(resume_from) + 1, int(resume_from) + 6))
    assert all(same_payload(event, expected_event(Upstream.PMS, frame)) for event, (_, frame) in zip(replayed, before[2:], strict=True))
    assert all(same_payload(event, expected_event(Upstream.UNDERWRITING, frame)) for event, (_, frame) in zip(live, after, strict=True))
    resumed.cancel()


async def test_a_slow_subscriber_is_cut_off_while_others_keep_up(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, event_subscriber_buffer=256)
    slow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.slow_subscriber", str(service.app.port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await eventually(lambda: service.runtime.bus.subscriber_count == 1)
        fast = await service.subscribe()
        count = 2000
        received: list[event_pb2.Event] = []
        reader = asyncio.create_task(_collect(fast, count, received))
        bulky = "x" * 2000  # fills the slow stream's window quickly
        for index in range(count):
            service.runtime.bus.publish_engine_event(
                event_pb2.SimulationProgressed(name=f"simulations/{index}", portfolio_id=bulky)
            )
            if index % 10 == 9:
                await asyncio.sleep(0.01)  # 1000 events/s: the fast subscriber (same process) keeps up
        await asyncio.wait_for(reader, 30)
        outcome, _ = await asyncio.wait_for(slow.communicate(b"drain now\n"), 30)
    finally:
        if slow.returncode is None:
            slow.kill()
            await slow.wait()

    assert [event.simulation_progressed.name for event in received] == [f"simulations/{i}" for i in range(count)]
    code, reason, slow_received = outcome.decode().split()
    assert (code, reason) == ("RESOURCE_EXHAUSTED", "SUBSCRIBER_TOO_SLOW")
    assert int(slow_received) < count
    assert service.sample("equihome_event_subscribers_cut_off_total") == 1


async def _collect(call: Any, count: int, into: list[event_pb2.Event]) -> None:
    into.extend(await take(call, count))


async def test_health_follows_the_upstreams(service: Service) -> None:
    assert await service.serving(INTEGRATION_SERVICE) and await service.serving(EVENT_SERVICE)
    service.sandbox.set_faults({system.value: {"outage": True} for system in Upstream})

    async def down() -> bool:
        return not await service.serving(INTEGRATION_SERVICE) and not await service.serving(EVENT_SERVICE)

    await eventually(down)
    service.sandbox.set_faults({"pms": {"outage": False}})

    async def up() -> bool:
        return await service.serving(INTEGRATION_SERVICE) and await service.serving(EVENT_SERVICE)

    await eventually(up)


async def test_a_token_expiring_mid_stream_is_replaced_without_losing_events(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0, token_lifetime_seconds=2)) as sandbox:
        service = await make_service(sandbox)
        await service.connected()
        call = await service.subscribe()
        fetched = service.sample("equihome_upstream_token_fetches_total", system="underwriting", outcome="ok")

        plan = [(Upstream.UNDERWRITING, "loan_application_submitted"), (Upstream.UNDERWRITING, "loan_approved")] * 60
        frames = reached(sandbox, await emit_paced(sandbox, plan, pause_s=0.025))
        events = await take(call, len(frames))
        assert len(frames) >= 100  # a few lost upstream only when both rotations lag on a starved machine

        assert all(same_payload(event, expected_event(Upstream.UNDERWRITING, frame)) for event, (_, frame) in zip(events, frames, strict=True))
        assert service.sample("equihome_upstream_token_fetches_total", system="underwriting", outcome="ok") >= fetched + 2

        # Now every new token is born expired: the socket dies with its token, then comes back on a fresh one.
        sandbox.set_faults({"auth": {"issue_expired_tokens": True}})
        monitor = service.runtime.links[Upstream.UNDERWRITING].monitor
        await eventually(lambda: monitor.socket_state != "connected")
        refused = service.sample("equihome_upstream_ws_connects_total", system="underwriting", outcome="refused")
        assert refused >= 1
        sandbox.reset_faults()
        await eventually(lambda: monitor.socket_state == "connected")
        await eventually(lambda: subscribers(sandbox, "underwriting", "loan_updates") > 0)  # no ack says so
        late = sandbox.emit("underwriting", "loan_approved")
        (event,) = await take(call, 1)
        assert same_payload(event, expected_event(Upstream.UNDERWRITING, late))
        call.cancel()
