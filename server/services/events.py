"""EventService: the platform event stream (upstream WebSocket events and this service's own events).

The stream yields messages the event bus serialised once for every subscriber, so the method is
registered with an identity serializer (``add_event_service``) instead of the generated function.
Semantics (filters, cursors, heartbeats, slow subscribers, shutdown) are in docs/integration.md and in
``server/integration/subscription.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from equihome.events.v1 import event_pb2, event_service_pb2
from server.app import Lifecycle, ServiceBinding
from server.auth import current_principal
from server.errors import InvalidArgument
from server.integration.bus import EventBus
from server.integration.event_keys import EventFilter
from server.integration.subscription import event_stream

SERVICE = event_service_pb2.DESCRIPTOR.services_by_name["EventService"]
SCOPES = {"SubscribeEvents": "events:read"}
DEFAULT_HEARTBEAT_S = 15.0
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 1.0, 300.0
KNOWN_TYPES = frozenset(event_pb2.EventType.values()) - {event_pb2.EVENT_TYPE_UNSPECIFIED}


def _already_serialised(message: bytes) -> bytes:
    return message


class EventService:
    """Streams end with OK at shutdown: a background task ends them when ``lifecycle`` starts shutting down.
    (Not ``Lifecycle.until_shutdown``: its task per message is too dear at 20,000 messages a second.)"""

    def __init__(self, bus: EventBus, lifecycle: Lifecycle):
        self._bus = bus
        lifecycle.add_background_task(self._end_streams_at_shutdown(lifecycle), name="end event streams")

    async def _end_streams_at_shutdown(self, lifecycle: Lifecycle) -> None:
        await lifecycle.shutting_down.wait()
        self._bus.end_streams()

    def SubscribeEvents(  # noqa: N802 (gRPC method name)
        self, request: event_service_pb2.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The stream itself, returned as is (one generator fewer per message on the hot path). Events about
        simulations reach only their owner, unless the caller holds the admin scope."""
        caller = current_principal.get()
        owner = None if caller is None or caller.is_admin else caller.subject
        event_filter, start_after, heartbeat_s = subscription_parameters(request, owner)
        return event_stream(self._bus, event_filter, start_after, heartbeat_s)


def subscription_parameters(
    request: event_service_pb2.SubscribeEventsRequest, owner: str | None = None
) -> tuple[EventFilter, int | None, float]:
    """The filter (limited to ``owner``'s simulations when given), start cursor and heartbeat interval of
    ``request``; ``InvalidArgument`` lists problems."""
    problems = []
    for index, event_type in enumerate(request.event_types):
        if event_type not in KNOWN_TYPES:
            problems.append((f"event_types[{index}]", "must be a known EventType other than UNSPECIFIED"))
    start_after: int | None = None
    if request.start_after_cursor:
        if request.start_after_cursor.isdigit() and request.start_after_cursor.isascii():
            start_after = int(request.start_after_cursor)
        else:
            problems.append(("start_after_cursor", "not a cursor this service issued"))
    heartbeat_s = DEFAULT_HEARTBEAT_S
    if request.HasField("heartbeat_interval"):
        heartbeat_s = request.heartbeat_interval.ToNanoseconds() / 1e9
        if not MIN_HEARTBEAT_S <= heartbeat_s <= MAX_HEARTBEAT_S:
            problems.append(("heartbeat_interval", "must be between 1 s and 300 s"))
    if problems:
        raise InvalidArgument("The subscription request is invalid.", problems, reason="FIELD_INVALID")
    event_filter = EventFilter.of(
        request.event_types, request.portfolio_id, request.region_id, request.property_id, owner
    )
    return event_filter, start_after, heartbeat_s


def add_event_service(servicer: EventService, server: grpc.aio.Server) -> None:
    """Register ``servicer`` with a pass-through response serializer (responses arrive serialised)."""
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.SubscribeEvents,
        request_deserializer=event_service_pb2.SubscribeEventsRequest.FromString,
        response_serializer=_already_serialised,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, {"SubscribeEvents": handler}),)
    )


def events_binding(bus: EventBus, lifecycle: Lifecycle) -> ServiceBinding:
    add: Any = add_event_service
    return ServiceBinding(SERVICE.full_name, add, EventService(bus, lifecycle), SCOPES)
