"""The ASGI application serving some of the sandbox's targets: the auth server and/or systems.

One port serves everything (default), or with ``split_ports`` the auth server (token endpoint, JWKS,
``/sandbox`` administration) and each system get their own port and application.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from adapters.sandbox.admin_api import admin_routes
from adapters.sandbox.errors import ApiError
from adapters.sandbox.gateway import Gateway, error_response
from adapters.sandbox.oauth_api import oauth_routes
from adapters.sandbox.pms_api import pms_routes
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import AUTH_TARGET, System
from adapters.sandbox.traffic_light_api import traffic_light_routes
from adapters.sandbox.underwriting_api import underwriting_routes
from adapters.sandbox.websocket_api import websocket_routes

REST_ROUTES = {
    System.TRAFFIC_LIGHT: traffic_light_routes,
    System.PMS: pms_routes,
    System.UNDERWRITING: underwriting_routes,
}
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_app(state: SandboxState, targets: Collection[str]) -> Starlette:
    """An application serving ``targets``: ``auth`` and/or system names."""
    routes: list[BaseRoute] = []
    if AUTH_TARGET in targets:
        routes += oauth_routes(state) + admin_routes(state)
    for system in System:
        if system.value in targets:
            routes += REST_ROUTES[system](state) + websocket_routes(state, system)
    return Starlette(
        routes=routes,
        middleware=[Middleware(Gateway, state=state, targets=targets)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )


async def _api_error(request: Request, error: ApiError) -> Response:
    return error_response(error, request.scope)


async def _http_error(request: Request, error: HTTPException) -> Response:
    code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
    failure = ApiError(error.status_code, code, error.detail, headers=error.headers)
    return error_response(failure, request.scope)


async def _unexpected_error(request: Request, error: Exception) -> Response:
    """Answer a sandbox bug in the error format; Starlette re-raises it afterwards, so it is logged."""
    failure = ApiError(500, "internal_error", f"Unexpected {type(error).__name__} in the sandbox")
    return error_response(failure, request.scope)
