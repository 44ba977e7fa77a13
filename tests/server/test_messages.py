"""Request checks: REQUIRED fields, string and list bounds, output-only fields and configs left alone."""

from __future__ import annotations

from equihome.integration.v1 import integration_service_pb2
from equihome.optimization.v1 import optimization_service_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.messages import violations


def test_required_fields_must_be_set_at_every_depth() -> None:
    empty = optimization_service_pb2.OptimizeAllocationRequest()
    with_parts = optimization_service_pb2.OptimizeAllocationRequest()
    with_parts.region_bounds.add()

    assert dict(violations(empty)) == {}
    assert dict(violations(with_parts)) == {"region_bounds[0].region": "required"}
    assert dict(violations(optimization_service_pb2.SendRecommendationsRequest())) == {
        "optimization_id": "required"
    }
    assert dict(violations(service_pb2.CreateSimulationRequest())) == {"simulation": "required"}
    assert dict(violations(integration_service_pb2.GetZoneClassificationsRequest())) == {
        "property_ids": "required"
    }


def test_strings_and_lists_are_bounded_without_echoing_them() -> None:
    request = service_pb2.ListSimulationsRequest(portfolio_id="p" * 129, page_token="t" * 1025)
    request.states.extend([simulation_pb2.Simulation.STATE_RUNNING] * 17)
    ids = integration_service_pb2.GetMarketRiskRequest(region_ids=["ok", "r" * 200])

    assert dict(violations(request)) == {
        "portfolio_id": "at most 128 characters",
        "page_token": "at most 1024 characters",
        "states": "at most 16 items",
    }
    assert dict(violations(ids)) == {"region_ids[1]": "at most 128 characters"}


def test_output_only_fields_and_configs_are_not_walked() -> None:
    simulation = simulation_pb2.Simulation(display_name="ok", state=simulation_pb2.Simulation.STATE_RUNNING)
    simulation.result.metadata.config_sha256 = "x" * 5000  # output only: ignored, never refused
    simulation.config.book.loans.add(id="y" * 5000)  # the config's own checks handle it, off the event loop
    request = service_pb2.CreateSimulationRequest(simulation=simulation)

    assert list(violations(request)) == []
    assert dict(violations(service_pb2.CreateSimulationRequest(
        simulation=simulation_pb2.Simulation(display_name="n" * 201)))) == {
        "simulation.display_name": "at most 200 characters"}  # fmt: skip
