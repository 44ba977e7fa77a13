"""The three external systems the sandbox stands in for, with the names the integration guide gives them.

Each system owns a REST prefix (``/api/<system>/...``), a WebSocket path (``/ws/<system>``), a token
audience, a read and a write scope, and a set of WebSocket channels, each carrying one event type.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

ALL_CHANNELS = "*"
AUTH_TARGET = "auth"


class System(StrEnum):
    TRAFFIC_LIGHT = "traffic-light"
    PMS = "pms"
    UNDERWRITING = "underwriting"

    @property
    def api_prefix(self) -> str:
        return f"/api/{self.value}"

    @property
    def ws_path(self) -> str:
        return f"/ws/{self.value}"

    @property
    def audience(self) -> str:
        return f"urn:equihome:{self.value}"

    @property
    def read_scope(self) -> str:
        return f"{self.value}:read"

    @property
    def write_scope(self) -> str:
        return f"{self.value}:write"

    @property
    def channels(self) -> Mapping[str, str]:
        """Channel name -> the one event type published on it."""
        return CHANNEL_EVENTS[self]

    def channel_of(self, event: str) -> str:
        return next(channel for channel, name in self.channels.items() if name == event)


CHANNEL_EVENTS: dict[System, dict[str, str]] = {
    System.TRAFFIC_LIGHT: {
        "zone_updates": "zone_classification_updated",
        "market_risk": "market_risk_updated",
    },
    System.PMS: {
        "portfolio_updates": "portfolio_updated",
        "metrics_updates": "metrics_updated",
    },
    System.UNDERWRITING: {
        "loan_applications": "loan_application_submitted",
        "loan_approvals": "loan_approved",
    },
}

ALL_SCOPES: tuple[str, ...] = tuple(
    scope for system in System for scope in (system.read_scope, system.write_scope)
)


def system_for_path(path: str) -> System | None:
    """The system that serves ``path`` (REST or WebSocket), or None for the sandbox's own paths."""
    for system in System:
        for prefix in (system.api_prefix, system.ws_path):
            if path == prefix or path.startswith(prefix + "/"):
                return system
    return None


def system_named(name: str) -> System:
    """The system called ``name``; raises ValueError listing the valid names otherwise."""
    try:
        return System(name)
    except ValueError:
        valid = ", ".join(system.value for system in System)
        raise ValueError(f"unknown system {name!r}; expected one of {valid}") from None
