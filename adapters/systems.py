"""The three upstream systems as the engine knows them: names, scopes, WebSocket channels, proto values.

Everything here comes from the integration guide, except the channel names other than ``zone_updates``
(the guide names only that one; the others are the sandbox's, docs/sandbox.md). A system's base URL,
WebSocket URL and credentials come from the settings, never from here.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    def scopes(self) -> tuple[str, str]:
        """The read and write scope the engine asks for (``pms:read pms:write``)."""
        return f"{self.value}:read", f"{self.value}:write"

    @property
    def channels(self) -> Mapping[str, str]:
        """WebSocket channel -> the one event type it carries. Subscribing to all of them gives every
        event the system publishes, so frame ids are consecutive and a gap means a lost event."""
        return _CHANNELS[self]

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self.channels.values())


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

_CHANNELS: dict[Upstream, dict[str, str]] = {
    Upstream.TRAFFIC_LIGHT: {
        "zone_updates": "zone_classification_updated",
        "market_risk": "market_risk_updated",
    },
    Upstream.PMS: {"portfolio_updates": "portfolio_updated", "metrics_updates": "metrics_updated"},
    Upstream.UNDERWRITING: {
        "loan_applications": "loan_application_submitted",
        "loan_approvals": "loan_approved",
    },
}


def upstream_by_integration_id(integration_id: str) -> Upstream | None:
    """The system whose integration id (the last part of its resource name) is ``integration_id``."""
    return next((system for system, name in _INTEGRATION_IDS.items() if name == integration_id), None)
