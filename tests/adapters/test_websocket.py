"""The WebSocket event source against a minimal guide-exact peer (a real websockets server in the test):
no acknowledgement is awaited, the configured channels are subscribed, and a close for an expired token
(4401) gets a fresh token on the next connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import SystemTokens
from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, running_sandbox
from adapters.systems import Upstream
from adapters.websocket import EventSubscription, SocketPolicy
from equihome.events.v1 import event_pb2

METRICS = {"event": "metrics_updated", "data": {"portfolio_id": "p1", "metrics": {"irr": 0.1}}}


class Peer:
    """Closes its first socket with ``first_close`` right after the subscriptions, then sends one event
    on each later socket. Records each socket's bearer token and subscribe messages."""

    def __init__(self, first_close: int):
        self.first_close = first_close
        self.tokens: list[str] = []
        self.subscriptions: list[list[str]] = []

    async def handle(self, socket: ServerConnection) -> None:
        self.tokens.append(socket.request.headers["Authorization"])
        channels: list[str] = []
        self.subscriptions.append(channels)
        message = json.loads(await socket.recv())
        channels.append(message["data"]["channel"])
        if len(self.tokens) == 1:
            await socket.close(self.first_close, "token expired")
            return
        await socket.send(json.dumps(METRICS))  # straight away: the guide has no acknowledgement
        await socket.wait_closed()


class Receiver:
    def __init__(self) -> None:
        self.events: list[event_pb2.Event] = []
        self.gaps: list[float] = []

    def event(self, event: event_pb2.Event, origin_time: float | None) -> None:
        self.events.append(event)

    def coverage_gap(self, system: Upstream, since: float) -> None:
        self.gaps.append(since)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig(events_per_second=0)) as running:
        yield running


async def run_until_an_event(
    sandbox: Sandbox, handler: Callable[[ServerConnection], Awaitable[None]], policy: SocketPolicy
) -> tuple[Receiver, SystemTokens]:
    """Run an event source (tokens from the sandbox) against a peer served by ``handler`` until it delivers
    an event; returns what it received and the tokens it used."""
    tokens = SystemTokens.create(
        Upstream.PMS, sandbox.token_url, DEMO_CLIENT_ID, SecretStr(DEMO_CLIENT_SECRET), timeout=httpx.Timeout(5)
    )
    receiver = Receiver()
    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        source = EventSubscription(
            Upstream.PMS, f"ws://127.0.0.1:{port}/ws", tokens.read, UpstreamMonitor(Upstream.PMS),
            AdapterMetrics(CollectorRegistry()), policy=policy,
        )  # fmt: skip
        running = asyncio.create_task(source.run(receiver))
        async with asyncio.timeout(5):
            while not receiver.events:
                await asyncio.sleep(0.01)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    await tokens.aclose()
    return receiver, tokens


@pytest.mark.parametrize("close_code", [4401, 1008])
async def test_a_close_for_an_expired_token_brings_a_fresh_token_and_nothing_waits_for_an_ack(
    sandbox: Sandbox, close_code: int
) -> None:
    peer = Peer(close_code)

    receiver, tokens = await run_until_an_event(sandbox, peer.handle, SocketPolicy(connections=1, channels=("pms_feed",)))

    assert peer.subscriptions[:2] == [["pms_feed"], ["pms_feed"]]
    assert peer.tokens[0] != peer.tokens[1] and tokens.read.fetches == 2  # fetched again after the close
    (event,) = receiver.events
    assert event.metrics_updated.portfolio_id == "p1" and event.origin == event_pb2.EVENT_ORIGIN_LIVE
    assert len(receiver.gaps) == 2  # blind at start, and again once the only socket had closed


async def test_a_frame_over_the_size_limit_closes_the_socket_and_the_next_one_carries_on(sandbox: Sandbox) -> None:
    sent = 0

    async def handle(socket: ServerConnection) -> None:
        nonlocal sent
        await socket.recv()
        sent += 1
        data = {"portfolio_id": "p1", "metrics": {"irr": 0.1}, "padding": "x" * (300 * 1024 if sent == 1 else 0)}
        await socket.send(json.dumps({"event": "metrics_updated", "data": data}))
        await socket.wait_closed()

    receiver, _ = await run_until_an_event(sandbox, handle, SocketPolicy(connections=1))

    assert sent == 2 and len(receiver.events) == 1  # the oversized frame was never taken in
