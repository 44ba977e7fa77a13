"""What a system answers to our POSTs.

The guide shows no response body; the sandbox answers ``202 {"id", "status", "received_at"}``. Whatever
is there is kept, nothing is required: an empty 2xx answer is an acknowledgement too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.json_reader import JsonObject, PayloadError


@dataclass(frozen=True)
class Acknowledgement:
    id: str | None = None
    status: str | None = None
    received_at: datetime | None = None


def acknowledgement_from_json(body: Any) -> Acknowledgement:
    if body is None:
        return Acknowledgement()
    document = JsonObject(body)
    received_at = document.optional_string("received_at")
    try:
        moment = None if received_at is None else datetime.fromisoformat(received_at)
    except ValueError:
        raise PayloadError("received_at", f"{received_at!r} is not an ISO 8601 time") from None
    return Acknowledgement(document.optional_string("id"), document.optional_string("status"), moment)
