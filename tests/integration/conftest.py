"""A real service for integration tests: the sandbox on loopback (strict: the guide exactly), the
integration runtime pointed at it (``integrations = external``), a gRPC server on 127.0.0.1:0 with every
service as ``equihome-sim serve`` builds them, and a SQLite store under ``tmp_path``. Nothing is mocked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from pydantic import SecretStr

from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, running_sandbox
from equihome.events.v1 import event_service_pb2, event_service_pb2_grpc
from equihome.integration.v1 import integration_service_pb2_grpc
from equihome.simulation.v1 import simulation_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server.app import AppServer, Lifecycle, build_server
from server.integration.runtime import IntegrationRuntime
from server.jobs import JobRunner
from server.observability import Metrics
from server.services import ServiceDependencies, build_bindings
from server.settings import Settings
from server.store import Store

T = TypeVar("T")
QUIET = SandboxConfig(events_per_second=0)
WAIT_S = 10.0  # upper bound for anything a test waits for; never an assertion on speed


def service_settings(sandbox: Sandbox, data_dir: Path, **overrides: Any) -> Settings:
    systems: dict[str, Any] = {}
    for prefix, system in (("traffic_light", "traffic-light"), ("pms", "pms"), ("underwriting", "underwriting")):
        systems |= {
            f"{prefix}_base_url": sandbox.system_url(system),
            f"{prefix}_ws_url": sandbox.ws_url(system),
            f"{prefix}_token_url": sandbox.token_url,
            f"{prefix}_client_id": DEMO_CLIENT_ID,
            f"{prefix}_client_secret": SecretStr(DEMO_CLIENT_SECRET),
        }
    defaults: dict[str, Any] = {
        "port": 0,
        "metrics_enabled": False,
        "data_dir": data_dir,
        "grace_period_s": 1.0,
        "insecure_disable_auth": True,
        "integrations": "external",
        "integration_timeout_s": 3.0,
        "integration_get_attempts": 2,
        "integration_breaker_threshold": 3,
        "integration_breaker_reset_s": 1.0,
        "integration_reconcile_grace_s": 0.2,
        # Off unless a test is about the mirror: its reconciliations add events and REST calls that tests
        # of the event stream and of the REST resilience would have to step around.
        "integration_sync": False,
        "integration_mirror_portfolios": sandbox.config.portfolio_id,
        "integration_mirror_regions": ",".join(sandbox.world.regions),
        "max_concurrent_runs": 1,
        # Off unless a test is about it: a zone event would start a re-optimisation in the one worker slot.
        "reoptimize": False,
    }
    return Settings(**(defaults | systems | overrides))


@dataclass
class Service:
    """A running service and handles on everything behind it."""

    sandbox: Sandbox
    settings: Settings
    app: AppServer
    runtime: IntegrationRuntime
    metrics: Metrics
    channel: grpc.aio.Channel
    events: event_service_pb2_grpc.EventServiceStub = field(init=False)
    integrations: integration_service_pb2_grpc.IntegrationServiceStub = field(init=False)
    simulations: simulation_service_pb2_grpc.SimulationServiceStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.integrations = integration_service_pb2_grpc.IntegrationServiceStub(self.channel)
        self.simulations = simulation_service_pb2_grpc.SimulationServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.sample(name, labels) or 0.0

    async def serving(self, service: str) -> bool:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=service))
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def subscribe(self, **request: Any) -> Any:
        """A SubscribeEvents call, returned once the server has attached it to the bus (so events
        published from now on reach it)."""
        before = self.runtime.bus.attachments
        call = self.events.SubscribeEvents(event_service_pb2.SubscribeEventsRequest(**request))
        await eventually(lambda: self.runtime.bus.attachments > before)
        return call

    async def connected(self) -> None:
        """Until every system has a subscribed WebSocket."""
        await eventually(lambda: all(link.monitor.socket_state == "connected" for link in self.runtime.links.values()))


async def start_service(sandbox: Sandbox, settings: Settings) -> tuple[AppServer, IntegrationRuntime, Metrics]:
    """Assembled as ``serve_cli.open_services`` does, keeping a handle on the integration runtime."""
    lifecycle, metrics = Lifecycle(), Metrics()
    store = await Store.open(settings.data_dir)
    lifecycle.add_close_hook(store.close, name="store")
    await store.runs.mark_unfinished_interrupted()
    runner = JobRunner.from_settings(settings, metrics)
    await runner.start()
    lifecycle.add_close_hook(runner.shutdown, name="job runner")
    runtime = await IntegrationRuntime.start(settings, store, metrics.registry)
    lifecycle.add_close_hook(runtime.aclose, name="integrations")
    bindings = build_bindings(ServiceDependencies(settings, lifecycle, metrics, store, runner, runtime))
    app = build_server(settings, bindings, lifecycle=lifecycle, metrics=metrics)
    await app.start()
    runtime.follow_health(app.set_serving)
    return app, runtime, metrics


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """``await make_service(sandbox, **settings)``: a service on ``sandbox``; all are shut down afterwards."""
    started: list[Service] = []

    async def make(sandbox: Sandbox, **overrides: Any) -> Service:
        settings = service_settings(sandbox, tmp_path / "data", **overrides)
        app, runtime, metrics = await start_service(sandbox, settings)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        started.append(Service(sandbox, settings, app, runtime, metrics, channel))
        return started[-1]

    yield make
    for running in started:
        await running.channel.close()
        await running.app.shutdown(grace=0)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(QUIET) as running:
        yield running


@pytest.fixture
async def service(sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]) -> Service:
    running = await make_service(sandbox)
    await running.connected()
    return running


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT_S) -> None:
    """Wait until ``condition()`` holds (polling); fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while True:
            outcome = condition()
            if isinstance(outcome, Awaitable):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(0.01)


async def take(call: Any, count: int, *, skip_heartbeats: bool = True) -> list[Any]:
    """The next ``count`` events of a SubscribeEvents call (heartbeats skipped unless asked)."""
    events = []
    async with asyncio.timeout(WAIT_S):
        while len(events) < count:
            response = await call.read()
            assert response is not grpc.aio.EOF, "the stream ended early"
            if skip_heartbeats and response.event.WhichOneof("payload") == "heartbeat":
                continue
            events.append(response.event)
    return events
