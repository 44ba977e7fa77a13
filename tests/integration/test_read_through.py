"""Typed read-throughs against the real sandbox: shapes, partial batches, errors, correlation ids."""

from __future__ import annotations

import logging

import grpc
import pytest

from adapters.sandbox import Sandbox
from adapters.systems import Upstream
from equihome.integration.v1 import integration_service_pb2 as pb
from equihome.type.v1 import loan_pb2, market_pb2, zone_pb2
from server.errors import unpack
from server.observability import correlation_id_var
from tests.integration.conftest import Service

ZONE_NAMES = {"green": zone_pb2.ZONE_GREEN, "orange": zone_pb2.ZONE_ORANGE, "red": zone_pb2.ZONE_RED}


async def test_zones_of_a_partial_batch_list_the_missing_properties(service: Service) -> None:
    world = service.sandbox.world
    request = pb.GetZoneClassificationsRequest(property_ids=["property_3", "property_1", "nowhere_9", "property_2"])

    response = await service.integrations.GetZoneClassifications(request)

    assert [item.property_id for item in response.classifications] == ["property_3", "property_1", "property_2"]
    for item in response.classifications:
        assert item.zone == ZONE_NAMES[world.properties[item.property_id].zone.value]
    assert list(response.missing_property_ids) == ["nowhere_9"]
    assert not response.freshness.stale and response.freshness.data_age.ToNanoseconds() == 0
    assert response.freshness.source == Upstream.TRAFFIC_LIGHT.proto


async def test_market_risk_of_known_and_unknown_regions(service: Service) -> None:
    regions = service.sandbox.world.regions
    response = await service.integrations.GetMarketRisk(pb.GetMarketRiskRequest(region_ids=["north_shore", "atlantis"]))

    (risk,) = response.market_risks
    assert risk.region_id == "north_shore"
    assert risk.risk_score == pytest.approx(regions["north_shore"].risk_score)
    assert risk.risk_level in (market_pb2.RISK_LEVEL_LOW, market_pb2.RISK_LEVEL_MEDIUM, market_pb2.RISK_LEVEL_HIGH)
    assert list(response.missing_region_ids) == ["atlantis"]


async def test_composition_metrics_and_loan_parameters_are_typed(service: Service) -> None:
    portfolio = service.sandbox.world.portfolio_named("portfolio_456")
    assert portfolio is not None

    composition = (
        await service.integrations.GetPortfolioComposition(pb.GetPortfolioCompositionRequest(portfolio_id="portfolio_456"))
    ).composition
    assert len(composition.loans) == len(portfolio.loans)
    loan = composition.loans[0]
    assert loan.zone != zone_pb2.ZONE_UNSPECIFIED and loan.HasField("appreciation_rate") and loan.HasField("region")
    assert composition.metrics.total_loan_amount == sum(item.loan_amount for item in composition.loans)

    metrics = await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id="portfolio_456"))
    assert metrics.metrics.HasField("irr") and metrics.metrics.HasField("var_95")
    assert not metrics.metrics.HasField("cvar_99")  # PMS does not report it: left unset
    dates = [(period.date.year, period.date.month) for period in metrics.historical_performance]
    assert dates[0] == (2023, 1) and dates == sorted(dates) and len(dates) == 36

    application = (await service.integrations.GetLoanParameters(pb.GetLoanParametersRequest(loan_id="loan_401")))
    assert application.loan_application.loan_id == "loan_401"
    assert application.loan_application.property_type != loan_pb2.PROPERTY_TYPE_UNSPECIFIED
    assert application.loan_application.HasField("borrower_credit_score")


async def test_unknown_portfolio_is_not_found_upstream(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.integrations.GetPortfolioComposition(pb.GetPortfolioCompositionRequest(portfolio_id="ghost"))

    details = unpack(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "UPSTREAM_NOT_FOUND"
    assert details.error_info is not None and details.error_info.metadata["system"] == "pms"


async def test_invalid_requests_are_refused_before_any_upstream_call(service: Service) -> None:
    for request in (
        pb.GetZoneClassificationsRequest(),
        pb.GetZoneClassificationsRequest(property_ids=["a", "a"]),
        pb.GetZoneClassificationsRequest(property_ids=[f"p{i}" for i in range(101)]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.integrations.GetZoneClassifications(request)
        assert unpack(caught.value).reason == "FIELD_INVALID"
    assert service.sample("equihome_upstream_requests_total", system="traffic-light", method="GET", outcome="200") == 0


async def test_the_callers_correlation_id_reaches_the_upstream_and_the_logs(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.http")
    metadata = (("x-correlation-id", "trace-42"),)

    with pytest.raises(grpc.aio.AioRpcError):
        await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id="ghost"), metadata=metadata)

    failures = [record for record in caplog.records if record.getMessage().startswith("upstream call failed")]
    assert failures and getattr(failures[-1], "upstream_correlation_id") == "trace-42"  # echoed by the upstream


async def test_posts_carry_the_correlation_id(service: Service, sandbox: Sandbox) -> None:
    from equihome.optimization.v1 import allocation_pb2
    from equihome.type.v1 import zone_pb2 as zones

    recommendation = allocation_pb2.AllocationRecommendation(
        target_allocation=zones.ZoneWeights(green=0.7, orange=0.25, red=0.05)
    )
    assert service.runtime.clients is not None
    token = correlation_id_var.set("trace-post-7")
    try:
        await service.runtime.clients.traffic_light.send_recommendations("portfolio_456", recommendation)
    finally:
        correlation_id_var.reset(token)

    (post,) = sandbox.received("traffic-light")
    assert post.correlation_id == "trace-post-7"
    assert post.body["recommendations"]["region_allocations"] == {}
