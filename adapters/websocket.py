"""The WebSocket event source of one system: redundant sockets, merged by content, each event once.

The guide's frames are ``{"event", "data"}``: no acknowledgement, no id, no replay after a reconnect. So:

* the subscription keeps ``connections`` sockets open at once (default 2), each subscribed to the
  system's channels (guide-style defaults, or the configured ones), and merges them by content
  (``StreamMerger``): one socket dropping loses nothing while another is up;
* a socket sends its subscribe messages and is then in service; an acknowledgement is never awaited
  (a ``subscribed`` frame, if a system sends one, is just counted);
* an established socket that ends is reopened at once; failing attempts back off exponentially with
  jitter (tenacity). Secondary sockets open after the primary's first event or ``stagger_s`` after it
  opened, whichever comes first, so "drop after N events" faults do not hit them all at once;
* a socket is replaced before its token expires, make before break: the new socket (fresh token) opens
  and subscribes while the old one keeps reading, and the old one closes once it has carried the stream up
  to the new one's first event (or after ``rotation_overlap_s``). The overlap is de-duplicated by content;
* a close code that means "token expired" (``token_expired_codes``: 1008, 4001, 4003, 4401, 4403) and a
  refused handshake (401) discard the token, so the next attempt fetches a fresh one;
* silent peers: keepalive pings, and an explicit ping after ``idle_timeout_s`` without frames; no pong
  closes and reopens the socket;
* frames larger than ``max_frame_bytes`` close the socket (1009, then reconnect); malformed frames (bad
  JSON, wrong types, unknown event) are counted, logged and skipped.

What no socket saw cannot come from the sockets. Whenever every socket of the system was down, the
receiver is told (``coverage_gap``) once one is back, so the mirror reconciles at once; losses while a
socket was up but silent are found by the scheduled reconciliation (docs/integration.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
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
from adapters.stream_merge import MergeCursor, StreamMerger
from adapters.systems import Upstream
from adapters.transport import EventReceiver
from equihome.events.v1 import event_pb2

log = logging.getLogger(__name__)

TOKEN_EXPIRED_CLOSE_CODES = frozenset({1008, 4001, 4003, 4401, 4403})
RETIRE_POLL_S = 0.02


@dataclass(frozen=True)
class SocketPolicy:
    connections: int = 2
    channels: tuple[str, ...] = ()  # empty: the system's default channels
    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 30.0
    stagger_s: float = 1.0
    rotation_overlap_s: float = 5.0
    dedupe_window_s: float = 10.0
    max_frame_bytes: int = 256 * 1024
    token_expired_codes: frozenset[int] = TOKEN_EXPIRED_CLOSE_CODES


class ConnectFailed(Exception):
    """A connection attempt failed; the reconnect loop tries again after a backoff."""


class SocketSession:
    """One open, subscribed socket, its place in the merged stream and the task reading it."""

    def __init__(self, connection: ClientConnection, token: AccessToken, cursor: MergeCursor):
        self.connection = connection
        self.token = token
        self.cursor = cursor
        self.reader: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def close(self) -> None:
        await self.connection.close()
        if self.reader is not None:
            await asyncio.wait({self.reader})


class EventSubscription:
    """Keeps ``policy.connections`` sockets to one system and hands each new event to the receiver."""

    def __init__(
        self,
        system: Upstream,
        url: str,
        tokens: TokenProvider,
        monitor: UpstreamMonitor,
        metrics: AdapterMetrics,
        *,
        policy: SocketPolicy,
    ):
        self.system = system
        self.url = url
        self.tokens = tokens
        self.monitor = monitor
        self.policy = policy
        self.channels = policy.channels or system.default_channels
        self._metrics = metrics
        self._receiver: EventReceiver | None = None
        self._states = [SocketState.DISCONNECTED] * policy.connections
        self._primary_event = asyncio.Event()
        self._sessions: set[SocketSession] = set()  # open sockets, closed when the subscription stops
        self._merge: StreamMerger[tuple[event_pb2.Event, Frame]] = StreamMerger(
            self._deliver, window_s=policy.dedupe_window_s
        )
        self._blind_since: float | None = time.time()  # no socket listening since then
        self._last_frame_time = time.time()

    async def run(self, receiver: EventReceiver) -> None:
        """Keep the sockets up until cancelled."""
        self._receiver = receiver
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
            self.monitor.socket(SocketState.DISCONNECTED)

    # One slot: a socket kept open for ever, replaced before its token expires.

    async def _keep_connected(self, index: int) -> None:
        await self._stagger(index)
        while True:
            session: SocketSession | None = await self._connect_with_backoff(index)
            while session is not None:
                session = await self._until_closed_or_rotated(session, index)
            self._set_state(index, SocketState.CONNECTING)
            if SocketState.CONNECTED not in self._states:
                await self._stagger(index)  # every socket went down together: stagger them again

    async def _stagger(self, index: int) -> None:
        """Secondary sockets open after the primary's next event, or ``stagger_s`` later if none comes (a
        quiet or silent primary must not keep them closed)."""
        if index == 0:
            return
        self._primary_event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._primary_event.wait(), self.policy.stagger_s * index)

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

    async def _until_closed_or_rotated(self, session: SocketSession, index: int) -> SocketSession | None:
        """Wait until the socket ends (None) or its token is due; then return its replacement."""
        assert session.reader is not None
        rotate_in = self._rotation_time(session.token, index) - time.time()
        timeout = max(0.0, rotate_in) if math.isfinite(rotate_in) else None  # None: a token without expiry
        done, _ = await asyncio.wait({session.reader}, timeout=timeout)
        if done:
            return None
        try:
            replacement = await self._open(index)
        except ConnectFailed:
            log.warning(
                "could not replace a socket before its token expires; keeping it until it closes",
                extra={"upstream": self.system.value, "connection": index},
            )
            await asyncio.wait({session.reader})
            return None
        await self._retire(session, replacement)
        log.info("socket replaced ahead of token expiry", extra={"upstream": self.system.value, "connection": index})
        return replacement

    async def _retire(self, old: SocketSession, new: SocketSession) -> None:
        """Close ``old`` once it has carried the stream up to where ``new`` began (nothing it still had in
        flight is lost), or when the overlap is up (a quiet system proves nothing). A system that closes
        the old socket when its token expires ends it first; what it sent before that is still read."""
        deadline = time.time() + self.policy.rotation_overlap_s
        while old.open and new.open and time.time() < deadline and not old.cursor.caught_up_with(new.cursor):
            await asyncio.sleep(RETIRE_POLL_S)
        await old.close()

    def _rotation_time(self, token: AccessToken, index: int) -> float:
        """When to replace a socket: at the token's refresh time, later connections a little later still
        (all before expiry), so the replacements of a system's sockets do not coincide."""
        margin = token.expires_at - token.refresh_at
        return token.refresh_at + margin * index / (2 * self.policy.connections)

    # Opening a socket.

    async def _open(self, index: int) -> SocketSession:
        """Connect, start reading, send the subscriptions; raises ``ConnectFailed``."""
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
                max_size=self.policy.max_frame_bytes,
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
        # The cursor starts here, before subscribing: every event this socket will carry is published later.
        session = SocketSession(connection, token, self._merge.cursor())
        session.reader = asyncio.create_task(
            self._read(session, index), name=f"{self.system.value} websocket {index} reader"
        )
        self._sessions.add(session)
        session.reader.add_done_callback(lambda _: self._session_ended(session, index))
        try:
            for channel in self.channels:
                await connection.send(json.dumps({"event": "subscribe", "data": {"channel": channel}}))
        except ConnectionClosed as error:
            await asyncio.wait({session.reader})
            raise ConnectFailed(f"closed while subscribing ({error})") from error
        self._listening()
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

    # Coverage: whether any socket is listening.

    def _listening(self) -> None:
        if self._blind_since is None or self._receiver is None:
            return
        since, self._blind_since = self._blind_since, None
        self._metrics.coverage_gaps.labels(system=self.system.value).inc()
        self._receiver.coverage_gap(self.system, since)

    def _session_ended(self, session: SocketSession, index: int) -> None:
        self._sessions.discard(session)
        assert session.reader is not None
        if not session.reader.cancelled() and session.reader.exception() is not None:
            log.error(
                "websocket reader failed; reconnecting",
                extra={"upstream": self.system.value, "connection": index},
                exc_info=session.reader.exception(),
            )
        if not any(other.open for other in self._sessions) and self._blind_since is None:
            self._blind_since = min(time.time(), self._last_frame_time)

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
            if code in self.policy.token_expired_codes:
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
        self._last_frame_time = received_at.timestamp()
        try:
            frame = decode_frame(message)
            if frame.is_control:
                self._control(index, frame)
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
        if index == 0:
            self._primary_event.set()
        fresh = self._merge.push(session.cursor, frame.key, (event, frame))
        self._count_frame("event" if fresh else "duplicate")

    def _control(self, index: int, frame: Frame) -> None:
        self._count_frame("control" if frame.event != "error" else "error")
        if frame.event == "error":
            log.warning(
                "upstream websocket error frame",
                extra={"upstream": self.system.value, "connection": index, "error": _short(frame.data.value)},
            )

    def _deliver(self, item: tuple[event_pb2.Event, Frame]) -> None:
        event, frame = item
        assert self._receiver is not None
        self._receiver.event(event, frame.timestamp.timestamp() if frame.timestamp is not None else None)

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
    if isinstance(message, (bytes, bytearray)):
        text = message[: limit * 4].decode("utf-8", "replace")
    elif isinstance(message, str):
        text = message[: limit * 4]
    else:
        text = str(message)[: limit * 4]
    return text if len(text) <= limit else text[:limit] + "..."
