"""What several services' requests share: the idempotency key (AIP-155), a watch's update interval, and the
time a call may take before its deadline."""

from __future__ import annotations

import hashlib
import uuid

import grpc
from google.protobuf.message import Message

from server import errors

MIN_UPDATE_INTERVAL_S = 0.1
DEFAULT_UPDATE_INTERVAL_S = 1.0
DEADLINE_MARGIN_S = 0.1  # answer just before the caller's deadline, so it learns the reason


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def request_id(text: str) -> str | None:
    """The request's idempotency key, or None when it has none; it must be a UUID."""
    if not text:
        return None
    if not is_uuid(text):
        raise errors.InvalidArgument(
            "request_id must be a UUID.", [("request_id", "must be a UUID")], reason="FIELD_INVALID"
        )
    return text


def request_fingerprint(request: Message) -> str:
    """Fingerprint of everything in ``request`` but its ``request_id``: a retry must send the same request."""
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def update_interval(request: Message) -> float:
    """Seconds between a watch's updates: its ``min_update_interval`` when set (at least 100 ms), else 1 s."""
    if not request.HasField("min_update_interval"):
        return DEFAULT_UPDATE_INTERVAL_S
    seconds = request.min_update_interval.ToNanoseconds() / 1e9
    if seconds < MIN_UPDATE_INTERVAL_S:
        raise errors.InvalidArgument(
            "min_update_interval must be at least 100 ms.",
            [("min_update_interval", "at least 100 ms")],
            reason="FIELD_INVALID",
        )
    return seconds


def time_budget(context: grpc.aio.ServicerContext, without_deadline_s: float) -> float:
    """Seconds a unary call may work: until just before its deadline, else ``without_deadline_s``."""
    remaining = context.time_remaining()
    if remaining is None:
        return without_deadline_s
    return max(remaining - DEADLINE_MARGIN_S, 0.0)
