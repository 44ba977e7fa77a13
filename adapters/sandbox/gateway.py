"""What stands in front of every route: correlation ids, fault injection, OAuth checks, error bodies.

For each HTTP request and WebSocket handshake, in this order:
1. take ``X-Correlation-ID`` from the request (or make one) and echo it on the response;
2. for a system or the token endpoint: add latency, answer 503 in an outage, 429 over the rate limit;
3. for a system: require a valid bearer token (401) carrying the read scope for GET and WebSocket,
   the write scope for anything else (403);
4. answer 500 for the error-rate fraction; otherwise hand the request to its route.
A refused WebSocket handshake is answered with an HTTP error response, not an accepted socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.sandbox.errors import (
    CORRELATION_HEADER,
    ApiError,
    guide_error_response,
    insufficient_scope,
    new_correlation_id,
    oauth_error_response,
    retry_later,
    unauthorized,
)
from adapters.sandbox.faults import HttpFaults, SystemFaults
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import AUTH_TARGET, System, system_for_path
from adapters.sandbox.tokens import Principal

TOKEN_PATH = "/oauth/token"
LATENCY_HEADER = "X-Sandbox-Injected-Latency-Ms"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def target_of(path: str) -> str | None:
    """The fault target a path belongs to: a system, ``auth`` for the token endpoint, else None."""
    if path == TOKEN_PATH:
        return AUTH_TARGET
    system = system_for_path(path)
    return system.value if system else None


def error_response(error: ApiError, scope: Scope) -> Response:
    """``error`` in the format its path speaks: OAuth on the token endpoint, the guide's elsewhere."""
    correlation_id = scope.get("state", {}).get("correlation_id") or new_correlation_id()
    target = target_of(scope["path"])
    if target == AUTH_TARGET:
        return oauth_error_response(error, correlation_id=correlation_id)
    return guide_error_response(
        error, service=target or "sandbox", endpoint=scope["path"], correlation_id=correlation_id
    )


class Gateway:
    def __init__(self, app: ASGIApp, state: SandboxState, targets: Collection[str]):
        self._app = app
        self._state = state
        self._targets = frozenset(targets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        extra_headers = [(CORRELATION_HEADER, self._correlation_id(scope))]
        send = _adding_headers(send, extra_headers)
        target = target_of(scope["path"])
        if target not in self._targets:
            await self._app(scope, receive, send)
            return
        try:
            await self._screen(scope, target, extra_headers)
        except ApiError as refusal:
            await _refuse(refusal, scope, receive, send)
            return
        await self._app(scope, receive, send)

    @staticmethod
    def _correlation_id(scope: Scope) -> str:
        correlation_id = Headers(scope=scope).get(CORRELATION_HEADER) or new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        return correlation_id

    async def _screen(self, scope: Scope, target: str, extra_headers: list[tuple[str, str]]) -> None:
        faults = self._state.faults
        knobs: HttpFaults = faults.settings.for_target(target)
        delay = faults.latency_seconds(knobs)
        if delay > 0:
            extra_headers.append((LATENCY_HEADER, str(round(delay * 1000))))
            await asyncio.sleep(delay)
        if knobs.outage:
            message = f"{target} is unavailable"
            raise retry_later(503, "service_unavailable", message, knobs.outage_retry_after)
        retry_after = faults.rate_limit_retry_after(target, knobs)
        if retry_after is not None:
            raise retry_later(429, "rate_limited", f"Rate limit of {target} exceeded", retry_after)
        if target != AUTH_TARGET:
            system = System(target)
            scope["state"]["principal"] = self._authorize(scope, system, faults.settings.for_system(system))
        if faults.rolls(knobs.error_rate):
            message = f"{target} failed to process the request"
            raise ApiError(500, "internal_error", message, {"fault": "error_rate"})

    def _authorize(self, scope: Scope, system: System, knobs: SystemFaults) -> Principal:
        token = _bearer_token(scope)
        if token is None:
            raise unauthorized("missing_token", "An access token is required", system.audience)
        if knobs.reject_all_tokens:
            raise unauthorized("invalid_token", "The access token was rejected", system.audience)
        principal = self._state.tokens.verify(token, system)
        reads = scope["type"] == "websocket" or scope["method"] in READ_METHODS
        required = system.read_scope if reads else system.write_scope
        if required not in principal.scopes:
            raise insufficient_scope(required)
        return principal


def _bearer_token(scope: Scope) -> str | None:
    """The token from ``Authorization: Bearer``, or for a WebSocket also from ``?token=``."""
    scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scope["type"] == "websocket":
        return QueryParams(scope["query_string"]).get("token") or None
    return None


async def _refuse(refusal: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(refusal, scope)
    if scope["type"] == "websocket":
        await receive()  # the websocket.connect message
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.message})
            return
    await response(scope, receive, send)


def _adding_headers(send: Send, headers: list[tuple[str, str]]) -> Send:
    """``send`` that adds ``headers`` (read when the response starts) to responses and handshakes."""
    starts = {"http.response.start", "websocket.accept", "websocket.http.response.start"}

    async def send_with_headers(message: Message) -> None:
        if message["type"] in starts:
            encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return send_with_headers
