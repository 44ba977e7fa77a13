"""Portfolio Management System REST endpoints.

Integration guide, "Portfolio Management System Integration".
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.sandbox.errors import not_found
from adapters.sandbox.http_support import json_payload, record_post
from adapters.sandbox.payloads import OptimizationRecommendation
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import System
from adapters.sandbox.world import Portfolio

SYSTEM = System.PMS
PREFIX = SYSTEM.api_prefix


def pms_routes(state: SandboxState) -> list[Route]:
    def portfolio_of(request: Request) -> Portfolio:
        portfolio_id = request.path_params["portfolio_id"]
        portfolio = state.world.portfolio_named(portfolio_id)
        if portfolio is None:
            raise not_found("portfolio", portfolio_id)
        return portfolio

    async def composition(request: Request) -> JSONResponse:
        return JSONResponse(state.views.composition(portfolio_of(request)))

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse(state.views.performance(portfolio_of(request)))

    async def recommendations(request: Request) -> JSONResponse:
        portfolio_of(request)
        _, sent = await json_payload(request, OptimizationRecommendation)
        return record_post(state, SYSTEM, request, sent)

    return [
        Route(f"{PREFIX}/portfolios/{{portfolio_id}}/composition", composition, methods=["GET"]),
        Route(f"{PREFIX}/portfolios/{{portfolio_id}}/metrics", metrics, methods=["GET"]),
        Route(f"{PREFIX}/portfolios/{{portfolio_id}}/recommendations", recommendations, methods=["POST"]),
    ]
