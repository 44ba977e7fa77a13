"""WebSocket frames: the guide's ``{"event", "data"}``, plus ``id`` and ``timestamp`` with the ``frame_ids``
extension.

Every frame has a number (``id``, increasing by one with every event a system publishes) and a publication
time, which the sandbox keeps for its own bookkeeping; they are written into the frame only when the
extension is on. ``timestamp`` is UTC with microseconds, ISO 8601 with a ``Z``. Control frames
(``subscribed``, ``unsubscribed``, ``error``, all extensions) carry neither. Malformed variants exist for
the fault knob.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.sandbox.faults import MalformedKind


def utc_timestamp(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class EventFrame:
    id: int
    event: str
    data: dict[str, Any]
    timestamp: str
    with_ids: bool = False  # write ``id`` and ``timestamp`` into the frame (extension)
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Encoded once, however many sockets it goes to.
        object.__setattr__(self, "text", json.dumps(self._body(), separators=(",", ":")))

    def _body(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"event": self.event, "data": self.data}
        if self.with_ids:
            frame |= {"id": self.id, "timestamp": self.timestamp}
        return frame

    def as_json(self) -> dict[str, Any]:
        return json.loads(self.text)

    def malformed(self, kind: MalformedKind) -> str:
        """The frame corrupted in the given way (``kind`` must not be MIXED)."""
        if kind is MalformedKind.INVALID_JSON:
            return self.text[: len(self.text) // 2]  # a cut-off object is never valid JSON
        mistyped: dict[str, Any] = {
            "event": self.event,
            "data": {name: _mistyped(value) for name, value in self.data.items()},
        }
        if self.with_ids:
            mistyped |= {"id": str(self.id), "timestamp": datetime.fromisoformat(self.timestamp).timestamp()}
        return json.dumps(mistyped, separators=(",", ":"))


def control_frame(event: str, data: dict[str, Any]) -> str:
    return json.dumps({"event": event, "data": data}, separators=(",", ":"))


def _mistyped(value: Any) -> Any:
    """A value of a different JSON type: strings become numbers, everything else becomes a string."""
    if isinstance(value, str):
        return len(value)
    return json.dumps(value)
