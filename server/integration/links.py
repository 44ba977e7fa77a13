"""Everything the service holds for one upstream system, and its health report (the ``Integration``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from adapters.http import UpstreamHttpClient
from adapters.monitor import SocketState, UpstreamMonitor
from adapters.oauth import SystemTokens, TokenState
from adapters.systems import Upstream
from equihome.integration.v1 import integration_pb2
from server.integration.cache import ReadCache

Integration = integration_pb2.Integration

TOKEN_STATES = {
    TokenState.MISSING: Integration.TOKEN_STATE_MISSING,
    TokenState.VALID: Integration.TOKEN_STATE_VALID,
    TokenState.EXPIRED: Integration.TOKEN_STATE_EXPIRED,
    TokenState.FAILED: Integration.TOKEN_STATE_FAILED,
}
CIRCUIT_STATES = {
    "closed": Integration.CIRCUIT_STATE_CLOSED,
    "opened": Integration.CIRCUIT_STATE_OPEN,
    "half-opened": Integration.CIRCUIT_STATE_HALF_OPEN,
}
SOCKET_STATES = {
    SocketState.DISABLED: Integration.WEB_SOCKET_STATE_DISABLED,
    SocketState.CONNECTING: Integration.WEB_SOCKET_STATE_CONNECTING,
    SocketState.CONNECTED: Integration.WEB_SOCKET_STATE_CONNECTED,
    SocketState.DISCONNECTED: Integration.WEB_SOCKET_STATE_DISCONNECTED,
}


@dataclass(frozen=True)
class UpstreamLink:
    system: Upstream
    tokens: SystemTokens
    monitor: UpstreamMonitor
    http: UpstreamHttpClient


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


async def integration_status(link: UpstreamLink, cache: ReadCache) -> integration_pb2.Integration:
    """The health of one integration as GetIntegration reports it."""
    monitor = link.monitor
    breaker = await link.http.breaker()
    report = Integration(
        name=link.system.integration_name,
        system=link.system.proto,
        reachable=monitor.reachable is True,
        token_state=TOKEN_STATES[link.tokens.state],
        circuit_state=CIRCUIT_STATES[breaker.state],
        consecutive_failures=monitor.consecutive_failures,
        last_error_message=monitor.last_error_message,
        web_socket_state=SOCKET_STATES[monitor.socket_state],
    )
    expires_at = link.tokens.read.expires_at
    if expires_at is not None and expires_at != float("inf"):
        report.token_expire_time.CopyFrom(_timestamp(expires_at))
    if monitor.last_success_time is not None:
        report.last_success_time.CopyFrom(_timestamp(monitor.last_success_time))
    if monitor.last_error_time is not None:
        report.last_error_time.CopyFrom(_timestamp(monitor.last_error_time))
    if monitor.last_event_time is not None:
        report.last_event_time.CopyFrom(_timestamp(monitor.last_event_time))
    oldest = await cache.oldest(link.system)
    age = duration_pb2.Duration()
    age.FromMicroseconds(0 if oldest is None else max(0, time.time_ns() // 1000 - oldest))
    report.data_age.CopyFrom(age)
    return report


def disabled_status(system: Upstream) -> integration_pb2.Integration:
    """The report of an integration switched off in the settings (``integrations = off``)."""
    zero = duration_pb2.Duration()
    return Integration(
        name=system.integration_name,
        system=system.proto,
        reachable=False,
        token_state=Integration.TOKEN_STATE_MISSING,
        circuit_state=Integration.CIRCUIT_STATE_CLOSED,
        web_socket_state=Integration.WEB_SOCKET_STATE_DISABLED,
        last_error_message="integrations are off in the server settings",
        data_age=zero,
    )
