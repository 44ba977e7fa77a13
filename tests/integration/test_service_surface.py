"""IntegrationService reports and pagination, and the service with integrations switched off."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from adapters.sandbox import Sandbox
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from server.errors import unpack
from server.integration.runtime import EVENT_SERVICE, INTEGRATION_SERVICE
from tests.integration.conftest import Service, take

Integration = integration_pb2.Integration
NAMES = ["integrations/portfolio-management", "integrations/traffic-light", "integrations/underwriting"]


async def test_integrations_are_listed_page_by_page_in_name_order(service: Service) -> None:
    names, token = [], ""
    while True:
        page = await service.integrations.ListIntegrations(pb.ListIntegrationsRequest(page_size=2, page_token=token))
        names += [integration.name for integration in page.integrations]
        token = page.next_page_token
        if not token:
            break
    assert names == NAMES
    everything = await service.integrations.ListIntegrations(pb.ListIntegrationsRequest())
    for integration in everything.integrations:
        assert integration.reachable and integration.token_state == Integration.TOKEN_STATE_VALID
        assert integration.web_socket_state == Integration.WEB_SOCKET_STATE_CONNECTED
        assert integration.circuit_state == Integration.CIRCUIT_STATE_CLOSED
        assert integration.token_expire_time.seconds > 0


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (pb.ListIntegrationsRequest(page_token="forged"), grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID"),
        (pb.ListIntegrationsRequest(page_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID"),
        (pb.GetIntegrationRequest(name="traffic-light"), grpc.StatusCode.INVALID_ARGUMENT, "RESOURCE_NAME_INVALID"),
        (pb.GetIntegrationRequest(name="integrations/crm"), grpc.StatusCode.NOT_FOUND, "INTEGRATION_NOT_FOUND"),
        (pb.ListPushesRequest(parent="pms"), grpc.StatusCode.INVALID_ARGUMENT, "RESOURCE_NAME_INVALID"),
        (pb.ListPushesRequest(parent="integrations/pms", page_size=1), grpc.StatusCode.NOT_FOUND, "INTEGRATION_NOT_FOUND"),
        (pb.ListPushesRequest(parent="integrations/underwriting", states=[0]), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID"),
        (pb.ListPushesRequest(parent="integrations/underwriting", page_token="x"), grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID"),
        (pb.RetryPushRequest(name="integrations/underwriting/pushes/abc"), grpc.StatusCode.INVALID_ARGUMENT, "RESOURCE_NAME_INVALID"),
        (pb.RetryPushRequest(name="integrations/underwriting/pushes/7"), grpc.StatusCode.NOT_FOUND, "PUSH_NOT_FOUND"),
    ],
)
async def test_bad_requests_name_their_reason(service: Service, request_: object, code: grpc.StatusCode, reason: str) -> None:
    method = {
        pb.ListIntegrationsRequest: service.integrations.ListIntegrations,
        pb.GetIntegrationRequest: service.integrations.GetIntegration,
        pb.ListPushesRequest: service.integrations.ListPushes,
        pb.RetryPushRequest: service.integrations.RetryPush,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request_)
    assert (unpack(caught.value).code, unpack(caught.value).reason) == (code, reason)


async def test_with_integrations_off_only_the_engine_events_flow(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, integrations="off")

    assert not await service.serving(INTEGRATION_SERVICE) and await service.serving(EVENT_SERVICE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.integrations.GetLoanParameters(pb.GetLoanParametersRequest(loan_id="loan_401"))
    assert unpack(caught.value).reason == "UPSTREAM_UNAVAILABLE"
    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name=NAMES[1]))).integration
    assert report.web_socket_state == Integration.WEB_SOCKET_STATE_DISABLED

    call = await service.subscribe()
    service.runtime.bus.publish_engine_event(event_pb2.SimulationCompleted(name="simulations/1"))
    (event,) = await take(call, 1)
    assert event.simulation_completed.name == "simulations/1"
    call.cancel()
