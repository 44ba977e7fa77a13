"""The WebSocket endpoint of each system: ``/ws/<system>``.

After the handshake (token and read scope checked by the gateway) the client subscribes:
``{"event": "subscribe", "data": {"channel": "<channel>"}}``; ``unsubscribe`` works the same way. Only
events of subscribed channels are sent. As in the guide, nothing answers a subscription, and messages
the system does not understand are ignored. With the ``subscription_acks`` extension a subscription is
answered ``{"event": "subscribed", "data": {"channel", "channels"}}`` and a bad message
``{"event": "error", "data": {"code", "message", "details", "correlation_id"}}``; with
``per_event_channels``, ``"*"`` subscribes to every channel of the system.

The socket is closed by the server with:
1001 when the sandbox shuts down, 1008 when the token expires or the client reads too slowly,
1012 for the drop-connection fault knobs, 1013 when the system goes into outage. With the ``ws_silent``
knob, open sockets stay up but no event frame is written to them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.sandbox.broadcast import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    Broadcaster,
    CloseRequest,
    Subscription,
    Wake,
)
from adapters.sandbox.config import Extensions
from adapters.sandbox.faults import FaultBoard, MalformedKind
from adapters.sandbox.frames import EventFrame, control_frame
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import ALL_CHANNELS, System
from adapters.sandbox.tasks import cancel_and_wait
from adapters.sandbox.tokens import Principal

SUBSCRIPTION_REPLIES = {"subscribe": "subscribed", "unsubscribe": "unsubscribed"}
MALFORMED_KINDS = (MalformedKind.INVALID_JSON, MalformedKind.WRONG_TYPES)


def websocket_routes(state: SandboxState, system: System) -> list[WebSocketRoute]:
    async def endpoint(websocket: WebSocket) -> None:
        broadcaster = state.broadcasters[system]
        await SocketSession(websocket, system, broadcaster, state.faults, state.config.extensions).run()

    return [WebSocketRoute(system.ws_path, endpoint)]


class SocketSession:
    """One client socket: a receiver handling subscriptions and a sender draining the queue."""

    def __init__(
        self,
        websocket: WebSocket,
        system: System,
        broadcaster: Broadcaster,
        faults: FaultBoard,
        extensions: Extensions,
    ):
        self._websocket = websocket
        self._system = system
        self._broadcaster = broadcaster
        self._faults = faults
        self._extensions = extensions
        self._principal: Principal = websocket.state.principal
        self._correlation_id: str = websocket.state.correlation_id
        self._events_sent = 0
        self._drop_every: float | None = None
        self._drop_from = 0.0

    async def run(self) -> None:
        await self._websocket.accept()
        subscription = self._broadcaster.attach()
        tasks = {
            asyncio.create_task(self._receive(subscription), name="socket receiver"),
            asyncio.create_task(self._send(subscription), name="socket sender"),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._broadcaster.detach(subscription)
            for task in tasks:
                await cancel_and_wait(task)

    async def _receive(self, subscription: Subscription) -> None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                answer = self._error("unsupported_frame", "Send JSON text frames, not binary")
            else:
                answer = self._answer(subscription, message["text"])
            if self._extensions.subscription_acks:
                subscription.reply(answer)

    def _answer(self, subscription: Subscription, text: str) -> str:
        """Apply a client message; returns the reply the ``subscription_acks`` extension sends."""
        try:
            request = json.loads(text)
        except json.JSONDecodeError:
            return self._error("invalid_message", "The message is not valid JSON")
        event = request.get("event") if isinstance(request, dict) else None
        data = request.get("data") if isinstance(request, dict) else None
        channel = data.get("channel") if isinstance(data, dict) else None
        if event not in SUBSCRIPTION_REPLIES or not isinstance(channel, str):
            return self._error(
                "invalid_message",
                'Expected {"event": "subscribe" | "unsubscribe", "data": {"channel": "<channel>"}}',
            )
        known = list(self._broadcaster.channels)
        if self._extensions.per_event_channels:
            known.append(ALL_CHANNELS)
        if channel not in known:
            message = f"No channel {channel!r}"
            return self._error("unknown_channel", message, channel=channel, channels=known)
        if event == "subscribe":
            subscription.channels.add(channel)
        else:
            subscription.channels.discard(channel)
        reply = {"channel": channel, "channels": sorted(subscription.channels)}
        return control_frame(SUBSCRIPTION_REPLIES[event], reply)

    def _error(self, code: str, message: str, **details: Any) -> str:
        error = {"code": code, "message": message, "details": details, "correlation_id": self._correlation_id}
        return control_frame("error", error)

    async def _send(self, subscription: Subscription) -> None:
        try:
            while True:
                item = await self._next_item(subscription)
                if isinstance(item, CloseRequest):
                    await self._websocket.close(item.code, item.reason)
                    return
                if isinstance(item, Wake):
                    continue
                if isinstance(item, str):
                    await self._websocket.send_text(item)
                    continue
                if self._faults.settings.for_system(self._system).ws_silent:
                    continue
                text = self._render(item)
                await self._websocket.send_text(text)
                if text is item.text:
                    self._broadcaster.sent(item)
                self._events_sent += 1
                drop_after = self._faults.settings.for_system(self._system).ws_drop_after_events
                if drop_after is not None and self._events_sent >= drop_after:
                    reason = f"sandbox fault: dropped after {drop_after} events"
                    await self._websocket.close(CLOSE_SERVICE_RESTART, reason)
                    return
        except WebSocketDisconnect:
            return  # the client left while we were sending; the session is over

    async def _next_item(self, subscription: Subscription) -> EventFrame | str | CloseRequest | Wake:
        """The next queued item, or a close request when a deadline (token expiry, drop knob) comes first."""
        deadline, on_deadline = self._next_deadline()
        try:
            async with asyncio.timeout_at(deadline):
                return await subscription.next_item()
        except TimeoutError:
            return on_deadline

    def _next_deadline(self) -> tuple[float, CloseRequest]:
        loop = asyncio.get_running_loop()
        token_expiry = loop.time() + (self._principal.expires_at - time.time())
        expired = CloseRequest(CLOSE_POLICY_VIOLATION, "access token expired")
        drop_every = self._faults.settings.for_system(self._system).ws_drop_every_seconds
        if drop_every != self._drop_every:
            self._drop_every, self._drop_from = drop_every, loop.time()
        if drop_every is None or token_expiry <= self._drop_from + drop_every:
            return token_expiry, expired
        dropped = CloseRequest(CLOSE_SERVICE_RESTART, f"sandbox fault: dropped every {drop_every:g} s")
        return self._drop_from + drop_every, dropped

    def _render(self, frame: EventFrame) -> str:
        knobs = self._faults.settings.for_system(self._system)
        if not self._faults.rolls(knobs.malformed_frame_rate):
            return frame.text
        kind = knobs.malformed_frame_kind
        return frame.malformed(self._faults.choose(MALFORMED_KINDS) if kind is MalformedKind.MIXED else kind)
