"""Finding "unbounded strings and replies": a 4 MiB portfolio_id was accepted, after which ListSimulations
failed RESOURCE_EXHAUSTED for every caller; a 100,000-loan book was validated on the event loop (health
blocked 2-3 s) and its reply, which echoed the config twice, could not be sent."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2

from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.type.v1 import zone_pb2
from server.admission import MAX_CONFIG_BYTES
from tests.hostile.conftest import Callers, ServerProcess
from tests.service.conftest import refusal

Simulation = simulation_pb2.Simulation
SUMMARY = simulation_pb2.SIMULATION_VIEW_SUMMARY
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def fields(details) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert details.bad_request is not None
    return {violation.field: violation.description for violation in details.bad_request.field_violations}


def book(loans: int, id_chars: int = 8) -> simulation_config_pb2.SimulationConfig:
    """A config whose book is ``loans`` explicit loans of 1,000 each (nothing generated) in a fund of a
    billion (so the engine's own checks pass), run on 50 paths."""
    config = simulation_config_pb2.SimulationConfig()
    config.fund.size = 1e9
    config.book.generate = False
    config.monte_carlo.paths = 50
    for index in range(loans):
        config.book.loans.add(
            id=f"{index:0{id_chars}d}", amount=1000.0, property_value=2000.0, zone=zone_pb2.ZONE_GREEN,
            region="sydney_north",
        )
    return config


def create(config: simulation_config_pb2.SimulationConfig, **fields_: object) -> service_pb2.CreateSimulationRequest:
    simulation = Simulation(config=config, portfolio_id=str(fields_.pop("portfolio_id", "")))
    return service_pb2.CreateSimulationRequest(simulation=simulation, **fields_)  # type: ignore[arg-type]


async def test_a_huge_portfolio_id_is_refused_and_listing_keeps_working(
    server: ServerProcess, callers: Callers
) -> None:
    huge = "p" * (4 * 1024 * 1024)
    created = await refusal(callers.simulations.CreateSimulation(
        create(book(1), portfolio_id=huge), metadata=server.token("vandal"), timeout=30))
    filtered = await refusal(callers.simulations.ListSimulations(
        service_pb2.ListSimulationsRequest(portfolio_id=huge), metadata=server.token("vandal"), timeout=30))
    listed = await callers.simulations.ListSimulations(
        service_pb2.ListSimulationsRequest(), metadata=server.token("bystander"), timeout=30)

    assert (created.code, created.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert fields(created) == {"simulation.portfolio_id": "at most 128 characters"}
    assert fields(filtered) == {"portfolio_id": "at most 128 characters"}
    assert list(listed.simulations) == []


async def test_a_100000_loan_book_is_refused_before_any_work(server: ServerProcess, callers: Callers) -> None:
    metadata = server.token("bulk")
    details = await refusal(callers.simulations.CreateSimulation(create(book(100_000)), metadata=metadata,
                                                                 timeout=60))  # fmt: skip
    listed = await callers.simulations.ListSimulations(service_pb2.ListSimulationsRequest(), metadata=metadata)

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(details) == {"simulation.config": f"at most {MAX_CONFIG_BYTES} bytes serialised"}
    assert list(listed.simulations) == []


async def test_a_large_book_is_validated_off_the_event_loop(server: ServerProcess, callers: Callers) -> None:
    """While one caller's 60,000-loan book is admitted (seconds of CPU), health checks keep answering."""
    config = book(60_000)
    assert config.ByteSize() < MAX_CONFIG_BYTES
    call = callers.simulations.CreateSimulation(
        create(config, validate_only=True), metadata=server.token("bulk"), timeout=120
    )
    started = time.monotonic()
    waits = []
    while not call.done():
        asked = time.monotonic()
        await callers.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        waits.append(time.monotonic() - asked)
        await asyncio.sleep(0.01)
    took = time.monotonic() - started
    reply = await call

    assert len(waits) >= 5, (took, waits)
    assert max(waits) < took / 4, (took, max(waits))  # no health check waited for the admission
    assert len(reply.simulation.config.book.loans) == 60_000


async def test_a_reply_carries_the_book_once(server: ServerProcess, callers: Callers) -> None:
    config = book(20_000)
    reply = await callers.simulations.CreateSimulation(
        create(config, validate_only=True), metadata=server.token("bulk"), timeout=120
    )

    assert len(reply.simulation.config.book.loans) == 20_000
    assert len(reply.simulation.effective_config.book.loans) == 0  # documented: explicit loans are in config
    assert reply.simulation.effective_config.book.generate is False  # the rest of the effective config is there
    assert reply.ByteSize() < 1.2 * config.ByteSize()


async def test_pages_are_bounded_by_bytes(server: ServerProcess, callers: Callers) -> None:
    """Three runs with 1.5 MB configs: their SUMMARY views do not fit one reply, so the page ends early and
    the next page token carries on; every run is listed exactly once."""
    metadata = server.token("pager")
    created = []
    for _ in range(3):
        reply = await callers.simulations.CreateSimulation(
            create(book(10_000, id_chars=128)), metadata=metadata, timeout=120
        )
        created.append(reply.simulation.name)
        await callers.simulations.CancelSimulation(
            service_pb2.CancelSimulationRequest(name=reply.simulation.name), metadata=metadata
        )
    seen: list[str] = []
    sizes = []
    token = ""
    while True:
        page = await callers.simulations.ListSimulations(
            service_pb2.ListSimulationsRequest(view=SUMMARY, page_size=1000, page_token=token), metadata=metadata,
            timeout=60,
        )  # fmt: skip
        seen += [simulation.name for simulation in page.simulations]
        sizes.append(page.ByteSize())
        token = page.next_page_token
        if not token:
            break

    assert sorted(seen) == sorted(created)
    assert len(sizes) > 1 and max(sizes) < MAX_MESSAGE_BYTES
