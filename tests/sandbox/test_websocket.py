"""WebSocket streams: subscriptions, frame shapes, and the socket fault knobs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from adapters.sandbox import Sandbox, System
from tests.sandbox import guide_examples as guide
from tests.sandbox.support import receive_json, subscribe

Connect = Callable[[str], Awaitable[ClientConnection]]

SHAPE_CHECKED_EVENTS = [
    ("traffic-light", "zone_classification_updated"),
    ("traffic-light", "market_risk_updated"),
    ("pms", "portfolio_updated"),
    ("pms", "metrics_updated"),
    ("underwriting", "loan_application_submitted"),
    ("underwriting", "loan_approved"),
]


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


async def test_only_subscribed_channels_are_delivered_with_increasing_ids(
    sandbox: Sandbox, connect: Connect
) -> None:
    ws = await connect("traffic-light")
    await subscribe(ws, "zone_updates")

    published = [
        sandbox.emit("traffic-light", event)
        for event in ["market_risk_updated", "zone_classification_updated"] * 3
    ]
    received = [await receive_json(ws) for _ in range(3)]

    zone_frames = [frame for frame in published if frame.event == "zone_classification_updated"]
    assert [frame["id"] for frame in received] == [frame.id for frame in zone_frames]
    assert {frame["event"] for frame in received} == {"zone_classification_updated"}
    ids = [frame["id"] for frame in received]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_all_channels_subscription_gets_every_event_of_the_system(
    sandbox: Sandbox, connect: Connect
) -> None:
    ws = await connect("underwriting")
    ack = await subscribe(ws, "*")

    first = sandbox.emit("underwriting", "loan_application_submitted")
    second = sandbox.emit("underwriting", "loan_approved")
    received = [await receive_json(ws) for _ in range(2)]

    assert ack["data"] == {"channel": "*", "channels": ["*"]}
    assert [frame["id"] for frame in received] == [first.id, second.id] == [first.id, first.id + 1]


@pytest.mark.parametrize("system, event", SHAPE_CHECKED_EVENTS)
async def test_event_frames_have_the_guide_shape_plus_id_and_timestamp(
    sandbox: Sandbox, connect: Connect, system: str, event: str
) -> None:
    ws = await connect(system)
    await subscribe(ws, System(system).channel_of(event))

    sandbox.emit(system, event)
    frame = await receive_json(ws)

    example = guide.EVENTS[event]
    assert set(frame) == set(example) | guide.FRAME_EXTENSION_FIELDS
    assert frame["event"] == event
    assert set(frame["data"]) == set(example["data"])
    for name, value in example["data"].items():
        if isinstance(value, dict) and name == "loan":
            assert set(frame["data"][name]) == set(value) | guide.LOAN_EXTENSION_FIELDS
        elif isinstance(value, dict):
            assert set(frame["data"][name]) == set(value)
    assert isinstance(frame["id"], int)
    assert datetime.fromisoformat(frame["timestamp"]).tzinfo is not None


async def test_unknown_channel_is_answered_with_an_error_frame_and_the_socket_stays_open(
    connect: Connect
) -> None:
    ws = await connect("pms")

    await ws.send(json.dumps({"event": "subscribe", "data": {"channel": "zone_updates"}}))
    error = await receive_json(ws)
    await ws.send("not json")
    not_json = await receive_json(ws)
    ack = await subscribe(ws, "metrics_updates")

    assert error["event"] == "error"
    assert error["data"]["code"] == "unknown_channel"
    assert error["data"]["details"]["channels"] == ["portfolio_updates", "metrics_updates", "*"]
    assert not_json["data"]["code"] == "invalid_message"
    assert ack["data"]["channels"] == ["metrics_updates"]


async def test_unsubscribe_stops_delivery(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("pms")
    await subscribe(ws, "metrics_updates")
    await subscribe(ws, "portfolio_updates")
    await ws.send(json.dumps({"event": "unsubscribe", "data": {"channel": "metrics_updates"}}))
    assert (await receive_json(ws))["data"]["channels"] == ["portfolio_updates"]

    sandbox.emit("pms", "metrics_updated")
    portfolio_event = sandbox.emit("pms", "portfolio_updated")

    assert (await receive_json(ws))["id"] == portfolio_event.id


async def test_drop_after_events_closes_the_socket_after_exactly_that_many(
    sandbox: Sandbox, connect: Connect
) -> None:
    sandbox.set_faults({"traffic-light": {"ws_drop_after_events": 2}})
    ws = await connect("traffic-light")
    await subscribe(ws, "*")

    for _ in range(3):
        sandbox.emit("traffic-light")
    received = [await receive_json(ws) for _ in range(2)]
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert len(received) == 2
    assert closed.value.rcvd.code == 1012


async def test_drop_every_seconds_closes_an_idle_socket(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("pms")
    await subscribe(ws, "*")

    sandbox.set_faults({"pms": {"ws_drop_every_seconds": 0.05}})
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert closed.value.rcvd.code == 1012
    assert "every" in closed.value.rcvd.reason


async def test_outage_closes_open_sockets_with_try_again_later(sandbox: Sandbox, connect: Connect) -> None:
    ws = await connect("underwriting")
    await subscribe(ws, "*")

    sandbox.set_faults({"underwriting": {"outage": True}})
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)

    assert closed.value.rcvd.code == 1013


async def test_invalid_json_frames_fail_to_parse(sandbox: Sandbox, connect: Connect) -> None:
    sandbox.set_faults({"pms": {"malformed_frame_rate": 1.0, "malformed_frame_kind": "invalid_json"}})
    ws = await connect("pms")
    await subscribe(ws, "*")

    sandbox.emit("pms", "metrics_updated")
    raw = await ws.recv()

    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_wrong_type_frames_parse_but_break_the_contract(sandbox: Sandbox, connect: Connect) -> None:
    knobs = {"malformed_frame_rate": 1.0, "malformed_frame_kind": "wrong_types"}
    sandbox.set_faults({"traffic-light": knobs})
    ws = await connect("traffic-light")
    await subscribe(ws, "market_risk")

    sandbox.emit("traffic-light", "market_risk_updated")
    frame = await receive_json(ws)

    assert frame["event"] == "market_risk_updated"
    assert isinstance(frame["id"], str)
    assert isinstance(frame["timestamp"], float)
    assert isinstance(frame["data"]["region_id"], int)
    assert isinstance(frame["data"]["risk_score"], str)


async def test_events_can_be_triggered_over_http(
    sandbox: Sandbox, connect: Connect, http: httpx.AsyncClient
) -> None:
    ws = await connect("pms")
    await subscribe(ws, "metrics_updates")

    response = await http.post(
        f"{sandbox.base_url}/sandbox/events", json={"system": "pms", "event": "metrics_updated", "count": 2}
    )
    emitted = response.json()["emitted"]
    received = [await receive_json(ws) for _ in range(2)]

    assert response.status_code == 200
    assert received == emitted
