"""Running the sandbox: uvicorn servers in the current event loop, the event clocks, clean shutdown.

``running_sandbox(config)`` is the in-process entry point for tests and tools; ``run_sandbox`` serves
until SIGINT/SIGTERM for the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import uvicorn

from adapters.sandbox.app import build_app
from adapters.sandbox.broadcast import CLOSE_GOING_AWAY, FrameDelivery
from adapters.sandbox.config import SandboxConfig
from adapters.sandbox.faults import FaultSettings
from adapters.sandbox.frames import EventFrame
from adapters.sandbox.gateway import TOKEN_PATH
from adapters.sandbox.oauth_api import JWKS_PATH
from adapters.sandbox.received import ReceivedPost
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import AUTH_TARGET, System
from adapters.sandbox.tasks import cancel_and_wait
from adapters.sandbox.world import World

GRACEFUL_SHUTDOWN_SECONDS = 2


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (several share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Sandbox:
    """A running sandbox: where to reach it, and handles on its state for tests."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.state = SandboxState(config)
        self._servers: dict[str, _Server] = {}
        self._serving: list[asyncio.Task[None]] = []
        self.urls: dict[str, str] = {}  # target (auth or a system) -> base URL

    # Where to reach it

    @property
    def base_url(self) -> str:
        """Base URL of the auth server and ``/sandbox`` administration (of everything unless split)."""
        return self.urls[AUTH_TARGET]

    def system_url(self, system: System | str) -> str:
        return self.urls[System(system).value]

    def ws_url(self, system: System | str) -> str:
        system = System(system)
        return self.system_url(system).replace("http://", "ws://", 1) + system.ws_path

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    # Handles for tests

    @property
    def world(self) -> World:
        return self.state.world

    def set_faults(self, patch: Mapping[str, Any]) -> FaultSettings:
        """Lay ``{"<target>": {"<knob>": value}}`` over the current fault settings."""
        return self.state.faults.update(patch)

    def reset_faults(self) -> FaultSettings:
        return self.state.faults.reset()

    def emit(self, system: System | str, event: str | None = None) -> EventFrame | None:
        return self.state.emit(System(system), event)

    def set_events_per_second(self, rate: float, systems: list[System] | None = None) -> None:
        for system in systems or list(System):
            self.state.clocks[system].set_rate(rate)

    def received(self, system: System | str | None = None) -> list[ReceivedPost]:
        return self.state.received.posts(System(system) if system else None)

    def deliveries(self, system: System | str) -> list[FrameDelivery]:
        """The latest frames ``system`` published, with how many sockets each was written to intact."""
        return self.state.broadcasters[System(system)].deliveries()

    # Life cycle

    async def start(self, host: str, port: int) -> None:
        layout = _layout(self.config.split_ports, port)
        try:
            for targets, target_port in layout:
                await self._serve(targets, host, target_port)
        except BaseException:
            await self.stop()
            raise
        for clock in self.state.clocks.values():
            clock.start()

    async def stop(self) -> None:
        for clock in self.state.clocks.values():
            await clock.stop()
        for broadcaster in self.state.broadcasters.values():
            broadcaster.close_all(CLOSE_GOING_AWAY, "sandbox shutting down")
        self.request_stop()
        if self._serving:
            await asyncio.wait(self._serving)
        failures = [task.exception() for task in self._serving if not task.cancelled() and task.exception()]
        self._serving.clear()
        if failures:
            raise failures[0]  # type: ignore[misc]

    async def wait_closed(self) -> None:
        """Until any of the servers stops (e.g. after ``request_stop``)."""
        await asyncio.wait(self._serving, return_when=asyncio.FIRST_COMPLETED)

    def request_stop(self) -> None:
        for server in self._servers.values():
            server.should_exit = True

    async def _serve(self, targets: tuple[str, ...], host: str, port: int) -> None:
        # Binding here (not in uvicorn) makes a busy port an OSError for the caller, not a SystemExit.
        listener = _listening_socket(host, port)
        config = uvicorn.Config(
            build_app(self.state, targets),
            lifespan="off",
            ws="websockets-sansio",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = _Server(config)
        name = f"sandbox server {'+'.join(targets)}"
        task = asyncio.create_task(server.serve(sockets=[listener]), name=name)
        self._serving.append(task)
        while not server.started:
            if task.done():
                await cancel_and_wait(task)  # re-raises the startup error, if there was one
                raise RuntimeError(f"the sandbox server for {', '.join(targets)} stopped during startup")
            await asyncio.sleep(0.005)
        bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{_url_host(bound_host)}:{bound_port}"
        for target in targets:
            self._servers[target] = server
            self.urls[target] = url


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket. Its protocol must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on
    such sockets, and without it small responses wait ~40 ms for delayed ACKs."""
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    return listener


def _layout(split_ports: bool, port: int) -> list[tuple[tuple[str, ...], int]]:
    """Which targets each server serves, and on which port (0 = any free port)."""
    everything = (AUTH_TARGET, *(system.value for system in System))
    if not split_ports:
        return [(everything, port)]
    return [((target,), port + offset if port else 0) for offset, target in enumerate(everything)]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Sandbox]:
    """A sandbox serving in the current event loop for the duration of the ``async with`` block."""
    sandbox = Sandbox(config or SandboxConfig())
    await sandbox.start(host, port)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def run_sandbox(
    host: str, port: int, config: SandboxConfig, announce: Callable[[str], object] = print
) -> None:
    """Serve until SIGINT or SIGTERM, announcing the URLs and demo credentials first."""
    async with running_sandbox(config, host, port) as sandbox:
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, sandbox.request_stop)
        try:
            announce(describe(sandbox))
            await sandbox.wait_closed()
        finally:
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signal_number)


def describe(sandbox: Sandbox) -> str:
    """What a person starting the sandbox needs to point the engine at it."""
    lines = ["Equihome integration sandbox is serving:"]
    lines.append(f"  token endpoint  {sandbox.token_url}")
    lines.append(f"  JWKS            {sandbox.jwks_url}")
    lines.append(f"  administration  {sandbox.base_url}/sandbox/faults (loopback only)")
    for system in System:
        lines.append(f"  {system.value:<15} {sandbox.system_url(system)}  websocket {sandbox.ws_url(system)}")
    for client in sandbox.config.clients:
        scopes = " ".join(client.scopes)
        lines.append(f"  client          {client.client_id} / {client.client_secret}  scopes: {scopes}")
    rate = sandbox.config.events_per_second
    lines.append(f"  seed {sandbox.config.seed}, {rate:g} events per second per system; Ctrl+C stops")
    return "\n".join(lines)
