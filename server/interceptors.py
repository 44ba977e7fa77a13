"""The server's aio interceptors: correlation id, auth, call limits, metrics, error mapping and messages.

Each one wraps the method handler grpc found, so it runs *around the call itself*, for unary and
streaming responses alike (a streaming call stays inside the interceptor until its last message).
They are installed outermost first: ``[CorrelationInterceptor, AuthInterceptor, CallLimitInterceptor,
MetricsInterceptor, ErrorInterceptor, MessageInterceptor]``. The message interceptor is innermost: it
parses requests and serialises replies inside the call, so a malformed request or a reply that cannot be
sent becomes a status like any other error; the error interceptor turns errors into statuses, so metrics
see the final code; the auth and limit interceptors send their own refusals through the same error model.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from google.protobuf.message import Message

from server import errors, messages
from server.auth import INSECURE_PRINCIPAL, OPEN_METHOD_PREFIXES, Principal, TokenVerifier, current_principal
from server.call_limits import UNAUTHENTICATED, CallLimits, Kind
from server.observability import Metrics, caller_var, correlation_id_var, method_var

log = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_CORRELATION_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

CallScope = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]
Transform = Callable[[Any], Any]


class HandlerInterceptor(grpc.aio.ServerInterceptor, ABC):
    """Replaces the handler of every call it intercepts by ``wrap(handler, method)``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler, handler_call_details.method)

    @abstractmethod
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler grpc runs instead of ``handler``."""


class CallInterceptor(HandlerInterceptor):
    """Runs ``around_call`` around every call it intercepts, whatever the handler's shape."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, lambda context: self.around_call(method, context))

    @abstractmethod
    def around_call(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[None]:
        """An async context manager entered before the handler runs and left after its last message."""


def _identity(message: Any) -> Any:
    return message


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    scope: CallScope,
    *,
    request: Transform = _identity,
    reply: Transform = _identity,
    deserializer: Callable[[bytes], Any] | None = None,
    serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler like ``handler`` whose behaviour runs inside ``scope(context)``.

    Streaming behaviours may be async generators or coroutines that call ``context.write``; unary ones
    may be coroutines. ``request`` is applied to the request (or to each request of a stream) and
    ``reply`` to each reply, both inside the scope; ``deserializer``/``serializer`` replace the handler's
    own (by default requests and replies pass through untouched).
    """
    options = {
        "request_deserializer": deserializer or handler.request_deserializer,
        "response_serializer": serializer or handler.response_serializer,
    }

    def requests(incoming: Any) -> Any:
        if not handler.request_streaming or request is _identity:
            return request(incoming)

        async def each() -> AsyncIterator[Any]:
            async for item in incoming:
                yield request(item)

        return each()

    if handler.response_streaming:
        stream_inner = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streaming(incoming: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with scope(context):
                result = stream_inner(requests(incoming), context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield reply(response)
                elif inspect.isawaitable(result):
                    await result
                else:
                    raise TypeError(
                        f"streaming handler returned {type(result).__name__}, not an async iterator"
                    )

        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(streaming, **options)

    unary_inner = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def unary(incoming: Any, context: grpc.aio.ServicerContext) -> Any:
        async with scope(context):
            result = unary_inner(requests(incoming), context)
            return reply(await result if inspect.isawaitable(result) else result)

    factory = (
        grpc.stream_unary_rpc_method_handler
        if handler.request_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return factory(unary, **options)


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else None
    return None


class CorrelationInterceptor(CallInterceptor):
    """Gives every call a correlation id: the caller's ``x-correlation-id`` if well-formed, else a new one.

    The id is echoed in the initial metadata and held in a context variable, so every log line written
    while serving the call carries it. (Each aio RPC runs in its own task, so nothing leaks between calls.)
    """

    @asynccontextmanager
    async def around_call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        incoming = _metadata_value(context, CORRELATION_HEADER)
        correlation_id = (
            incoming if incoming and _CORRELATION_PATTERN.fullmatch(incoming) else uuid.uuid4().hex
        )
        correlation_id_var.set(correlation_id)
        method_var.set(method)
        await context.send_initial_metadata(((CORRELATION_HEADER, correlation_id),))
        yield


class AuthInterceptor(CallInterceptor):
    """Admits a call only with a valid bearer token holding the scope its method requires.

    ``scopes`` maps full method names (``/pkg.Service/Method``) to the one scope each needs. A method
    missing from the map is refused (fail closed); methods under ``open_prefixes`` (health, reflection)
    need no token. With ``verifier=None`` (auth explicitly disabled) every caller is the insecure
    principal, but unmapped methods are still refused, so dev and prod expose the same surface.
    """

    def __init__(
        self,
        verifier: TokenVerifier | None,
        scopes: Mapping[str, str],
        *,
        open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES,
        metrics: Metrics | None = None,
    ):
        self._verifier = verifier
        self._scopes = dict(scopes)
        self._open_prefixes = open_prefixes
        self._metrics = metrics

    @asynccontextmanager
    async def around_call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if method.startswith(self._open_prefixes):
            yield
            return
        try:
            principal = await self._authorise(method, context)
        except errors.ServiceError as refusal:
            if self._metrics is not None:
                self._metrics.auth_denied.labels(method=method, reason=refusal.reason).inc()
            log.warning("call refused: %s", refusal.message, extra={"reason": refusal.reason})
            await errors.abort(context, refusal)
        current_principal.set(principal)
        caller_var.set(principal.subject)
        yield

    async def _authorise(self, method: str, context: grpc.aio.ServicerContext) -> Principal:
        principal = INSECURE_PRINCIPAL if self._verifier is None else await self._verify(context)
        required = self._scopes.get(method)
        if required is None:
            raise errors.PermissionDenied(
                f"Method {method} is not open to callers.",
                reason="METHOD_NOT_ALLOWED",
                metadata={"method": method},
            )
        if required not in principal.scopes:
            raise errors.PermissionDenied(
                f"This call needs the scope {required}.",
                reason="SCOPE_MISSING",
                metadata={"required_scope": required},
            )
        return principal

    async def _verify(self, context: grpc.aio.ServicerContext) -> Principal:
        assert self._verifier is not None
        header = _metadata_value(context, "authorization")
        if not header:
            raise errors.Unauthenticated(
                "This call needs an 'authorization: Bearer <token>' header.", reason="TOKEN_MISSING"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated(
                "The authorization header must be 'Bearer <token>'.", reason="TOKEN_INVALID"
            )
        return await self._verifier.verify(token.strip())


class CallLimitInterceptor(HandlerInterceptor):
    """Admits a call only within its group's budget of open unary calls or streams (``server/call_limits``).

    Runs after authentication, so the caller is the token's subject; open methods (health, reflection) are
    the unauthenticated group. Health ``Check`` is not counted: health checks always answer.
    """

    def __init__(self, limits: CallLimits, *, open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES,
                 never_limited: frozenset[str] = frozenset({HEALTH_CHECK})):  # fmt: skip
        self._limits = limits
        self._open_prefixes = open_prefixes
        self._never_limited = never_limited

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if method in self._never_limited:
            return handler
        kind = Kind.STREAM if handler.response_streaming or handler.request_streaming else Kind.UNARY
        is_open = method.startswith(self._open_prefixes)
        return wrap_handler(handler, lambda context: self._within_budget(kind, is_open, context))

    @asynccontextmanager
    async def _within_budget(
        self, kind: Kind, is_open: bool, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        principal = None if is_open else current_principal.get()
        caller = UNAUTHENTICATED if principal is None else principal.subject
        try:
            release = self._limits.admit(caller, kind)
        except errors.ServiceError as refusal:
            log.warning("call refused: %s", refusal.message, extra={"reason": refusal.reason})
            await errors.abort(context, refusal)
        try:
            yield
        finally:
            release()


class MetricsInterceptor(CallInterceptor):
    """Counts calls, times them, tracks those in flight, and logs one line per finished call."""

    def __init__(self, metrics: Metrics, *, quiet_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES):
        self._metrics = metrics
        self._quiet_prefixes = quiet_prefixes
        self._per_method: dict[str, tuple[Any, Any, Any]] = {}  # the labelled children, looked up once
        self._handled: dict[tuple[str, str], Any] = {}

    def _children(self, method: str) -> tuple[Any, Any, Any]:
        children = self._per_method.get(method)
        if children is None:
            metrics = self._metrics
            children = self._per_method[method] = (
                metrics.rpc_started.labels(method=method),
                metrics.rpc_in_flight.labels(method=method),
                metrics.rpc_duration.labels(method=method),
            )
        return children

    def _handled_counter(self, method: str, code: str) -> Any:
        counter = self._handled.get((method, code))
        if counter is None:
            counter = self._handled[(method, code)] = self._metrics.rpc_handled.labels(method=method, code=code)
        return counter

    @asynccontextmanager
    async def around_call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        started_total, in_flight, duration = self._children(method)
        started_total.inc()
        in_flight.inc()
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            yield
            code = context.code() or grpc.StatusCode.OK
        except BaseException as error:
            code = _final_code(error, context)
            raise
        finally:
            seconds = time.perf_counter() - started
            in_flight.dec()
            self._handled_counter(method, code.name).inc()
            duration.observe(seconds)
            level = logging.DEBUG if method.startswith(self._quiet_prefixes) else logging.INFO
            log.log(
                level, "call finished", extra={"code": code.name, "duration_ms": round(seconds * 1000, 3)}
            )


def _final_code(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(error, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.DEADLINE_EXCEEDED if _deadline_passed(context) else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class ErrorInterceptor(CallInterceptor):
    """Turns exceptions into statuses: ``ServiceError`` by the error model, anything else INTERNAL.

    ``CancelledError`` is never caught (the client went away), and a handler's own ``context.abort``
    passes through unchanged.
    """

    @asynccontextmanager
    async def around_call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except errors.ServiceError as error:
            log.info("call failed: %s", error.message, extra={"reason": error.reason})
            await errors.abort(context, error)
        except Exception as error:
            log.error("unexpected error while handling the call", exc_info=error)
            await errors.abort(context, error, correlation_id_var.get())


class MessageInterceptor(HandlerInterceptor):
    """Parses requests and serialises replies inside the call (innermost, so failures become statuses).

    A request that cannot be parsed ends the call with INVALID_ARGUMENT (REQUEST_MALFORMED) instead of
    grpc's UNKNOWN; a request with a missing REQUIRED field or an over-long string or list with
    INVALID_ARGUMENT (FIELD_INVALID, ``server/messages.py``); a reply larger than ``max_reply_bytes`` with
    RESOURCE_EXHAUSTED (RESPONSE_TOO_LARGE), counted as a failure rather than as a success grpc then
    fails to send.
    """

    def __init__(self, max_reply_bytes: int):
        self._max_reply_bytes = max_reply_bytes
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Innermost, this sees each method's own handler, the same object call after call: wrap it once."""
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        serialize = handler.response_serializer

        def deserialize(raw: bytes) -> Any:
            if parse is None:
                return raw
            try:
                return parse(raw)
            except Exception as error:  # DecodeError, or any parser failure: never an UNKNOWN status
                return messages.Malformed(type(error).__name__)

        def checked(request: Any) -> Any:
            if isinstance(request, messages.Malformed):
                raise messages.malformed_error(request)
            if isinstance(request, Message):
                messages.check_request(request)
            return request

        def encoded(reply: Any) -> bytes:
            raw = reply if serialize is None else serialize(reply)
            if len(raw) > self._max_reply_bytes:
                raise messages.response_too_large(len(raw), self._max_reply_bytes)
            return raw  # type: ignore[no-any-return]

        def serializer(reply: Any) -> bytes:
            """Replies arrive encoded; only those a handler writes with ``context.write`` do not."""
            return reply if isinstance(reply, bytes) or serialize is None else serialize(reply)

        return wrap_handler(
            handler, _no_scope, request=checked, reply=encoded, deserializer=deserialize, serializer=serializer
        )


@asynccontextmanager
async def _no_scope(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    yield
