"""The transports behind which events come in and pushes go out, so another can sit beside them.

Today events arrive over the systems' WebSockets (``adapters.websocket.EventSubscription``) and pushes
leave as REST POSTs (``adapters.pushes.RestPushSink``). A durable bus (e.g. NATS JetStream, Kafka) would
be one more ``EventSource`` feeding the same ``EventReceiver`` (the integration runtime: event bus and
mirror), and one more ``PushSink`` the outbox delivers through; nothing downstream changes. See
docs/integration.md, "Transports".
"""

from __future__ import annotations

from typing import Protocol

from adapters.acknowledgement import Acknowledgement
from adapters.pushes import Push
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2


class EventReceiver(Protocol):
    """Where an event source hands what it gets."""

    def event(self, event: event_pb2.Event, origin_time: float | None) -> None:
        """A new upstream event (each delivered once), typed; ``origin_time`` is when the system published
        it (epoch seconds) if the transport says."""

    def coverage_gap(self, system: Upstream, since: float) -> None:
        """The source listened to none of ``system``'s events from about ``since`` until now: changes made
        then may never arrive as events, and should be looked for (reconciliation)."""


class EventSource(Protocol):
    system: Upstream

    async def run(self, receiver: EventReceiver) -> None:
        """Deliver events to ``receiver`` until cancelled; never raises for upstream trouble."""


class PushSink(Protocol):
    async def deliver(self, push: Push) -> Acknowledgement:
        """Deliver ``push`` once; raises ``adapters.errors.UpstreamError`` if the system did not accept it."""
