"""A WebSocket whose peer goes silent (the TCP connection stays open, nothing flows) is detected by the
idle probe and replaced. A small TCP relay between the service and the sandbox plays the broken network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from adapters.sandbox import Sandbox
from adapters.systems import Upstream
from tests.integration.conftest import Service, eventually, take


class FreezableRelay:
    """Forwards TCP connections to ``target``; ``freeze()`` stops moving bytes on the open ones."""

    def __init__(self, target_host: str, target_port: int):
        self._target = (target_host, target_port)
        self._frozen: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        for frozen in self._frozen:
            frozen.set()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        frozen = asyncio.Event()
        self._frozen.append(frozen)
        for source, sink in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            task = asyncio.create_task(self._pump(source, sink, frozen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event) -> None:
        while data := await source.read(65536):
            if frozen.is_set():
                await asyncio.Event().wait()  # hold the connection open, move nothing
            sink.write(data)
            await sink.drain()
        sink.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def relay(sandbox: Sandbox) -> AsyncIterator[FreezableRelay]:
    target = urlsplit(sandbox.system_url("pms"))
    running = FreezableRelay(target.hostname or "127.0.0.1", target.port or 80)
    await running.start()
    yield running
    await running.close()


async def test_a_silent_socket_is_detected_and_replaced(
    sandbox: Sandbox, relay: FreezableRelay, make_service: Callable[..., Awaitable[Service]]
) -> None:
    assert relay.server is not None
    port = relay.server.sockets[0].getsockname()[1]
    service = await make_service(
        sandbox,
        pms_ws_url=f"ws://127.0.0.1:{port}/ws/pms",
        integration_ws_connections=1,
        integration_ws_idle_timeout_s=0.3,
        integration_ws_ping_timeout_s=0.3,
    )
    await service.connected()
    monitor = service.runtime.links[Upstream.PMS].monitor
    connects = service.sample("equihome_upstream_ws_connects_total", system="pms", outcome="ok")

    relay.freeze()  # the open socket goes quiet; new connections still work

    await eventually(lambda: service.sample("equihome_upstream_ws_connects_total", system="pms", outcome="ok") > connects)
    await eventually(lambda: monitor.socket_state == "connected")
    call = await service.subscribe()
    frame = sandbox.emit("pms", "metrics_updated")
    (event,) = await take(call, 1)
    assert frame is not None and event.metrics_updated.portfolio_id == frame.data["portfolio_id"]
    call.cancel()
