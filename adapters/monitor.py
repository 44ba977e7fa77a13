"""What the adapters of one system have seen lately: calls, failures, the WebSocket, events.

The REST client and the WebSocket subscription both report here; the integration status (GetIntegration)
and the health rule read it. ``on_change`` listeners hear about every change of reachability or
WebSocket state, so health can follow without polling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from adapters.systems import Upstream

log = logging.getLogger(__name__)


class SocketState(StrEnum):
    DISABLED = "disabled"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class UpstreamMonitor:
    """Reachability, last success and failure, consecutive failures and WebSocket state of one system."""

    def __init__(self, system: Upstream, clock: Callable[[], float] = time.time):
        self.system = system
        self._clock = clock
        self.reachable: bool | None = None  # None: not contacted yet
        self.consecutive_failures = 0
        self.last_success_time: float | None = None
        self.last_error_time: float | None = None
        self.last_error_message = ""
        self.socket_state = SocketState.DISABLED
        self.last_event_time: float | None = None
        self._listeners: list[Callable[[UpstreamMonitor], None]] = []

    def on_change(self, listener: Callable[[UpstreamMonitor], None]) -> None:
        self._listeners.append(listener)

    @property
    def down(self) -> bool:
        """Down: contacted, the last contact failed, and no WebSocket is connected."""
        return self.reachable is False and self.socket_state is not SocketState.CONNECTED

    def succeeded(self) -> None:
        """A call reached the system and got an answer that was not a 5xx."""
        changed = self.reachable is not True
        self.reachable = True
        self.consecutive_failures = 0
        self.last_success_time = self._clock()
        if changed:
            self._changed()

    def answered_with_error(self, message: str) -> None:
        """The system answered, but refused the call (4xx): it is reachable, the call failed."""
        changed = self.reachable is not True
        self.reachable = True
        self._record_error(message)
        if changed:
            self._changed()

    def failed(self, message: str) -> None:
        """The system could not be reached, or answered 5xx."""
        changed = self.reachable is not False
        self.reachable = False
        self.consecutive_failures += 1
        self._record_error(message)
        if changed:
            self._changed()

    def _record_error(self, message: str) -> None:
        self.last_error_time = self._clock()
        self.last_error_message = message

    def socket(self, state: SocketState) -> None:
        if state is not self.socket_state:
            self.socket_state = state
            self._changed()

    def event_received(self) -> None:
        self.last_event_time = self._clock()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener(self)
