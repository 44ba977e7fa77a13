"""Bad requests are refused with INVALID_ARGUMENT (or the documented code) naming the offending field."""

from __future__ import annotations

import grpc
import pytest

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.errors import ErrorDetails
from tests.service.conftest import Service, refusal, small_config

Simulation = simulation_pb2.Simulation


def fields(details: ErrorDetails) -> dict[str, str]:
    assert details.bad_request is not None
    return {violation.field: violation.description for violation in details.bad_request.field_violations}


async def create_refusal(service: Service, config: object, **request: object) -> ErrorDetails:
    call = service.stub.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=Simulation(config=config), **request),
        metadata=service.auth(),
    )
    return await refusal(call)


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"fees": {"management_fee_rate": 0.5}}, "simulation.config.fees.management_fee_rate"),
        (
            {"market": {"correlation": {"green_orange": 0.9, "green_red": -0.9, "orange_red": 0.9}}},
            "simulation.config.market.correlation",
        ),
        (
            {"book": {"generated": {"zone_allocation": {"green": 0.5, "orange": 0.3, "red": 0.1}}}},
            "simulation.config.book.generated.zone_allocation",
        ),
        (
            {"book": {"loans": [{"id": "a", "amount": 1, "property_value": 2, "region": "sydney_north"}]}},
            "simulation.config.book.loans[0].zone",
        ),
    ],
)
async def test_an_invalid_config_names_the_field(service: Service, sections: dict, field: str) -> None:
    details = await create_refusal(service, small_config(**sections))

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert field in fields(details), fields(details)


async def test_validate_only_checks_and_stores_nothing(service: Service) -> None:
    bad = await create_refusal(service, small_config(fees={"expense_rate": 1.0}), validate_only=True)
    good = await service.stub.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=Simulation(config=small_config()), validate_only=True),
        metadata=service.auth(),
    )
    listed = await service.stub.ListSimulations(service_pb2.ListSimulationsRequest(), metadata=service.auth())

    assert "simulation.config.fees.expense_rate" in fields(bad)
    assert good.simulation.name == "" and good.simulation.state == Simulation.STATE_PENDING
    assert good.simulation.effective_config.fees.management_fee_rate == 0.02  # defaults filled in
    assert list(listed.simulations) == []


async def test_run_simulation_names_fields_under_config_and_caps_paths(service: Service) -> None:
    invalid = await refusal(
        service.stub.RunSimulation(
            service_pb2.RunSimulationRequest(config=small_config(waterfall={"catch_up_rate": 0.5})),
            metadata=service.auth(), timeout=10,
        )
    )  # fmt: skip
    too_large = await refusal(
        service.stub.RunSimulation(
            service_pb2.RunSimulationRequest(config=small_config(paths=20_001)),
            metadata=service.auth(),
            timeout=10,
        )
    )

    assert "config.waterfall.catch_up_rate" in fields(invalid)
    assert (too_large.code, too_large.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_LARGE")
    assert too_large.error_info is not None and too_large.error_info.metadata["max_paths"] == "20000"
    assert "config.monte_carlo.paths" in fields(too_large)


async def test_request_fields_are_checked(service: Service) -> None:
    negative = await refusal(service.list(page_size=-1))
    full_list = await refusal(service.list(view=simulation_pb2.SIMULATION_VIEW_FULL))
    bad_name = await refusal(service.get("runs/1"))
    missing = await refusal(service.get("simulations/00000000-0000-4000-8000-000000000000"))
    bad_request_id = await create_refusal(service, small_config(), request_id="not-a-uuid")

    assert (negative.code, negative.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert "page_size" in fields(negative)
    assert "view" in fields(full_list)
    assert (bad_name.code, bad_name.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RESOURCE_NAME_INVALID")
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "SIMULATION_NOT_FOUND")
    assert "request_id" in fields(bad_request_id)
