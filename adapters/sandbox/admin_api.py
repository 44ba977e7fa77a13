"""The sandbox's own control endpoints under ``/sandbox``: no OAuth, loopback clients only.

GET/POST/DELETE /sandbox/faults    read, patch (per target, per knob), or clear the fault knobs
GET/DELETE      /sandbox/received  read back (``?system=``) or forget what the engine POSTed
POST            /sandbox/events    make changes happen now: {"system", "event"?, "count"?}
GET/POST        /sandbox/clock     read or set events per second: {"events_per_second", "systems"?}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.sandbox.errors import ApiError
from adapters.sandbox.http_support import json_object, json_payload, validation_error
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import System, system_named

Handler = Callable[[Request], Awaitable[Response]]


class EmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    system: System
    event: str | None = None
    count: Annotated[int, Field(ge=1, le=100_000)] = 1


class ClockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    events_per_second: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    systems: list[System] = Field(default_factory=lambda: list(System))


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def loopback_only(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else None
        if not is_loopback(host):
            raise ApiError(403, "forbidden", "Sandbox administration is only served to loopback clients")
        return await handler(request)

    return guarded


def admin_routes(state: SandboxState) -> list[Route]:
    def faults_json() -> JSONResponse:
        return JSONResponse(state.faults.settings.model_dump(mode="json"))

    def clock_json() -> JSONResponse:
        rates = {system.value: clock.rate for system, clock in state.clocks.items()}
        return JSONResponse({"events_per_second": rates})

    async def read_faults(request: Request) -> Response:
        return faults_json()

    async def patch_faults(request: Request) -> Response:
        patch = await json_object(request)
        try:
            state.faults.update(patch)
        except ValidationError as error:
            raise validation_error(error) from None
        return faults_json()

    async def clear_faults(request: Request) -> Response:
        state.faults.reset()
        return faults_json()

    async def read_received(request: Request) -> Response:
        name = request.query_params.get("system")
        try:
            system = system_named(name) if name else None
        except ValueError as error:
            raise ApiError(400, "invalid_parameter", str(error), {"parameter": "system"}) from None
        return JSONResponse({"received": [post.as_json() for post in state.received.posts(system)]})

    async def clear_received(request: Request) -> Response:
        state.received.clear()
        return Response(status_code=204)

    async def emit_events(request: Request) -> Response:
        emit, _ = await json_payload(request, EmitRequest)
        frames = []
        for _ in range(emit.count):
            try:
                frame = state.emit(emit.system, emit.event)
            except ValueError as error:
                raise ApiError(400, "unknown_event", str(error), {"event": emit.event}) from None
            if frame is None:
                message = f"The world has nothing for {emit.event or emit.system.value} to report right now"
                raise ApiError(409, "no_change_possible", message, {"emitted": len(frames)})
            frames.append(frame.as_json())
        return JSONResponse({"emitted": frames})

    async def read_clock(request: Request) -> Response:
        return clock_json()

    async def set_clock(request: Request) -> Response:
        clock, _ = await json_payload(request, ClockRequest)
        for system in clock.systems:
            state.clocks[system].set_rate(clock.events_per_second)
        return clock_json()

    routes = [
        ("/sandbox/faults", read_faults, "GET"),
        ("/sandbox/faults", patch_faults, "POST"),
        ("/sandbox/faults", clear_faults, "DELETE"),
        ("/sandbox/received", read_received, "GET"),
        ("/sandbox/received", clear_received, "DELETE"),
        ("/sandbox/events", emit_events, "POST"),
        ("/sandbox/clock", read_clock, "GET"),
        ("/sandbox/clock", set_clock, "POST"),
    ]
    return [Route(path, loopback_only(handler), methods=[method]) for path, handler, method in routes]
