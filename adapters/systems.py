"""The three upstream systems as the engine knows them: names, scopes, events, proto values.

Everything here comes from the integration guide, except the default WebSocket channels of the PMS and
the Underwriting System: the guide subscribes the TLS to ``zone_updates`` and names no other channel, so
theirs follow its style (``portfolio_updates``, ``loan_updates``). Channels are a setting
(docs/integration.md). A system's URLs and credentials come from the settings, never from here.
"""

from __future__ import annotations

from enum import StrEnum

from equihome.type.v1 import system_pb2


class Upstream(StrEnum):
    """An upstream system; the value is the guide's service name (``details.service`` in its errors)."""

    TRAFFIC_LIGHT = "traffic-light"
    PMS = "pms"
    UNDERWRITING = "underwriting"

    @property
    def title(self) -> str:
        return _TITLES[self]

    @property
    def integration_name(self) -> str:
        """The resource name of its ``Integration`` (``integrations/portfolio-management``, ...)."""
        return f"integrations/{_INTEGRATION_IDS[self]}"

    @property
    def proto(self) -> system_pb2.System.ValueType:
        return _PROTO_SYSTEMS[self]

    @property
    def read_scope(self) -> str:
        """The scope of its GETs and its WebSocket (``pms:read``)."""
        return f"{self.value}:read"

    @property
    def write_scope(self) -> str:
        """The scope of the POSTs to it (``pms:write``)."""
        return f"{self.value}:write"

    @property
    def default_channels(self) -> tuple[str, ...]:
        """The WebSocket channels subscribed unless the settings name others."""
        return _DEFAULT_CHANNELS[self]

    @property
    def events(self) -> tuple[str, ...]:
        """The event types it publishes, as the guide names them."""
        return _EVENTS[self]


_TITLES = {
    Upstream.TRAFFIC_LIGHT: "Traffic Light System",
    Upstream.PMS: "Portfolio Management System",
    Upstream.UNDERWRITING: "Underwriting System",
}

_INTEGRATION_IDS = {
    Upstream.TRAFFIC_LIGHT: "traffic-light",
    Upstream.PMS: "portfolio-management",
    Upstream.UNDERWRITING: "underwriting",
}

_PROTO_SYSTEMS = {
    Upstream.TRAFFIC_LIGHT: system_pb2.SYSTEM_TRAFFIC_LIGHT,
    Upstream.PMS: system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT,
    Upstream.UNDERWRITING: system_pb2.SYSTEM_UNDERWRITING,
}

_EVENTS: dict[Upstream, tuple[str, ...]] = {
    Upstream.TRAFFIC_LIGHT: ("zone_classification_updated", "market_risk_updated"),
    Upstream.PMS: ("portfolio_updated", "metrics_updated"),
    Upstream.UNDERWRITING: ("loan_application_submitted", "loan_approved"),
}

_DEFAULT_CHANNELS: dict[Upstream, tuple[str, ...]] = {
    Upstream.TRAFFIC_LIGHT: ("zone_updates",),
    Upstream.PMS: ("portfolio_updates",),
    Upstream.UNDERWRITING: ("loan_updates",),
}


def upstream_by_integration_id(integration_id: str) -> Upstream | None:
    """The system whose integration id (the last part of its resource name) is ``integration_id``."""
    return next((system for system, name in _INTEGRATION_IDS.items() if name == integration_id), None)
