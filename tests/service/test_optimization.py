"""OptimizationService on a real server: an optimisation end to end, its storage per caller, its refusals,
and sending its recommendation through the outbox once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest

from equihome.optimization.v1 import allocation_pb2
from equihome.optimization.v1 import optimization_service_pb2 as pb
from equihome.optimization.v1.optimization_service_pb2_grpc import OptimizationServiceStub
from equihome.type.v1 import system_pb2
from server.auth import SCOPES, issue_dev_token
from server.settings import Settings
from tests.service.conftest import Service, bearer, refusal, running, small_config

ZONES = ("green", "orange", "red")
DEFAULT_BOUNDS = {"green": (0.30, 0.80), "orange": (0.10, 0.50), "red": (0.00, 0.30)}


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Service, OptimizationServiceStub]]:
    async with running(settings) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
            yield service, OptimizationServiceStub(channel)


def auth(service: Service, subject: str = "dev", *scopes: str):
    return bearer(issue_dev_token(service.data_dir, scopes or SCOPES, subject=subject))


def request(**fields) -> pb.OptimizeAllocationRequest:
    return pb.OptimizeAllocationRequest(
        **{"base_config": small_config(paths=200), "frontier_points": 20, **fields}
    )


async def test_an_optimisation_is_answered_stored_and_private_to_its_caller(served):
    service, stub = served
    answer = await stub.OptimizeAllocation(request(), metadata=auth(service), timeout=120)
    optimization = answer.optimization
    assert re.fullmatch(r"optimization_[0-9a-f]{32}", optimization.optimization_id)
    target = optimization.recommendation.target_allocation
    weights = [getattr(target, zone) for zone in ZONES]
    assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    for zone, weight in zip(ZONES, weights):
        low, high = DEFAULT_BOUNDS[zone]
        assert low - 1e-7 <= weight <= high + 1e-7
    assert len(optimization.frontier) == 20
    recommended = optimization.recommended
    assert recommended.HasField("resimulated") and recommended.HasField("gap")
    assert recommended.gap.expected_return == pytest.approx(
        recommended.resimulated.expected_return - recommended.surrogate.expected_return, abs=1e-12
    )
    assert optimization.recommendation.expected_metrics.irr == pytest.approx(
        recommended.resimulated.expected_return
    )
    current = optimization.current.weights
    for action in optimization.recommendation.actions:
        zone = ZONES[action.zone - 1]
        sign = 1 if action.action_type == allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION else -1
        moved = sign * action.amount / optimization.investable_capital
        assert getattr(current, zone) + moved == pytest.approx(getattr(target, zone), abs=1e-6)
    assert optimization.owner == "dev" and optimization.paths == 200

    stored = await stub.GetOptimization(
        pb.GetOptimizationRequest(optimization_id=optimization.optimization_id), metadata=auth(service)
    )
    assert stored.optimization == optimization
    other = await refusal(
        stub.GetOptimization(
            pb.GetOptimizationRequest(optimization_id=optimization.optimization_id),
            metadata=auth(service, "mallory"),
        )
    )
    assert (other.code, other.reason) == (grpc.StatusCode.NOT_FOUND, "OPTIMIZATION_NOT_FOUND")
    sending = await refusal(
        stub.SendRecommendations(
            pb.SendRecommendationsRequest(optimization_id=optimization.optimization_id, portfolio_id="p1"),
            metadata=auth(service, "mallory"),
        )
    )
    assert sending.code == grpc.StatusCode.NOT_FOUND


async def test_a_recommendation_is_queued_once_however_often_it_is_sent(served):
    service, stub = served
    optimization = (
        await stub.OptimizeAllocation(request(), metadata=auth(service), timeout=120)
    ).optimization
    no_portfolio = await refusal(
        stub.SendRecommendations(
            pb.SendRecommendationsRequest(optimization_id=optimization.optimization_id),
            metadata=auth(service),
        )
    )
    assert no_portfolio.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in no_portfolio.bad_request.field_violations] == ["portfolio_id"]
    send = pb.SendRecommendationsRequest(
        optimization_id=optimization.optimization_id, portfolio_id="portfolio_456"
    )
    first = await stub.SendRecommendations(send, metadata=auth(service))
    assert [d.system for d in first.deliveries] == [
        system_pb2.SYSTEM_TRAFFIC_LIGHT,
        system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT,
    ]
    assert [d.newly_queued for d in first.deliveries] == [True, True]
    again = await stub.SendRecommendations(send, metadata=auth(service))
    assert [d.newly_queued for d in again.deliveries] == [False, False]
    elsewhere = await refusal(
        stub.SendRecommendations(
            pb.SendRecommendationsRequest(optimization_id=optimization.optimization_id, portfolio_id="other"),
            metadata=auth(service),
        )
    )
    assert (elsewhere.code, elsewhere.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "RECOMMENDATION_SENT_ELSEWHERE",
    )
    stored = await stub.GetOptimization(
        pb.GetOptimizationRequest(optimization_id=optimization.optimization_id), metadata=auth(service)
    )
    assert len(stored.optimization.deliveries) == 2


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        (
            {"zone_bounds": allocation_pb2.ZoneBounds(green=allocation_pb2.WeightBounds(min=0.9, max=0.2))},
            ["zone_bounds.green.min"],
        ),
        ({"frontier_points": 1, "paths": 50}, ["frontier_points", "paths"]),
        ({"objective": allocation_pb2.OBJECTIVE_TARGET_RETURN}, ["target_return"]),
        ({"max_zone_hhi": 0.2, "min_prob_hurdle": 1.0}, ["min_prob_hurdle", "max_zone_hhi"]),
        ({"send_recommendations": True}, ["send_recommendations"]),
        (
            {
                "zone_bounds": allocation_pb2.ZoneBounds(green=allocation_pb2.WeightBounds(max=0.2)),
                "apply_guardrail_caps": True,
            },
            ["zone_bounds"],
        ),  # at most 0.2 + 0.3 + 0.05
        ({"optimize_regions": True, "max_region_share": 0.2}, ["region_bounds"]),  # 4 regions × 0.2 < 1
        (
            {"optimize_regions": True, "region_bounds": [allocation_pb2.RegionBounds(region="atlantis")]},
            ["region_bounds[0].region"],
        ),
    ],
)
async def test_bad_options_are_refused_with_the_fields_named(served, fields, violations):
    service, stub = served
    refused = await refusal(stub.OptimizeAllocation(request(**fields), metadata=auth(service)))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(v.field for v in refused.bad_request.field_violations) == sorted(violations)


async def test_limits_no_allocation_meets_fail_the_precondition(served):
    service, stub = served
    impossible = request(min_prob_hurdle=0.99)  # the small fund's mean LP IRR is far below the 8 % hurdle
    refused = await refusal(stub.OptimizeAllocation(impossible, metadata=auth(service), timeout=120))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSTRAINTS_INFEASIBLE")


async def test_the_cost_of_every_run_is_admitted_before_anything_runs(tmp_path):
    settings = Settings(
        port=0, metrics_enabled=False, data_dir=tmp_path / "data", grace_period_s=1.0, max_run_work=2e7
    )  # one 200-path run of the small fund (1e7) fits, the four runs do not
    async with running(settings) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
            refused = await refusal(
                OptimizationServiceStub(channel).OptimizeAllocation(request(), metadata=auth(service))
            )
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_COSTLY")
    assert "base_config.monte_carlo.paths" in [v.field for v in refused.bad_request.field_violations]


async def test_reading_needs_the_read_scope(served):
    service, stub = served
    refused = await refusal(
        stub.GetOptimization(
            pb.GetOptimizationRequest(optimization_id="optimization_" + "0" * 32),
            metadata=auth(service, "dev", "optimization:write"),
        )
    )
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
