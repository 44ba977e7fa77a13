"""Traffic Light System REST endpoints (integration guide, "Traffic Light System Integration").

Ids the system does not know are left out of ``zones`` / ``market_risk``. With the ``unknown_ids``
extension they are also listed in ``unknown_properties`` / ``unknown_regions`` (present only when
something was unknown).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.sandbox.http_support import id_list, json_payload, record_post, unprocessable
from adapters.sandbox.payloads import AllocationRecommendation
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import System

SYSTEM = System.TRAFFIC_LIGHT
PREFIX = SYSTEM.api_prefix


def traffic_light_routes(state: SandboxState) -> list[Route]:
    world = state.world
    max_batch = state.config.max_batch_size
    list_unknown = state.config.extensions.unknown_ids

    async def zones(request: Request) -> JSONResponse:
        property_ids = id_list(request, "properties", max_batch)
        known = [pid for pid in property_ids if pid in world.properties]
        body: dict[str, object] = {"zones": {pid: world.properties[pid].zone.value for pid in known}}
        unknown = [pid for pid in property_ids if pid not in world.properties]
        if unknown and list_unknown:
            body["unknown_properties"] = unknown
        return JSONResponse(body)

    async def market_risk(request: Request) -> JSONResponse:
        region_ids = id_list(request, "regions", max_batch)
        known = [rid for rid in region_ids if rid in world.regions]
        risks = {rid: state.views.market_risk(world.regions[rid]) for rid in known}
        body: dict[str, object] = {"market_risk": risks}
        unknown = [rid for rid in region_ids if rid not in world.regions]
        if unknown and list_unknown:
            body["unknown_regions"] = unknown
        return JSONResponse(body)

    async def recommendations(request: Request) -> JSONResponse:
        payload, sent = await json_payload(request, AllocationRecommendation)
        problems = []
        if world.portfolio_named(payload.portfolio_id) is None:
            message = f"unknown portfolio {payload.portfolio_id!r}"
            problems.append({"field": "portfolio_id", "message": message})
        for region_id in payload.recommendations.region_allocations:
            if region_id not in world.regions:
                field = f"recommendations.region_allocations.{region_id}"
                problems.append({"field": field, "message": f"unknown region {region_id!r}"})
        if problems:
            raise unprocessable(problems)
        return record_post(state, SYSTEM, request, sent)

    return [
        Route(f"{PREFIX}/zones", zones, methods=["GET"]),
        Route(f"{PREFIX}/market-risk", market_risk, methods=["GET"]),
        Route(f"{PREFIX}/recommendations", recommendations, methods=["POST"]),
    ]
