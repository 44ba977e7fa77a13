"""The WebSocket event subscription of one system: redundant connections, reconnects, typed events.

The sandbox (like many real systems) does not replay events missed while a client was disconnected. So
the subscription keeps ``connections`` sockets open at once (default 2), each subscribed to every
channel of the system, and merges them by frame id (``Resequencer``): one socket dropping loses nothing
as long as another is up. Secondary sockets connect after the next event on the primary, at start and
whenever all sockets went down together, so that "drop after N events" or
"drop after N seconds" does not hit them all at once. Events published while every socket is down are
lost (the systems do not replay); the frame ids tell, and they are counted and logged.

Each socket:

* connects with a token from the provider, asked again on every attempt; a 401 handshake or a close
  for an expired token (1008) invalidates the token, so the next attempt fetches a fresh one;
* sends the guide's subscribe message per channel and waits (briefly) for the acknowledgements;
* reconnects at once after an established connection ends, then with jittered exponential backoff
  (tenacity) while attempts fail;
* is replaced before its token expires: a new socket with a fresh token is opened and subscribed
  before the old one closes (make before break), the overlap de-duplicated by id;
* detects a silent peer: websockets' keepalive pings (``ping_interval_s``/``ping_timeout_s``), and an
  explicit ping when nothing arrived for ``idle_timeout_s``.

Malformed frames (bad JSON, wrong types) are counted and logged, then skipped; the socket stays up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from adapters.errors import UpstreamAuthFailed
from adapters.frames import Frame, decode_frame, event_from_frame
from adapters.http import CORRELATION_HEADER, new_correlation_id
from adapters.json_reader import PayloadError
from adapters.metrics import AdapterMetrics
from adapters.monitor import SocketState, UpstreamMonitor
from adapters.oauth import AccessToken, TokenProvider
from adapters.resequencer import Resequencer
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008  # the sandbox: token expired, or we read too slowly
EventHandler = Callable[[event_pb2.Event, Frame], None]


@dataclass(frozen=True)
class SocketPolicy:
    connections: int = 2
    open_timeout_s: float = 10.0
    subscribe_timeout_s: float = 5.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 30.0
    reorder_hold_s: float = 0.5


class ConnectFailed(Exception):
    """A connection attempt failed; the reconnect loop tries again after a backoff."""


class SocketSession:
    """One open, subscribed socket and the task reading it."""

    def __init__(self, connection: ClientConnection, token: AccessToken, channels: int):
        self.connection = connection
        self.token = token
        self.opened_at = time.time()
        self.acknowledged = asyncio.Event()
        self._awaiting_acks = channels
        self.events = 0
        self.reader: asyncio.Task[None] | None = None

    def acknowledge(self) -> None:
        self._awaiting_acks -= 1
        if self._awaiting_acks <= 0:
            self.acknowledged.set()

    async def close(self) -> None:
        await self.connection.close()
        if self.reader is not None:
            await asyncio.wait({self.reader})


class EventSubscription:
    """Keeps ``policy.connections`` sockets to one system and hands each new event to ``on_event``."""

    def __init__(
        self,
        system: Upstream,
        url: str,
        tokens: TokenProvider,
        monitor: UpstreamMonitor,
        metrics: AdapterMetrics,
        on_event: EventHandler,
        *,
        policy: SocketPolicy,
    ):
        self.system = system
        self.url = url
        self.tokens = tokens
        self.monitor = monitor
        self.policy = policy
        self._metrics = metrics
        self._on_event = on_event
        self._states = [SocketState.DISCONNECTED] * policy.connections
        self._primary_event = asyncio.Event()
        self._sessions: set[SocketSession] = set()  # open sockets, closed when the subscription stops
        self._merge: Resequencer[tuple[event_pb2.Event, Frame]] = Resequencer(
            self._deliver, self._missed, hold_s=policy.reorder_hold_s, name=system.value
        )

    async def run(self) -> None:
        """Keep the sockets up until cancelled."""
        self.monitor.socket(SocketState.CONNECTING)
        slots = [
            asyncio.create_task(self._keep_connected(index), name=f"{self.system.value} websocket {index}")
            for index in range(self.policy.connections)
        ]
        try:
            await asyncio.gather(*slots)
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            closing = [session.close() for session in list(self._sessions)]
            await asyncio.gather(*closing, return_exceptions=True)
            self._merge.close()
            self.monitor.socket(SocketState.DISCONNECTED)

    # One slot: a socket kept open for ever, replaced before its token expires.

    async def _keep_connected(self, index: int) -> None:
        await self._stagger(index)
        while True:
            session = await self._connect_with_backoff(index)
            while True:
                rotated = await self._until_closed_or_rotation(session, index)
                if rotated is None:
                    break
                session = rotated
            self._set_state(index, SocketState.CONNECTING)
            if SocketState.CONNECTED not in self._states:
                await self._stagger(index)  # every socket went down together: stagger them again

    async def _stagger(self, index: int) -> None:
        """Secondary sockets connect after the primary's next event, at start and after every socket went
        down together, so that a drop after N events or N seconds does not hit them all at once. (A quiet
        system needs no second socket until it has something to say.)"""
        if index == 0:
            return
        self._primary_event.clear()
        await self._primary_event.wait()

    async def _connect_with_backoff(self, index: int) -> SocketSession:
        self._set_state(index, SocketState.CONNECTING)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConnectFailed),
            wait=wait_exponential_jitter(
                multiplier=self.policy.reconnect_initial_s,
                max=self.policy.reconnect_max_s,
                jitter=self.policy.reconnect_initial_s,
            ),
            stop=stop_never,
            reraise=True,
            before_sleep=lambda state: self._set_state(index, SocketState.DISCONNECTED),
        )
        async for attempt in retrying:
            with attempt:
                session = await self._open(index)
        self._set_state(index, SocketState.CONNECTED)
        return session

    async def _until_closed_or_rotation(self, session: SocketSession, index: int) -> SocketSession | None:
        """Wait until the socket ends (None) or its token is due; then return its replacement."""
        assert session.reader is not None
        rotate_in = self._rotation_time(session.token, index) - time.time()
        timeout = max(0.0, rotate_in) if math.isfinite(rotate_in) else None  # None: a token without expiry
        done, _ = await asyncio.wait({session.reader}, timeout=timeout)
        if done:
            self._reader_ended(session.reader, index)
            return None
        try:
            replacement = await self._open(index)
        except ConnectFailed:
            log.warning(
                "could not replace a socket before its token expires; keeping it until it closes",
                extra={"upstream": self.system.value, "connection": index},
            )
            await asyncio.wait({session.reader})
            self._reader_ended(session.reader, index)
            return None
        await session.close()
        where = {"upstream": self.system.value, "connection": index}
        log.info("socket replaced ahead of token expiry", extra=where)
        return replacement

    def _reader_ended(self, reader: asyncio.Task[None], index: int) -> None:
        if not reader.cancelled() and reader.exception() is not None:
            log.error(
                "websocket reader failed; reconnecting",
                extra={"upstream": self.system.value, "connection": index},
                exc_info=reader.exception(),
            )

    def _rotation_time(self, token: AccessToken, index: int) -> float:
        """When to replace a socket: at the token's refresh time, later connections a little later still
        (all before expiry), so the replacements of a system's sockets do not coincide."""
        margin = token.expires_at - token.refresh_at
        return token.refresh_at + margin * index / (2 * self.policy.connections)

    # Opening a socket.

    async def _open(self, index: int) -> SocketSession:
        """Connect, subscribe to every channel, start reading; raises ``ConnectFailed``."""
        try:
            token = await self.tokens.token()
        except UpstreamAuthFailed as error:
            self.monitor.failed(error.message)
            raise ConnectFailed(error.message) from error
        headers = {**token.header, CORRELATION_HEADER: new_correlation_id()}
        try:
            connection = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.policy.open_timeout_s,
                ping_interval=self.policy.ping_interval_s,
                ping_timeout=self.policy.ping_timeout_s,
                close_timeout=self.policy.ping_timeout_s,
            )
        except InvalidStatus as error:
            self._handshake_refused(token, error)
            raise ConnectFailed(f"handshake refused with {error.response.status_code}") from error
        except (OSError, TimeoutError, InvalidHandshake) as error:
            self._count_connect("failed")
            self.monitor.failed(f"{self.system.value} websocket unreachable ({type(error).__name__})")
            raise ConnectFailed(str(error)) from error
        self._count_connect("ok")
        self.monitor.succeeded()
        session = SocketSession(connection, token, len(self.system.channels))
        session.reader = asyncio.create_task(
            self._read(session, index), name=f"{self.system.value} websocket {index} reader"
        )
        self._sessions.add(session)
        session.reader.add_done_callback(lambda _: self._sessions.discard(session))
        try:
            for channel in self.system.channels:
                await connection.send(json.dumps({"event": "subscribe", "data": {"channel": channel}}))
        except ConnectionClosed as error:
            await asyncio.wait({session.reader})
            raise ConnectFailed(f"closed while subscribing ({error})") from error
        try:
            acknowledged = asyncio.shield(session.acknowledged.wait())
            await asyncio.wait_for(acknowledged, self.policy.subscribe_timeout_s)
        except TimeoutError:
            log.warning(
                "no subscription acknowledgement; assuming subscribed",
                extra={"upstream": self.system.value, "connection": index},
            )
        if session.reader.done() and not session.acknowledged.is_set() and session.events == 0:
            raise ConnectFailed("closed before the subscription took effect")
        log.info("websocket subscribed", extra={"upstream": self.system.value, "connection": index})
        return session

    def _handshake_refused(self, token: AccessToken, error: InvalidStatus) -> None:
        status = error.response.status_code
        self._count_connect("refused")
        message = f"{self.system.value} websocket handshake refused with {status}"
        if status >= 500:
            self.monitor.failed(message)
        else:
            self.monitor.answered_with_error(message)
        if status == 401:
            self.tokens.invalidate(token)
        body = _short(error.response.body)
        log.warning(message, extra={"upstream": self.system.value, "status": status, "body": body})

    # Reading a socket.

    async def _read(self, session: SocketSession, index: int) -> None:
        connection = session.connection
        try:
            while True:
                try:
                    async with asyncio.timeout(self.policy.idle_timeout_s):
                        message = await connection.recv()
                except TimeoutError:
                    await self._probe(connection, index)
                    continue
                self._receive(session, index, message)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            reason = closed.rcvd.reason if closed.rcvd is not None else ""
            if code == CLOSE_POLICY_VIOLATION:
                self.tokens.invalidate(session.token)
            log.info(
                "websocket closed",
                extra={"upstream": self.system.value, "connection": index, "code": code, "reason": reason},
            )

    async def _probe(self, connection: ClientConnection, index: int) -> None:
        """Nothing arrived for a while: a pong says the peer is just quiet; no pong closes the socket."""
        try:
            pong = await connection.ping()
            async with asyncio.timeout(self.policy.ping_timeout_s):
                await pong
        except TimeoutError:
            log.warning(
                "silent websocket; reconnecting", extra={"upstream": self.system.value, "connection": index}
            )
            await connection.close(1011, "no pong")

    def _receive(self, session: SocketSession, index: int, message: str | bytes) -> None:
        received_at = datetime.now(UTC)
        try:
            frame = decode_frame(message)
            if frame.is_control:
                self._control(session, index, frame)
                return
            event = event_from_frame(self.system, frame, received_at)
        except PayloadError as problem:
            self._count_frame("malformed")
            log.warning(
                "malformed websocket frame skipped: %s",
                problem,
                extra={"upstream": self.system.value, "connection": index, "frame": _short(message)},
            )
            return
        self.monitor.event_received()
        session.events += 1
        if index == 0:
            self._primary_event.set()
        fresh = self._merge.push(index, frame.id, (event, frame))
        self._count_frame("event" if fresh else "duplicate")

    def _control(self, session: SocketSession, index: int, frame: Frame) -> None:
        self._count_frame("control" if frame.event != "error" else "error")
        if frame.event == "subscribed":
            session.acknowledge()
        elif frame.event == "error":
            log.warning(
                "upstream websocket error frame",
                extra={"upstream": self.system.value, "connection": index, "error": frame.data.value},
            )

    def _deliver(self, item: tuple[event_pb2.Event, Frame]) -> None:
        self._on_event(*item)

    def _missed(self, first: int, last: int) -> None:
        count = last - first + 1
        self._metrics.events_missed.labels(system=self.system.value).inc(count)
        log.error(
            "upstream events lost: no connection received them",
            extra={"upstream": self.system.value, "first_id": first, "last_id": last, "count": count},
        )

    # Bookkeeping.

    def _set_state(self, index: int, state: SocketState) -> None:
        self._states[index] = state
        if SocketState.CONNECTED in self._states:
            overall = SocketState.CONNECTED
        elif SocketState.CONNECTING in self._states:
            overall = SocketState.CONNECTING
        else:
            overall = SocketState.DISCONNECTED
        self.monitor.socket(overall)

    def _count_connect(self, outcome: str) -> None:
        self._metrics.socket_connects.labels(system=self.system.value, outcome=outcome).inc()

    def _count_frame(self, kind: str) -> None:
        self._metrics.frames.labels(system=self.system.value, kind=kind).inc()


def _short(message: Any, limit: int = 200) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, (bytes, bytearray)) else str(message)
    return text if len(text) <= limit else text[:limit] + "..."
