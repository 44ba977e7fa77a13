"""WebSocket streams: subscriptions, frame shapes, and the socket fault knobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from adapters.sandbox import Sandbox
from tests.sandbox import guide_examples as guide
from tests.sandbox.support import receive_json, subscribe, subscribers

Connect = Callable[[str], Awaitable[ClientConnection]]



@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(shared_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    """These tests only watch events (which may change the world); they share one sandbox and clear
    the fault knobs after each test."""
    yield shared_sandbox
    shared_sandbox.reset_faults()


@pytest_asyncio.fixture(loop_scope="module")
async def connect(sandbox: Sandbox, token: str) -> AsyncIterator[Connect]:
    """Opens sockets to a system's stream; closes them after the test."""
    sockets: list[ClientConnection] = []

    async def open_socket(system: str) -> ClientConnection:
        ws = await websockets.connect(f"{sandbox.ws_url(system)}?token={token}")
        sockets.append(ws)
        return ws

    yield open_socket
    for ws in sockets:
        await ws.close()


async def test_a_subscription_to_the_systems_channel_gets_its_events_in_order(
    sandbox: Sandbox, connect: Connect
) -> None:
    ws = await connect("traffic-light")
    sandbox.emit("traffic-light", "zone_classification_updated")  # before the subscription: not sent
    await subscribe(ws, sandbox, "traffic-light", "zone_updates")

    published = [sandbox.emit("traffic-light", event) for event in ["market_risk_updated", "zone_classification_updated"] * 2]
    received = [await receive_json(ws) for _ in range(4)]

    assert received == [{"event": frame.event, "data": frame.data} for frame in published]


@pytest.mark.parametrize("system, event", guide.EVENT_SOURCES)
async def test_event_frames_have_exactly_the_guide_shape(
    sandbox: Sandbox, connect: Connect, system: str, event: str
) -> None:
    ws = await connect(system)
    await subscribe(ws, sandbox, system)

    sandbox.emit(system, event)
    frame = await receive_json(ws)

    example = guide.EVENTS[event]
    assert set(frame) == {"event", "data"}
    assert frame["event"] == event
    assert set(frame["data"]) == set(example["data"])
    for name, value in example["data"].items():
        if isinstance(value, dict):
            assert set(frame["data"][name]) == set(value)


async def test_messages_the_system_does_not_understand_are_ignored_and_the_socket_stays_open(
    sandbox: Sandbox, connect: Connect
) -> None:
    ws = await connect("pms")

    await ws.send(json.dumps({"event": "subscribe", "data": {"channel": "zone_updates"}}))
    await ws.send("not json")
    await ws.send(b"binary")
    await subscribe(ws, sandbox, "pms")
    frame = sandbox.emit("pms", "metrics_updated")

    assert await receive_json(ws) == {"event": "metrics_updated", "data": frame.data}  # no error frames first


async def test_unsubscribe_stops_delivery(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("pms")
    await subscribe(ws, sandbox, "pms")
    await ws.send(json.dumps({"event": "unsubscribe", "data": {"channel": "portfolio_updates"}}))
    async with asyncio.timeout(5):
        while subscribers(sandbox, "pms", "portfolio_updates"):
            await asyncio.sleep(0.002)

    sandbox.emit("pms", "metrics_updated")
    await subscribe(ws, sandbox, "pms")
    after = sandbox.emit("pms", "portfolio_updated")

    assert await receive_json(ws) == {"event": "portfolio_updated", "data": after.data}


async def test_a_silent_socket_stays_open_and_answers_pings_but_gets_no_events(
    sandbox: Sandbox, connect: Connect
) -> None:
    ws = await connect("underwriting")
    await subscribe(ws, sandbox, "underwriting")
    sandbox.set_faults({"underwriting": {"ws_silent": True}})

    lost = sandbox.emit("underwriting", "loan_application_submitted")
    await asyncio.wait_for(await ws.ping(), 5)
    sandbox.reset_faults()
    seen = sandbox.emit("underwriting", "loan_approved")

    assert (await receive_json(ws))["event"] == "loan_approved"
    sent = {delivery.frame.id: delivery.sockets for delivery in sandbox.deliveries("underwriting")}
    assert lost and seen and (sent[lost.id], sent[seen.id]) == (0, 1)


async def test_drop_after_events_closes_the_socket_after_exactly_that_many(
    sandbox: Sandbox, connect: Connect
) -> None:
    sandbox.set_faults({"traffic-light": {"ws_drop_after_events": 2}})
    ws = await connect("traffic-light")
    await subscribe(ws, sandbox, "traffic-light")

    for _ in range(3):
        sandbox.emit("traffic-light")
    received = [await receive_json(ws) for _ in range(2)]
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert len(received) == 2
    assert closed.value.rcvd.code == 1012


async def test_drop_every_seconds_closes_an_idle_socket(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("pms")
    await subscribe(ws, sandbox, "pms")

    sandbox.set_faults({"pms": {"ws_drop_every_seconds": 0.05}})
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert closed.value.rcvd.code == 1012
    assert "every" in closed.value.rcvd.reason


async def test_outage_closes_open_sockets_with_try_again_later(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("underwriting")
    await subscribe(ws, sandbox, "underwriting")

    sandbox.set_faults({"underwriting": {"outage": True}})
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert closed.value.rcvd.code == 1013


async def test_invalid_json_frames_fail_to_parse(sandbox: Sandbox, connect: Connect) -> None:
    sandbox.set_faults({"pms": {"malformed_frame_rate": 1.0, "malformed_frame_kind": "invalid_json"}})
    ws = await connect("pms")
    await subscribe(ws, sandbox, "pms")

    sandbox.emit("pms", "metrics_updated")
    raw = await ws.recv()

    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_wrong_type_frames_parse_but_break_the_contract(sandbox: Sandbox, connect: Connect) -> None:
    knobs = {"malformed_frame_rate": 1.0, "malformed_frame_kind": "wrong_types"}
    sandbox.set_faults({"traffic-light": knobs})
    ws = await connect("traffic-light")
    await subscribe(ws, sandbox, "traffic-light")

    sandbox.emit("traffic-light", "market_risk_updated")
    frame = await receive_json(ws)

    assert frame["event"] == "market_risk_updated"
    assert isinstance(frame["data"]["region_id"], int)
    assert isinstance(frame["data"]["risk_score"], str)


async def test_events_can_be_triggered_over_http(
    sandbox: Sandbox, connect: Connect, http: httpx.AsyncClient
) -> None:
    ws = await connect("pms")
    await subscribe(ws, sandbox, "pms")

    response = await http.post(
        f"{sandbox.base_url}/sandbox/events", json={"system": "pms", "event": "metrics_updated", "count": 2}
    )
    emitted = response.json()["emitted"]
    received = [await receive_json(ws) for _ in range(2)]

    assert response.status_code == 200
    assert received == emitted
