"""Fault knobs of the sandbox against the read-throughs: breaker, stale cache, RetryInfo, tokens."""

from __future__ import annotations

import time

import grpc
import pytest

from adapters.systems import Upstream
from equihome.integration.v1 import integration_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from server.errors import ErrorDetails, unpack
from tests.integration.conftest import Service, eventually

Integration = integration_pb2.Integration
COMPOSITION = pb.GetPortfolioCompositionRequest(portfolio_id="portfolio_456")
FRESH_COMPOSITION = pb.GetPortfolioCompositionRequest(portfolio_id="portfolio_456", require_fresh=True)


async def failure(call: object) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return unpack(caught.value)


async def pms(service: Service) -> integration_pb2.Integration:
    request = pb.GetIntegrationRequest(name="integrations/portfolio-management")
    return (await service.integrations.GetIntegration(request)).integration


async def test_the_breaker_opens_after_repeated_outages_and_recovers(service: Service) -> None:
    service.sandbox.set_faults({"pms": {"error_rate": 1.0}})
    for _ in range(service.settings.integration_breaker_threshold):
        details = await failure(service.integrations.GetPortfolioComposition(FRESH_COMPOSITION))
        assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    requests_when_opened = service.sample("equihome_upstream_requests_total", system="pms", method="GET", outcome="500")
    assert requests_when_opened == service.settings.integration_breaker_threshold * service.settings.integration_get_attempts

    details = await failure(service.integrations.GetPortfolioComposition(FRESH_COMPOSITION))
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_CIRCUIT_OPEN")
    assert details.retry_after is not None and 0 < details.retry_after <= service.settings.integration_breaker_reset_s
    assert service.sample("equihome_upstream_requests_total", system="pms", method="GET", outcome="500") == requests_when_opened
    report = await pms(service)
    assert report.circuit_state == Integration.CIRCUIT_STATE_OPEN
    assert report.consecutive_failures == requests_when_opened  # every failed request counts
    assert "500" in report.last_error_message

    service.sandbox.reset_faults()
    await eventually(lambda: _circuit(service, Integration.CIRCUIT_STATE_HALF_OPEN))
    response = await service.integrations.GetPortfolioComposition(FRESH_COMPOSITION)
    assert len(response.composition.loans) > 0
    report = await pms(service)
    assert report.circuit_state == Integration.CIRCUIT_STATE_CLOSED and report.consecutive_failures == 0


async def _circuit(service: Service, state: int) -> bool:
    return (await pms(service)).circuit_state == state


async def test_stale_data_is_served_with_its_age_while_the_upstream_is_down(service: Service) -> None:
    fresh = await service.integrations.GetPortfolioComposition(COMPOSITION)
    assert not fresh.freshness.stale
    service.sandbox.set_faults({"pms": {"outage": True}})
    started = time.time()

    stale = await service.integrations.GetPortfolioComposition(COMPOSITION)

    assert stale.freshness.stale
    assert stale.composition == fresh.composition
    assert stale.freshness.fetch_time == fresh.freshness.fetch_time
    age = stale.freshness.data_age.ToNanoseconds() / 1e9
    assert 0 < age <= time.time() - fresh.freshness.fetch_time.ToNanoseconds() / 1e9
    assert started - fresh.freshness.fetch_time.ToNanoseconds() / 1e9 <= age
    report = await pms(service)
    assert report.data_age.ToNanoseconds() > 0 and not report.reachable

    details = await failure(service.integrations.GetPortfolioComposition(FRESH_COMPOSITION))
    assert details.reason == "UPSTREAM_UNAVAILABLE"  # require_fresh never gets the cache


async def test_an_outage_without_cache_is_unavailable_with_the_upstreams_retry_after(service: Service) -> None:
    service.sandbox.set_faults({"underwriting": {"outage": True, "outage_retry_after": 17}})

    details = await failure(service.integrations.GetLoanParameters(pb.GetLoanParametersRequest(loan_id="loan_401")))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert details.retry_after == 17
    assert details.error_info is not None and details.error_info.metadata["system"] == "underwriting"
    # A retry_after beyond our longest backoff is not retried within the call.
    assert service.sample("equihome_upstream_requests_total", system="underwriting", method="GET", outcome="503") == 1


async def test_rate_limiting_is_resource_exhausted_with_retry_info(service: Service) -> None:
    service.sandbox.set_faults({"traffic-light": {"rate_limit_per_second": 0.01, "rate_limit_burst": 1}})
    request = pb.GetMarketRiskRequest(region_ids=["north_shore"], require_fresh=True)
    await service.integrations.GetMarketRisk(request)  # the one token of the bucket

    details = await failure(service.integrations.GetMarketRisk(request))

    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert details.retry_after is not None and details.retry_after >= 1
    assert (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name="integrations/traffic-light"))).integration.circuit_state == Integration.CIRCUIT_STATE_CLOSED


async def test_a_rejected_token_is_fetched_again_once_and_the_call_retried_once(service: Service) -> None:
    tokens = service.runtime.links[Upstream.PMS].tokens.read
    service.sandbox.set_faults({"auth": {"issue_expired_tokens": True}})
    stale_token = await tokens.refresh(await tokens.token())  # the cached token is now one the PMS rejects
    service.sandbox.reset_faults()
    fetched = service.sample("equihome_upstream_token_fetches_total", system="pms", outcome="ok")

    response = await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id="portfolio_456"))

    assert response.metrics.HasField("irr")
    assert service.sample("equihome_upstream_token_fetches_total", system="pms", outcome="ok") == fetched + 1
    assert service.sample("equihome_upstream_requests_total", system="pms", method="GET", outcome="401") == 1
    assert (await tokens.token()) is not stale_token


async def test_a_token_rejected_again_after_the_refetch_is_an_auth_failure(service: Service) -> None:
    service.sandbox.set_faults({"underwriting": {"reject_all_tokens": True}})
    fetched = service.sample("equihome_upstream_token_fetches_total", system="underwriting", outcome="ok")

    details = await failure(service.integrations.GetLoanParameters(pb.GetLoanParametersRequest(loan_id="loan_401")))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_AUTH_FAILED")
    assert service.sample("equihome_upstream_token_fetches_total", system="underwriting", outcome="ok") == fetched + 1
    assert service.sample("equihome_upstream_requests_total", system="underwriting", method="GET", outcome="401") == 2


async def test_a_failing_token_endpoint_is_unavailable_without_revealing_it(service: Service) -> None:
    tokens = service.runtime.links[Upstream.TRAFFIC_LIGHT].tokens.read
    tokens.invalidate(await tokens.token())
    service.sandbox.set_faults({"auth": {"outage": True}})

    details = await failure(service.integrations.GetZoneClassifications(pb.GetZoneClassificationsRequest(property_ids=["property_1"], require_fresh=True)))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_AUTH_FAILED")
    assert details.retry_after is not None
    assert "oauth" not in details.message.lower() and "127.0.0.1" not in details.message
    assert all("127.0.0.1" not in value for value in details.error_info.metadata.values())  # type: ignore[union-attr]
    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name="integrations/traffic-light"))).integration
    assert report.token_state == Integration.TOKEN_STATE_FAILED
    assert "127.0.0.1" not in report.last_error_message
