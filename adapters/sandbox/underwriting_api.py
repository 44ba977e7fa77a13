"""Underwriting System REST endpoints (integration guide, "Underwriting System Integration").

Loan parameters are served for every loan the world tracks: pending applications, approved loans
awaiting funding and active portfolio loans (ids ``loan_<n>`` are shared with the PMS).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.sandbox.errors import not_found
from adapters.sandbox.http_support import json_payload, record_post, unprocessable
from adapters.sandbox.payloads import PortfolioImpactAnalysis
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import System
from adapters.sandbox.world import Loan

SYSTEM = System.UNDERWRITING
PREFIX = SYSTEM.api_prefix


def underwriting_routes(state: SandboxState) -> list[Route]:
    world = state.world

    def loan_of(request: Request) -> Loan:
        loan_id = request.path_params["loan_id"]
        loan = world.loans.get(loan_id)
        if loan is None:
            raise not_found("loan", loan_id)
        return loan

    async def parameters(request: Request) -> JSONResponse:
        return JSONResponse(state.views.loan_parameters(loan_of(request)))

    async def portfolio_impact(request: Request) -> JSONResponse:
        loan_of(request)
        payload, sent = await json_payload(request, PortfolioImpactAnalysis)
        if world.portfolio_named(payload.portfolio_id) is None:
            message = f"unknown portfolio {payload.portfolio_id!r}"
            raise unprocessable([{"field": "portfolio_id", "message": message}])
        return record_post(state, SYSTEM, request, sent)

    return [
        Route(f"{PREFIX}/loans/{{loan_id}}/parameters", parameters, methods=["GET"]),
        Route(f"{PREFIX}/loans/{{loan_id}}/portfolio-impact", portfolio_impact, methods=["POST"]),
    ]
