"""Fixtures: the real service on 127.0.0.1:0 (SQLite under tmp_path, spawned job workers, dev-key auth),
plus small configs and helpers to call it and read its errors."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format

from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from equihome.type.v1 import loan_pb2, zone_pb2
from server import errors
from server.app import AppServer, Lifecycle, build_server
from server.auth import SCOPES, issue_dev_token
from server.observability import Metrics
from server.serve_cli import open_services
from server.integration.mirror import LOAN, PORTFOLIO, Mirror, now_us
from server.settings import Settings
from server.store import Store

Metadata = tuple[tuple[str, str], ...]
Simulation = simulation_pb2.Simulation

# About 17 loans: 500 paths take a fraction of a second in the core.
SMALL_FUND: dict[str, Any] = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
    "monte_carlo": {"paths": 300, "chunk_paths": 100},
}
# Long enough to be cancelled or interrupted while running (tens of seconds if left alone).
LONG_PATHS = 400_000


def small_config(paths: int = 300, chunk_paths: int = 100, **sections: dict[str, Any]) -> Any:
    """A proto ``SimulationConfig`` of the small fund; ``sections`` replace whole sections."""
    data = copy.deepcopy(SMALL_FUND) | sections
    data["monte_carlo"] = {**data["monte_carlo"], "paths": paths, "chunk_paths": chunk_paths}
    return json_format.ParseDict(data, simulation_config_pb2.SimulationConfig())


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Client:
    """A caller of SimulationService holding dev tokens of the server's data directory."""

    stub: SimulationServiceStub
    data_dir: Path

    def auth(self, *scopes: str) -> Metadata:
        """Call metadata with a dev token holding ``scopes`` (default: every scope)."""
        return bearer(issue_dev_token(self.data_dir, scopes or SCOPES))

    async def create(self, config: Any, **fields: Any) -> Simulation:
        request = service_pb2.CreateSimulationRequest(
            simulation=Simulation(config=config, display_name=fields.pop("display_name", "")), **fields
        )
        return (await self.stub.CreateSimulation(request, metadata=self.auth())).simulation

    async def get(self, name: str, view: int = simulation_pb2.SIMULATION_VIEW_SUMMARY) -> Simulation:
        request = service_pb2.GetSimulationRequest(name=name, view=view)
        return (await self.stub.GetSimulation(request, metadata=self.auth())).simulation

    def list(self, **fields: Any) -> Any:
        """The ListSimulations call (await it, or pass it to ``refusal``)."""
        return self.stub.ListSimulations(service_pb2.ListSimulationsRequest(**fields), metadata=self.auth())

    def cancel(self, name: str) -> Any:
        """The CancelSimulation call (await it, or pass it to ``refusal``)."""
        request = service_pb2.CancelSimulationRequest(name=name)
        return self.stub.CancelSimulation(request, metadata=self.auth())

    def watch(self, name: str, view: int = 0, interval_ms: int = 100) -> Any:
        request = service_pb2.WatchSimulationRequest(
            name=name, view=view, min_update_interval=duration_pb2.Duration(nanos=interval_ms * 1_000_000)
        )
        return self.stub.WatchSimulation(request, metadata=self.auth())

    async def until_end(self, name: str, view: int = 0) -> list[service_pb2.WatchSimulationResponse]:
        return [message async for message in self.watch(name, view)]

    async def until_progress(self, name: str) -> service_pb2.WatchSimulationResponse:
        """Watch until the run reports simulated paths, then hang up."""
        call = self.watch(name)
        try:
            async for message in call:
                if message.simulation.progress.paths_completed > 0:
                    return message
        finally:
            call.cancel()
        raise AssertionError(f"{name} ended before it made progress")


@dataclass
class Service(Client):
    """The service running in this process, and a client of it."""

    app: AppServer

    def runs_in_flight(self) -> float | None:
        return self.app.metrics.sample("equihome_runs_in_flight")


async def start_app(settings: Settings) -> AppServer:
    """The server as ``equihome-sim serve`` assembles it, started on the settings' port."""
    lifecycle, metrics = Lifecycle(), Metrics()
    bindings = await open_services(settings, lifecycle, metrics)
    app = build_server(settings, bindings, lifecycle=lifecycle, metrics=metrics)
    await app.start()
    return app


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Service]:
    app = await start_app(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Service(SimulationServiceStub(channel), settings.data_dir, app)
    finally:
        await app.shutdown(grace=0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        port=0, metrics_enabled=False, data_dir=tmp_path / "data", grace_period_s=1.0,
        max_concurrent_runs=2, max_queued_runs=2,
    )  # fmt: skip


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async with running(settings) as service:
        yield service


async def seed_portfolio(data_dir: Path, portfolio_id: str, loans: list[loan_pb2.PortfolioLoan]) -> None:
    """Put a portfolio into the mirror of the store under ``data_dir``, as a PMS read would (before the
    server starts: with integrations off, nothing else fills the mirror)."""
    store = await Store.open(data_dir)
    try:
        mirror = Mirror(store)
        changes = await mirror.compare(LOAN, portfolio_id, {loan.id: loan for loan in loans}, complete=True, synced=False)
        await mirror.settle(changes, now_us(), [(PORTFOLIO, portfolio_id)])
    finally:
        await store.close()


def small_book(count: int = 4) -> list[loan_pb2.PortfolioLoan]:
    """``count`` loans of 200k on 500k properties, green, originated in year 0, no region reported."""
    return [
        loan_pb2.PortfolioLoan(id=f"loan_{i}", loan_amount=200_000, property_value=500_000, zone=zone_pb2.ZONE_GREEN)
        for i in range(1, count + 1)
    ]


async def refusal(call: Any) -> errors.ErrorDetails:
    """The code and rich details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return errors.unpack(failure.value)
