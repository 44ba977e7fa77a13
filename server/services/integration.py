"""IntegrationService: health of the three upstream integrations, typed read-through data, and the pushes
kept in the outbox.

Reports come from ``IntegrationRuntime.integration`` (mirror age, last reconciliation, push counts
included); reads from ``IntegrationRuntime.reads``, which serve the last good copy with ``freshness.stale``
when an upstream is down; pushes from the outbox (docs/integration.md).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

import grpc

from google.protobuf import timestamp_pb2

from adapters.systems import Upstream, upstream_by_integration_id
from equihome.integration.v1 import integration_pb2, integration_service_pb2, integration_service_pb2_grpc
from server import page_tokens
from server.app import ServiceBinding
from server.errors import InvalidArgument, NotFound, Unavailable
from server.integration.outbox import PushRecord, PushState
from server.integration.reads import IntegrationReads
from server.integration.runtime import IntegrationRuntime

SERVICE = integration_service_pb2.DESCRIPTOR.services_by_name["IntegrationService"]
SCOPES = {method: "integration:read" for method in SERVICE.methods_by_name} | {"RetryPush": "integration:write"}
Push = integration_pb2.Push
PUSH_STATES = {
    Push.STATE_PENDING: PushState.PENDING,
    Push.STATE_DELIVERED: PushState.DELIVERED,
    Push.STATE_DEAD_LETTER: PushState.DEAD_LETTER,
}
PUSH_STATE_NUMBERS = {state: number for number, state in PUSH_STATES.items()}
MAX_IDS = 100
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
INTEGRATIONS = sorted(Upstream, key=lambda system: system.integration_name)  # ListIntegrations order
OFF_RETRY_AFTER_S = 60.0


PAGE_SCOPE = "integrations"


class IntegrationService(integration_service_pb2_grpc.IntegrationServiceServicer):
    def __init__(self, runtime: IntegrationRuntime):
        self._runtime = runtime
        self._page_secret = secrets.token_bytes(32)  # page tokens are valid for this process's life

    async def GetIntegration(  # noqa: N802
        self, request: integration_service_pb2.GetIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.GetIntegrationResponse:
        integration = await self._runtime.integration(_integration(request.name, "name"))
        return integration_service_pb2.GetIntegrationResponse(integration=integration)

    async def ListIntegrations(  # noqa: N802
        self, request: integration_service_pb2.ListIntegrationsRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.ListIntegrationsResponse:
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative.", [("page_size", "must be >= 0")], reason="FIELD_INVALID"
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        start = int(page_tokens.verify(self._page_secret, PAGE_SCOPE, request.page_token)) if request.page_token else 0
        page = INTEGRATIONS[start : start + size]
        response = integration_service_pb2.ListIntegrationsResponse(
            integrations=[await self._runtime.integration(system) for system in page]
        )
        if start + size < len(INTEGRATIONS):
            response.next_page_token = page_tokens.sign(self._page_secret, PAGE_SCOPE, start + size)
        return response

    async def GetZoneClassifications(  # noqa: N802
        self,
        request: integration_service_pb2.GetZoneClassificationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> integration_service_pb2.GetZoneClassificationsResponse:
        ids = _id_list(request.property_ids, "property_ids")
        return await self._reads().zones(ids, require_fresh=request.require_fresh)

    async def GetMarketRisk(  # noqa: N802
        self, request: integration_service_pb2.GetMarketRiskRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.GetMarketRiskResponse:
        ids = _id_list(request.region_ids, "region_ids")
        return await self._reads().market_risk(ids, require_fresh=request.require_fresh)

    async def GetPortfolioComposition(  # noqa: N802
        self,
        request: integration_service_pb2.GetPortfolioCompositionRequest,
        context: grpc.aio.ServicerContext,
    ) -> integration_service_pb2.GetPortfolioCompositionResponse:
        _require(request.portfolio_id, "portfolio_id")
        return await self._reads().composition(request.portfolio_id, require_fresh=request.require_fresh)

    async def GetPortfolioMetrics(  # noqa: N802
        self, request: integration_service_pb2.GetPortfolioMetricsRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.GetPortfolioMetricsResponse:
        _require(request.portfolio_id, "portfolio_id")
        return await self._reads().metrics(request.portfolio_id, require_fresh=request.require_fresh)

    async def GetLoanParameters(  # noqa: N802
        self, request: integration_service_pb2.GetLoanParametersRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.GetLoanParametersResponse:
        _require(request.loan_id, "loan_id")
        return await self._reads().loan_parameters(request.loan_id, require_fresh=request.require_fresh)

    async def ListPushes(  # noqa: N802
        self, request: integration_service_pb2.ListPushesRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.ListPushesResponse:
        system = _integration(request.parent, "parent")
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative.", [("page_size", "must be >= 0")], reason="FIELD_INVALID"
            )
        states = sorted({_push_state(state, index) for index, state in enumerate(request.states)})
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = f"pushes:{system.value}:{','.join(states)}"
        before = int(page_tokens.verify(self._page_secret, scope, request.page_token)) if request.page_token else None
        records = await self._runtime.outbox.page(system, states, before_id=before, size=size + 1)
        response = integration_service_pb2.ListPushesResponse(
            pushes=[_push(system, record) for record in records[:size]]
        )
        if len(records) > size:
            response.next_page_token = page_tokens.sign(self._page_secret, scope, records[size - 1].id)
        return response

    async def RetryPush(  # noqa: N802
        self, request: integration_service_pb2.RetryPushRequest, context: grpc.aio.ServicerContext
    ) -> integration_service_pb2.RetryPushResponse:
        parent, _, push_id = request.name.rpartition("/pushes/")
        system = _integration(parent, "name") if push_id.isdigit() and push_id.isascii() else None
        if system is None:
            raise InvalidArgument(
                f"{request.name!r} is not a push name (integrations/{{integration}}/pushes/{{push}}).",
                [("name", "must match integrations/{integration}/pushes/{push}")],
                reason="RESOURCE_NAME_INVALID",
                metadata={"name": request.name},
            )
        record = await self._runtime.outbox.retry(system, int(push_id))
        return integration_service_pb2.RetryPushResponse(push=_push(system, record))

    def _reads(self) -> IntegrationReads:
        if self._runtime.reads is None:
            raise Unavailable(
                "Integrations are off in this server's settings (integrations = off).",
                OFF_RETRY_AFTER_S,
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"integrations": self._runtime.mode},
            )
        return self._runtime.reads


def _integration(name: str, field: str) -> Upstream:
    """The system of an integration name; INVALID_ARGUMENT or NOT_FOUND naming ``field``."""
    prefix, _, integration_id = name.partition("/")
    if prefix != "integrations" or not integration_id or "/" in integration_id:
        raise InvalidArgument(
            f"{name!r} is not an integration name (integrations/{{integration}}).",
            [(field, "must match integrations/{integration}")],
            reason="RESOURCE_NAME_INVALID",
            metadata={"name": name[:200]},
        )
    system = upstream_by_integration_id(integration_id)
    if system is None:
        raise NotFound(f"There is no integration {name}.", reason="INTEGRATION_NOT_FOUND", metadata={"name": name[:200]})
    return system


def _push_state(state: int, index: int) -> PushState:
    if state not in PUSH_STATES:
        raise InvalidArgument(
            f"states[{index}] is not a push state.",
            [(f"states[{index}]", "must be a state other than STATE_UNSPECIFIED")],
            reason="FIELD_INVALID",
        )
    return PUSH_STATES[state]


def _push(system: Upstream, record: PushRecord) -> integration_pb2.Push:
    push = Push(
        name=f"{system.integration_name}/pushes/{record.id}",
        kind=record.push.kind,
        key=record.push.key,
        path=record.push.path,
        body=json.dumps(record.push.body, separators=(",", ":")),
        state=PUSH_STATE_NUMBERS[record.state],
        attempts=record.attempts,
        create_time=_time(record.create_us),
        last_error_message=record.last_error,
        last_status_code=record.last_status or 0,
        receipt_id=record.receipt_id or "",
    )
    if record.last_attempt_us is not None:
        push.last_attempt_time.CopyFrom(_time(record.last_attempt_us))
    if record.state is PushState.PENDING:
        push.next_attempt_time.CopyFrom(_time(record.next_attempt_us))
    if record.deliver_us is not None:
        push.deliver_time.CopyFrom(_time(record.deliver_us))
    return push


def _time(microseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required.", [(field, "must not be empty")], reason="FIELD_INVALID")


def _id_list(ids: Sequence[str], field: str) -> list[str]:
    problems = []
    if not 1 <= len(ids) <= MAX_IDS:
        problems.append((field, f"give 1 to {MAX_IDS} ids, got {len(ids)}"))
    seen: set[str] = set()
    for index, identifier in enumerate(ids):
        if not identifier or "," in identifier:
            problems.append((f"{field}[{index}]", "must be non-empty and free of commas"))
        elif identifier in seen:
            problems.append((f"{field}[{index}]", f"{identifier!r} appears twice"))
        seen.add(identifier)
    if problems:
        raise InvalidArgument(f"{field} is invalid.", problems, reason="FIELD_INVALID")
    return list(ids)


def integration_binding(runtime: IntegrationRuntime) -> ServiceBinding:
    return ServiceBinding(
        SERVICE.full_name,
        integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server,
        IntegrationService(runtime),
        SCOPES,
    )
