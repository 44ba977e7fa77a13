"""The assembled server: binding, graceful shutdown order, lifecycle hooks, and signal handling."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import AppServer, BindError, Lifecycle, build_server, serve
from server.settings import Settings
from tests.server.conftest import Metadata
from tests.server.echo_service import SERVICE, EchoClient, echo_binding

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_graceful_shutdown_flips_health_ends_streams_ok_and_closes_in_order(
    app: AppServer, channel: grpc.aio.Channel, auth_for: Callable[..., Metadata]
) -> None:
    closed: list[str] = []

    async def close(name: str) -> None:
        closed.append(name)

    app.lifecycle.add_close_hook(lambda: close("store"), name="store")
    app.lifecycle.add_close_hook(lambda: close("job runner"), name="job runner")
    background = app.lifecycle.add_background_task(asyncio.Event().wait(), name="poller")
    health_watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    follow = EchoClient(channel).follow(empty_pb2.Empty(), metadata=auth_for("events:read"))
    assert (await health_watch.read()).status == SERVING
    ticks = [(await follow.read()).value for _ in range(2)]

    shutdown = asyncio.ensure_future(app.shutdown())
    assert (await health_watch.read()).status == NOT_SERVING
    health_watch.cancel()
    while (item := await follow.read()) is not grpc.aio.EOF:
        ticks.append(item.value)
    await shutdown

    assert await follow.code() == grpc.StatusCode.OK
    assert ticks == list(range(len(ticks)))
    assert app.lifecycle.shutting_down.is_set()
    assert background.cancelled()
    assert closed == ["job runner", "store"]  # newest first


async def test_server_binds_loopback_port_and_refuses_a_taken_one(app: AppServer, settings: Settings) -> None:
    assert app.port > 0
    lifecycle = Lifecycle()

    with pytest.raises(BindError, match="already in use"):
        build_server(
            settings.model_copy(update={"port": app.port}), [echo_binding(lifecycle)], lifecycle=lifecycle
        )


async def test_failing_close_hook_does_not_stop_the_others() -> None:
    lifecycle = Lifecycle()
    closed: list[str] = []

    async def broken() -> None:
        raise OSError("disk gone")

    async def fine() -> None:
        closed.append("fine")

    lifecycle.add_close_hook(fine)
    lifecycle.add_close_hook(broken)

    with pytest.raises(ExceptionGroup) as group:
        await lifecycle.close()
    assert closed == ["fine"]
    assert [str(error) for error in group.value.exceptions] == ["disk gone"]


async def test_until_shutdown_closes_its_source() -> None:
    lifecycle = Lifecycle()
    closed = asyncio.Event()

    async def source():  # type: ignore[no-untyped-def]
        try:
            for number in range(1000):
                yield number
                await asyncio.sleep(0)
        finally:
            closed.set()

    seen = []
    async for number in lifecycle.until_shutdown(source()):
        seen.append(number)
        if number == 2:
            lifecycle.shutting_down.set()

    assert seen == [0, 1, 2]
    assert closed.is_set()


async def test_serve_runs_until_sigterm_then_shuts_down(settings: Settings) -> None:
    lifecycle = Lifecycle()
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    lifecycle.add_close_hook(close)
    started: asyncio.Future[AppServer] = asyncio.get_running_loop().create_future()
    serving = asyncio.ensure_future(
        serve(settings, [echo_binding(lifecycle)], lifecycle=lifecycle, on_started=started.set_result)
    )
    try:
        app = await started
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        os.kill(os.getpid(), signal.SIGTERM)
        await serving
    finally:
        root = logging.getLogger()
        for handler in [handler for handler in root.handlers if handler.get_name() == "equihome-json"]:
            root.removeHandler(handler)

    assert reply.status == SERVING
    assert closed.is_set() and lifecycle.shutting_down.is_set()
