"""WebSocket frames of the three systems, decoded and turned into our ``Event`` messages. Pure functions.

A frame is the guide's ``{"event": ..., "data": {...}}``; nothing else is relied on. Other members are
ignored, except an ISO 8601 ``timestamp`` (which some systems add) that feeds the upstream lag metric.
Frames are identified by their content (``Frame.key``: the event and its data, canonically encoded),
which is how the sockets of one system are merged (``adapters/stream_merge.py``). Control frames some
systems send (``subscribed``, ``unsubscribed``, ``error``) are told apart from events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from adapters.json_reader import JsonObject, PayloadError
from adapters.pms import mapping as pms
from adapters.systems import Upstream
from adapters.traffic_light import mapping as traffic_light
from adapters.underwriting import mapping as underwriting
from equihome.events.v1 import event_pb2

CONTROL_EVENTS = frozenset({"subscribed", "unsubscribed", "error"})

# Upstream event name -> (the Event.payload field it fills, the parser of its data).
EVENT_PARSERS: dict[str, tuple[str, Callable[[JsonObject], Message]]] = {
    "zone_classification_updated": (
        "zone_classification_updated",
        traffic_light.zone_classification_updated_from_json,
    ),
    "market_risk_updated": ("market_risk_updated", traffic_light.market_risk_updated_from_json),
    "portfolio_updated": ("portfolio_updated", pms.portfolio_updated_from_json),
    "metrics_updated": ("metrics_updated", pms.metrics_updated_from_json),
    "loan_application_submitted": (
        "loan_application_submitted",
        underwriting.loan_application_submitted_from_json,
    ),
    "loan_approved": ("loan_approved", underwriting.loan_approved_from_json),
}


@dataclass(frozen=True)
class Frame:
    """A decoded frame: ``event`` and ``data``, the optional ``timestamp``, and its content ``key``."""

    event: str
    data: JsonObject
    key: str
    timestamp: datetime | None = None

    @property
    def is_control(self) -> bool:
        return self.event in CONTROL_EVENTS


def decode_frame(text: str | bytes) -> Frame:
    """Decode one WebSocket message; raises ``PayloadError`` naming what is wrong."""
    if isinstance(text, bytes):
        raise PayloadError("(frame)", "expected a text frame, got binary")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise PayloadError("(frame)", f"not valid JSON ({error.msg} at character {error.pos})") from None
    except RecursionError:
        raise PayloadError("(frame)", "nested too deeply") from None
    frame = JsonObject(body)
    event = frame.identifier("event")
    data = frame.object("data")
    key = json.dumps([event, data.value], sort_keys=True, separators=(",", ":"))
    return Frame(event, data, key, _timestamp(frame.value.get("timestamp")))


def _timestamp(value: Any) -> datetime | None:
    """A well-formed ISO 8601 time with a zone, else None: the timestamp is not part of the guide, so a
    missing or odd one costs only the lag measurement."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.astimezone(UTC)


def event_from_frame(system: Upstream, frame: Frame, received_at: datetime) -> event_pb2.Event:
    """Our typed ``Event`` for an event frame of ``system``; ``time`` is when we received it."""
    if frame.event not in system.events:
        raise PayloadError("event", f"{system.value} does not publish {frame.event!r}")
    payload_field, parse = EVENT_PARSERS[frame.event]
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(received_at)
    event = event_pb2.Event(time=time, source=system.proto, origin=event_pb2.EVENT_ORIGIN_LIVE)
    getattr(event, payload_field).CopyFrom(parse(frame.data))
    return event
