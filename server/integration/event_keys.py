"""What subscription filters look at in an event: its type and the portfolio, region and property it is
about (api.md: filters AND together; an event that does not carry a filtered field does not match), and
the owner of the simulation it is about: a subscriber without the admin scope gets only its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from equihome.events.v1 import event_pb2

# Event.payload case -> EventType.
EVENT_TYPES: dict[str, event_pb2.EventType.ValueType] = {
    "zone_classification_updated": event_pb2.EVENT_TYPE_ZONE_CLASSIFICATION_UPDATED,
    "market_risk_updated": event_pb2.EVENT_TYPE_MARKET_RISK_UPDATED,
    "portfolio_updated": event_pb2.EVENT_TYPE_PORTFOLIO_UPDATED,
    "metrics_updated": event_pb2.EVENT_TYPE_METRICS_UPDATED,
    "loan_application_submitted": event_pb2.EVENT_TYPE_LOAN_APPLICATION_SUBMITTED,
    "loan_approved": event_pb2.EVENT_TYPE_LOAN_APPROVED,
    "simulation_progressed": event_pb2.EVENT_TYPE_SIMULATION_PROGRESSED,
    "simulation_completed": event_pb2.EVENT_TYPE_SIMULATION_COMPLETED,
    "impact_analysis_completed": event_pb2.EVENT_TYPE_IMPACT_ANALYSIS_COMPLETED,
    "heartbeat": event_pb2.EVENT_TYPE_HEARTBEAT,
    "optimization_completed": event_pb2.EVENT_TYPE_OPTIMIZATION_COMPLETED,
    "study_completed": event_pb2.EVENT_TYPE_STUDY_COMPLETED,
}
OWNED_EVENTS = frozenset({"simulation_progressed", "simulation_completed", "study_completed"})
PORTFOLIO_EVENTS = frozenset(
    {
        "portfolio_updated",
        "metrics_updated",
        "simulation_progressed",
        "simulation_completed",
        "impact_analysis_completed",
        "optimization_completed",
    }
)


@dataclass(frozen=True)
class EventKey:
    type: event_pb2.EventType.ValueType
    portfolio_id: str = ""
    region_id: str = ""
    property_id: str = ""
    owner: str | None = None  # set on events about one caller's simulation


def event_key(event: event_pb2.Event) -> EventKey:
    case = event.WhichOneof("payload")
    if case is None:
        raise ValueError("an event without a payload cannot be published")
    payload = getattr(event, case)
    return EventKey(
        type=EVENT_TYPES[case],
        portfolio_id=payload.portfolio_id if case in PORTFOLIO_EVENTS else "",
        region_id=payload.region_id if case == "market_risk_updated" else "",
        property_id=payload.property_id if case == "zone_classification_updated" else "",
        owner=_owner(case, payload),
    )


def _owner(case: str, payload: object) -> str | None:
    """A simulation's owner; an optimisation's or impact analysis's owner, or None (everyone's) for an automatic
    one."""
    if case in OWNED_EVENTS:
        return payload.owner  # type: ignore[attr-defined]
    if case in ("optimization_completed", "impact_analysis_completed"):
        return payload.owner or None  # type: ignore[attr-defined]
    return None


@dataclass(frozen=True)
class EventFilter:
    """Empty fields match everything; set fields must all match. ``owner``: events about a simulation match
    only if it is that owner's (None: any owner's, for admins)."""

    types: frozenset[event_pb2.EventType.ValueType] = frozenset()
    portfolio_id: str = ""
    region_id: str = ""
    property_id: str = ""
    owner: str | None = None

    @classmethod
    def of(
        cls,
        types: Iterable[event_pb2.EventType.ValueType] = (),
        portfolio_id: str = "",
        region_id: str = "",
        property_id: str = "",
        owner: str | None = None,
    ) -> EventFilter:
        return cls(frozenset(types), portfolio_id, region_id, property_id, owner)

    def matches(self, key: EventKey) -> bool:
        return (
            (self.owner is None or key.owner is None or key.owner == self.owner)
            and (not self.types or key.type in self.types)
            and (not self.portfolio_id or key.portfolio_id == self.portfolio_id)
            and (not self.region_id or key.region_id == self.region_id)
            and (not self.property_id or key.property_id == self.property_id)
        )
