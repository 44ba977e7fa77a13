"""A small test service registered with generic handlers (no generated code), plus typed client calls.

Its behaviours cover the cases the infrastructure must handle: plain success, each kind of domain
error, an unexpected exception carrying a secret, server streams that succeed or fail midway, and a
stream that follows the server's lifecycle until shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2, wrappers_pb2

from server import errors
from server.app import Lifecycle, ServiceBinding
from server.auth import current_principal

SERVICE = "test.v1.EchoService"
SECRET = "db-password=hunter2"
log = logging.getLogger("tests.echo")

SCOPES = {
    "Echo": "simulation:read",
    "Whoami": "simulation:read",
    "Fail": "simulation:read",
    "Count": "simulation:read",
    "Follow": "events:read",
}


class EchoServicer:
    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle

    async def Echo(
        self, request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        log.info("echo handled")
        return wrappers_pb2.StringValue(value=request.value)

    async def Whoami(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        principal = current_principal.get()
        return wrappers_pb2.StringValue(value=principal.subject if principal else "")

    async def Fail(
        self, request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.StringValue:
        kind = request.value
        if kind == "invalid":
            raise errors.InvalidArgument(
                "The name 'x y' is not valid.",
                [("simulation.name", "must not contain spaces")],
                reason="NAME_INVALID",
                metadata={"name": "x y"},
            )
        if kind == "exhausted":
            raise errors.ResourceExhausted("Too many runs.", retry_after=2.5, reason="RUN_CAPACITY_EXHAUSTED")
        if kind == "unavailable":
            raise errors.Unavailable("Upstream is down.", retry_after=0.25)
        if kind == "not_found":
            raise errors.NotFound("Run runs/1 does not exist.", metadata={"name": "runs/1"})
        raise RuntimeError(f"cannot connect with {SECRET}")

    async def Count(
        self, request: wrappers_pb2.Int32Value, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[wrappers_pb2.Int32Value]:
        """Streams 0..n-1; with n < 0 streams one item, then fails (-1: domain error, -2: unexpected)."""
        if request.value >= 0:
            for number in range(request.value):
                yield wrappers_pb2.Int32Value(value=number)
            return
        yield wrappers_pb2.Int32Value(value=0)
        if request.value == -1:
            raise errors.FailedPrecondition("Run runs/1 is finished.", reason="RUN_FINISHED")
        raise RuntimeError(f"stream broke with {SECRET}")

    async def Follow(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[wrappers_pb2.Int32Value]:
        """Ticks every 10 ms until the server shuts down, then ends normally."""
        async for tick in self.lifecycle.until_shutdown(_ticks()):
            yield wrappers_pb2.Int32Value(value=tick)

    async def Unmapped(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()


async def _ticks() -> AsyncIterator[int]:
    tick = 0
    while True:
        yield tick
        tick += 1
        await asyncio.sleep(0.01)


def _add_to_server(servicer: EchoServicer, server: grpc.aio.Server) -> None:
    def unary(behaviour, request_type):  # type: ignore[no-untyped-def]
        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=request_type.FromString, response_serializer=_serialize
        )

    def stream(behaviour, request_type):  # type: ignore[no-untyped-def]
        return grpc.unary_stream_rpc_method_handler(
            behaviour, request_deserializer=request_type.FromString, response_serializer=_serialize
        )

    handlers = {
        "Echo": unary(servicer.Echo, wrappers_pb2.StringValue),
        "Whoami": unary(servicer.Whoami, empty_pb2.Empty),
        "Fail": unary(servicer.Fail, wrappers_pb2.StringValue),
        "Count": stream(servicer.Count, wrappers_pb2.Int32Value),
        "Follow": stream(servicer.Follow, empty_pb2.Empty),
        "Unmapped": unary(servicer.Unmapped, empty_pb2.Empty),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _serialize(message) -> bytes:  # type: ignore[no-untyped-def]
    return message.SerializeToString()


def echo_binding(lifecycle: Lifecycle) -> ServiceBinding:
    return ServiceBinding(SERVICE, _add_to_server, EchoServicer(lifecycle), SCOPES)


class EchoClient:
    """Typed callables for the test service over one aio channel."""

    def __init__(self, channel: grpc.aio.Channel):
        def unary(method: str, response_type):  # type: ignore[no-untyped-def]
            return channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=_serialize,
                response_deserializer=response_type.FromString,
            )

        def stream(method: str, response_type):  # type: ignore[no-untyped-def]
            return channel.unary_stream(
                f"/{SERVICE}/{method}",
                request_serializer=_serialize,
                response_deserializer=response_type.FromString,
            )

        self.echo = unary("Echo", wrappers_pb2.StringValue)
        self.whoami = unary("Whoami", wrappers_pb2.StringValue)
        self.fail = unary("Fail", wrappers_pb2.StringValue)
        self.unmapped = unary("Unmapped", empty_pb2.Empty)
        self.count = stream("Count", wrappers_pb2.Int32Value)
        self.follow = stream("Follow", wrappers_pb2.Int32Value)
