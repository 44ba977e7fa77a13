"""Simulating the live book: a portfolio_id builds the engine's book from the mirror of the sandbox's PMS
(and TLS), and the run keeps the snapshot it used. Expectations come from the sandbox's world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import json_format

from adapters.sandbox import Sandbox, SandboxConfig, running_sandbox
from adapters.sandbox.config import Extensions
from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as pb
from equihome.type.v1 import system_pb2
from server.errors import unpack
from tests.integration.conftest import Service, eventually

Simulation = simulation_pb2.Simulation
SYNC = {"integration_sync": True}
FEW_PATHS = json_format.ParseDict({"monte_carlo": {"paths": 100, "chunk_paths": 100}}, simulation_config_pb2.SimulationConfig())


async def finished(service: Service, name: str) -> Simulation:
    request = pb.WatchSimulationRequest(name=name, view=simulation_pb2.SIMULATION_VIEW_SUMMARY)
    last = None
    async for message in service.simulations.WatchSimulation(request, timeout=120):
        last = message.simulation
    assert last is not None and last.state == Simulation.STATE_SUCCEEDED, last
    return last


async def test_a_simulation_of_the_sandboxs_portfolio_runs_exactly_its_pms_book_and_keeps_the_snapshot(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, **SYNC)
    await service.connected()
    approval = sandbox.emit("underwriting", "loan_approved")  # its terms reach the mirror from the event
    funded = sandbox.emit("pms", "portfolio_updated")  # and the loan joins the portfolio
    assert approval and funded and funded.data["loan"]["id"] == approval.data["loan_id"]
    portfolio = sandbox.world.portfolio
    pms_loans = {loan.id: loan for loan in portfolio.loans.values()}
    await eventually(lambda: _mirrored(service, approval.data["loan_id"]))

    created = (
        await service.simulations.CreateSimulation(
            pb.CreateSimulationRequest(simulation=Simulation(portfolio_id=portfolio.id, config=FEW_PATHS))
        )
    ).simulation
    run = await finished(service, created.name)

    book = run.effective_config.book
    assert len(book.loans) == len(pms_loans) == run.result.metadata.loans_in_book == 401
    assert sum(loan.amount for loan in book.loans) == sum(loan.amount for loan in pms_loans.values())
    for loan in book.loans:
        pms = pms_loans[loan.id]
        assert (loan.amount, loan.property_value, loan.origination_month) == (pms.amount, pms.property.value, 12 * pms.origination_year)
        if loan.id != approval.data["loan_id"]:  # the new loan's exit year is not in its event: simulated exit
            assert loan.planned_exit_month == 12 * pms.exit_year
    assert not book.generate
    (approved,) = [loan for loan in book.loans if loan.HasField("interest_rate")]
    assert (approved.id, approved.interest_rate) == (approval.data["loan_id"], approval.data["terms"]["interest_rate"])
    snapshot = run.book_snapshot
    assert (snapshot.portfolio_id, snapshot.loan_count, snapshot.loans_without_terms) == (portfolio.id, 401, 400)
    assert snapshot.total_principal == sum(loan.amount for loan in pms_loans.values())
    assert snapshot.fund_age_months == 12 * max(loan.origination_year for loan in pms_loans.values())
    pms_source = next(source for source in snapshot.sources if source.source == system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT)
    assert pms_source.fetch_time.ToMicroseconds() <= snapshot.as_of_time.ToMicroseconds()
    assert run.effective_config.fund.size >= sum(loan.amount for loan in pms_loans.values())

    await service.app.shutdown(grace=1)  # the snapshot is stored with the run
    again = await make_service(sandbox, **SYNC)
    stored = (await again.simulations.GetSimulation(pb.GetSimulationRequest(name=run.name))).simulation
    assert stored.book_snapshot == snapshot and stored.effective_config == run.effective_config


async def _mirrored(service: Service, loan_id: str) -> bool:
    book = await service.runtime.mirror.book("portfolio_456")
    return book is not None and loan_id in book.terms and any(loan.id == loan_id for loan in book.loans)


async def test_regions_and_their_spreads_come_from_the_mirror_when_the_pms_reports_regions(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    linked = SandboxConfig(events_per_second=0, extensions=Extensions(loan_links=True))
    async with running_sandbox(linked) as sandbox:
        service = await make_service(sandbox, **SYNC)
        request = pb.RunSimulationRequest(portfolio_id="portfolio_456", config=FEW_PATHS)
        run = (await service.simulations.RunSimulation(request, timeout=120)).simulation

        world = sandbox.world
        principal = {name: 0.0 for name in world.regions}
        for loan in world.portfolio.loans.values():
            principal[loan.property.region_id] += loan.amount
        omissions = sandbox.state.omissions
        forecasts = {
            name: region.appreciation_forecast
            for name, region in world.regions.items()
            if "appreciation_forecast" in omissions.item("market_risk", name, {"appreciation_forecast": 0})
        }

    mean = sum(principal[name] * forecasts[name] for name in forecasts) / sum(principal[name] for name in forecasts)
    regions = {region.name: region for region in run.effective_config.book.regions}
    assert set(regions) == set(world.regions)
    for name, region in regions.items():
        assert region.weight == pytest.approx(principal[name] / sum(principal.values()))
        expected = (1 + forecasts[name]) / (1 + mean) - 1 if name in forecasts else 0.0
        assert region.drift_spread == pytest.approx(expected)
    assert set(run.book_snapshot.regions_without_forecast) == set(world.regions) - set(forecasts)
    assert run.state == Simulation.STATE_SUCCEEDED and run.portfolio_id == "portfolio_456"


async def test_an_unknown_portfolio_is_not_found_and_a_book_in_the_config_conflicts(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, **SYNC)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await service.simulations.RunSimulation(pb.RunSimulationRequest(portfolio_id="portfolio_999", config=FEW_PATHS))
    conflicting = simulation_config_pb2.SimulationConfig()
    conflicting.CopyFrom(FEW_PATHS)
    conflicting.book.regions.add(name="sydney_north")
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await service.simulations.CreateSimulation(
            pb.CreateSimulationRequest(simulation=Simulation(portfolio_id="portfolio_456", config=conflicting))
        )

    assert (unpack(unknown.value).code, unpack(unknown.value).reason) == (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND")
    details = unpack(conflict.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [violation.field for violation in details.bad_request.field_violations] == ["simulation.config.book.regions"]
