"""Typed read-throughs against the real sandbox: shapes, partial batches, errors, correlation ids."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
import pytest

from adapters.sandbox import Sandbox
from adapters.systems import Upstream
from equihome.integration.v1 import integration_service_pb2 as pb
from equihome.type.v1 import market_pb2, zone_pb2
from server.errors import unpack
from server.integration.cache import cache_key
from tests.integration.conftest import Service, eventually

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
    response = await service.integrations.GetMarketRisk(pb.GetMarketRiskRequest(region_ids=["sydney_north", "atlantis"]))

    (risk,) = response.market_risks
    assert risk.region_id == "sydney_north"
    assert risk.risk_score == pytest.approx(regions["sydney_north"].risk_score)
    assert risk.risk_level in (market_pb2.RISK_LEVEL_LOW, market_pb2.RISK_LEVEL_MEDIUM, market_pb2.RISK_LEVEL_HIGH)
    assert list(response.missing_region_ids) == ["atlantis"]


async def test_unknown_portfolio_is_not_found_upstream(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.integrations.GetPortfolioComposition(pb.GetPortfolioCompositionRequest(portfolio_id="ghost"))

    details = unpack(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "UPSTREAM_NOT_FOUND"
    assert details.error_info is not None and details.error_info.metadata["system"] == "pms"


async def test_invalid_requests_are_refused_before_any_upstream_call(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, integration_mirror_regions="")  # the mirror reads nothing from the TLS
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


async def test_reads_without_optional_fields_leave_them_unset(service: Service) -> None:
    world = service.sandbox.world
    omissions = service.sandbox.state.omissions
    lacking = [rid for rid in world.regions if "appreciation_forecast" not in omissions.item("market_risk", rid, {"appreciation_forecast": 0})]
    loans = list(world.portfolio.loans)
    no_rate = {loan_id for loan_id in loans if "appreciation_rate" not in omissions.item("composition_loan", loan_id, {"appreciation_rate": 0})}
    assert no_rate, "the strict sandbox leaves some optional fields out"

    risks = await service.integrations.GetMarketRisk(pb.GetMarketRiskRequest(region_ids=list(world.regions)))
    composition = await service.integrations.GetPortfolioComposition(pb.GetPortfolioCompositionRequest(portfolio_id="portfolio_456"))

    assert {risk.region_id for risk in risks.market_risks if not risk.HasField("appreciation_forecast")} == set(lacking)
    assert {loan.id for loan in composition.composition.loans if not loan.HasField("appreciation_rate")} == no_rate


async def test_a_read_abandoned_by_its_callers_deadline_still_fills_the_cache(service: Service) -> None:
    key = cache_key(Upstream.PMS, "metrics", "portfolio_456")
    service.sandbox.set_faults({"pms": {"latency_ms": 400}})

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id="portfolio_456"), timeout=0.1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await eventually(lambda: _cached(service, key))
    service.sandbox.set_faults({"pms": {"latency_ms": 0, "outage": True}})
    stale = await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id="portfolio_456"))
    assert stale.freshness.stale and stale.portfolio_id == "portfolio_456"


async def _cached(service: Service, key: str) -> bool:
    return key in await service.runtime.cache.get([key])
