"""Finding "anyone can lock everyone out": 256 Health/Watch streams with no token (or 256 SubscribeEvents)
filled the server-wide RPC limit, and every other call, health checks included, got RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from equihome.events.v1 import event_service_pb2
from equihome.events.v1.event_service_pb2_grpc import EventServiceStub
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from server.errors import unpack
from tests.hostile.conftest import HOSTILE_SETTINGS, Callers, ServerProcess, running_server
from tests.service.conftest import small_config

SERVING = health_pb2.HealthCheckResponse.SERVING
FLOOD = 300  # more than the 256 calls the whole server used to allow
SUBSCRIBE = event_service_pb2.SubscribeEventsRequest(heartbeat_interval=duration_pb2.Duration(seconds=1))


@contextlib.asynccontextmanager
async def held_open(calls: list[grpc.aio.UnaryStreamCall]) -> AsyncIterator[list[object]]:
    """Read the first message (or the error) of every stream, keep them open, cancel them at the end."""
    try:
        yield list(await asyncio.gather(*(first_message(call) for call in calls)))
    finally:
        for call in calls:
            call.cancel()


async def first_message(call: grpc.aio.UnaryStreamCall) -> object:
    try:
        return await call.read()
    except grpc.aio.AioRpcError as error:
        return error


async def others_still_served(channel: grpc.aio.Channel, server: ServerProcess) -> None:
    """Health Check, an authenticated unary call and an authenticated stream all still work."""
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == SERVING
    listed = SimulationServiceStub(channel).ListSimulations(
        service_pb2.ListSimulationsRequest(), metadata=server.token("innocent"), timeout=10
    )
    assert list((await listed).simulations) == []
    stream = EventServiceStub(channel).SubscribeEvents(SUBSCRIBE, metadata=server.token("innocent"), timeout=10)
    assert (await stream.read()).event.HasField("heartbeat")
    stream.cancel()


async def test_a_flood_of_health_watches_and_subscriptions_locks_nobody_out(
    server: ServerProcess, callers: Callers
) -> None:
    """300 unauthenticated health watches and 300 subscriptions of one caller, held open: health checks,
    other callers' unary calls and other callers' streams are still served."""
    flooder = server.token("flooder")
    watches = [callers.health.Watch(health_pb2.HealthCheckRequest()) for _ in range(FLOOD)]
    subscriptions = [callers.events.SubscribeEvents(SUBSCRIBE, metadata=flooder) for _ in range(FLOOD)]

    async with held_open(watches) as watched, held_open(subscriptions) as subscribed:
        async with grpc.aio.insecure_channel(server.address) as other:
            await others_still_served(other, server)

    assert all(getattr(first, "status", None) == SERVING for first in watched)  # within their own budget
    refused = [unpack(first) for first in subscribed if isinstance(first, grpc.aio.AioRpcError)]
    assert {(details.code, details.reason) for details in refused} <= {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALL_LIMIT_EXHAUSTED")
    }
    assert all(details.error_info.metadata["group"] == "caller" for details in refused)


async def test_each_group_is_held_to_its_own_budget(tmp_path: Path) -> None:
    """Unauthenticated streams, one caller's streams and one caller's unary calls each stop at their own limit
    (CALL_LIMIT_EXHAUSTED with RetryInfo), while the other groups go on."""
    budgets = {"max_unauthenticated_streams": "20", "max_streams_per_caller": "10", "max_unary_per_caller": "4"}
    with running_server(tmp_path, HOSTILE_SETTINGS | budgets) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            events = EventServiceStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(30)]
            streams = [events.SubscribeEvents(SUBSCRIBE, metadata=server.token("greedy")) for _ in range(15)]
            async with held_open(watches) as watched, held_open(streams) as subscribed:
                await others_still_served(channel, server)
                unary = [unpack(error) for error in await greedy_unary_calls(channel, server, 12)]

    for firsts, allowed, group, kind in ((watched, 20, "unauthenticated", "stream"),
                                         (subscribed, 10, "caller", "stream")):  # fmt: skip
        refused = [unpack(first) for first in firsts if isinstance(first, grpc.aio.AioRpcError)]
        assert len(firsts) - len(refused) == allowed, group
        for details in refused:
            assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALL_LIMIT_EXHAUSTED")
            assert details.error_info.metadata == {"group": group, "kind": kind, "limit": str(allowed)}
            assert details.retry_after is not None and details.retry_after > 0
    assert unary and all(details.error_info.metadata["kind"] == "unary" for details in unary)


async def greedy_unary_calls(
    channel: grpc.aio.Channel, server: ServerProcess, count: int
) -> list[grpc.aio.AioRpcError]:
    """``count`` slow unary calls of one caller at once (each a RunSimulation that waits for its run); the
    ones refused for the caller's unary budget."""
    stub = SimulationServiceStub(channel)
    request = service_pb2.RunSimulationRequest(config=small_config(paths=2000))
    calls = [stub.RunSimulation(request, metadata=server.token("greedy"), timeout=5) for _ in range(count)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    return [outcome for outcome in outcomes
            if isinstance(outcome, grpc.aio.AioRpcError) and unpack(outcome).reason == "CALL_LIMIT_EXHAUSTED"]
