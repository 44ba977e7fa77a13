"""The three external systems the sandbox stands in for, with the names the integration guide gives them.

Each system owns a REST prefix (``/api/<system>/...``), a WebSocket path (``/ws/<system>``), a token
audience, a read and a write scope, its event types and the WebSocket channels that carry them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

ALL_CHANNELS = "*"  # every channel of the system (with per-event channels only)
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
    def events(self) -> tuple[str, ...]:
        """The event types the system publishes."""
        return SYSTEM_EVENTS[self]

    def channels(self, per_event: bool) -> Mapping[str, tuple[str, ...]]:
        """Channel name -> the event types published on it: one guide-style channel for all the system's
        events, or (extension) one channel per event type."""
        return PER_EVENT_CHANNELS[self] if per_event else GUIDE_CHANNELS[self]


SYSTEM_EVENTS: dict[System, tuple[str, ...]] = {
    System.TRAFFIC_LIGHT: ("zone_classification_updated", "market_risk_updated"),
    System.PMS: ("portfolio_updated", "metrics_updated"),
    System.UNDERWRITING: ("loan_application_submitted", "loan_approved"),
}

# The guide subscribes the TLS to `zone_updates` and names no other channel; the PMS and Underwriting
# channels follow its style, one per system.
GUIDE_CHANNELS: dict[System, dict[str, tuple[str, ...]]] = {
    System.TRAFFIC_LIGHT: {"zone_updates": SYSTEM_EVENTS[System.TRAFFIC_LIGHT]},
    System.PMS: {"portfolio_updates": SYSTEM_EVENTS[System.PMS]},
    System.UNDERWRITING: {"loan_updates": SYSTEM_EVENTS[System.UNDERWRITING]},
}

PER_EVENT_CHANNELS: dict[System, dict[str, tuple[str, ...]]] = {
    System.TRAFFIC_LIGHT: {
        "zone_updates": ("zone_classification_updated",),
        "market_risk": ("market_risk_updated",),
    },
    System.PMS: {"portfolio_updates": ("portfolio_updated",), "metrics_updates": ("metrics_updated",)},
    System.UNDERWRITING: {
        "loan_applications": ("loan_application_submitted",),
        "loan_approvals": ("loan_approved",),
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
