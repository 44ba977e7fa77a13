"""Request and reply messages at the edge: parse failures, REQUIRED fields, size limits of strings and lists.

Every request is walked once, guided by its descriptor: a field marked ``REQUIRED`` (AIP-203) must be set,
a string may not exceed its length limit and a repeated field its item limit. Output-only fields are
ignored (AIP-203: they are not read on input), and a ``SimulationConfig`` is not entered: the config has its
own, heavier checks, which run off the event loop (``server/admission.py``). Violations are reported
together, field path first, without echoing the offending value.

Scalars that are not strings are REQUIRED only by documentation: proto3 cannot tell their zero from unset.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server import errors

DEFAULT_MAX_STRING_CHARS = 1024
DEFAULT_MAX_ITEMS = 1000
MAX_STRING_CHARS = {  # by field name, wherever it appears
    "name": 128,
    "display_name": 200,
    "portfolio_id": 128,
    "request_id": 64,
    "loan_id": 128,
    "property_id": 128,
    "region_id": 128,
    "property_ids": 128,
    "region_ids": 128,
    "start_after_cursor": 32,
    "optimization_id": 128,
    "service": 256,  # grpc.health.v1.HealthCheckRequest
}
MAX_ITEMS = {"states": 16, "event_types": 32}
NOT_ENTERED = frozenset({"equihome.simulation.v1.SimulationConfig"})  # checked by server/admission.py

REQUIRED = field_behavior_pb2.REQUIRED
OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY


class RequestMalformed(errors.InvalidArgument):
    default_reason = "REQUEST_MALFORMED"


class ResponseTooLarge(errors.ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESPONSE_TOO_LARGE"


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request that could not be parsed, so the call can end with a proper status."""

    error: str


def malformed_error(request: Malformed) -> RequestMalformed:
    return RequestMalformed(
        "The request message could not be parsed: it is truncated or holds a string that is not UTF-8.",
        [("request", "not a valid message of the method's request type")],
        metadata={"error": request.error},
    )


def response_too_large(size: int, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"The reply would be {size} bytes, more than the {limit}-byte message limit. Ask for a smaller "
        "view or page.",
        metadata={"bytes": str(size), "max_bytes": str(limit)},
    )


@dataclass(frozen=True)
class _FieldRule:
    field: FieldDescriptor
    required: bool
    max_chars: int | None  # strings
    max_items: int | None  # repeated fields
    enter: bool  # a message to walk into


@functools.cache
def _rules(descriptor: Descriptor) -> tuple[_FieldRule, ...]:
    rules = []
    for field in descriptor.fields:
        behaviours = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if OUTPUT_ONLY in behaviours:
            continue
        is_string = field.type == FieldDescriptor.TYPE_STRING
        is_message = field.message_type is not None
        rules.append(_FieldRule(
            field=field,
            required=REQUIRED in behaviours,
            max_chars=MAX_STRING_CHARS.get(field.name, DEFAULT_MAX_STRING_CHARS) if is_string else None,
            max_items=MAX_ITEMS.get(field.name, DEFAULT_MAX_ITEMS) if field.is_repeated else None,
            enter=is_message and field.message_type.full_name not in NOT_ENTERED,
        ))  # fmt: skip
    return tuple(rules)


def violations(message: Message, path: str = "") -> Iterator[tuple[str, str]]:
    """``(field path, problem)`` for every REQUIRED field missing and every string or list too long."""
    for rule in _rules(message.DESCRIPTOR):
        field = rule.field
        name = f"{path}.{field.name}" if path else field.name
        value = getattr(message, field.name)
        if field.is_repeated:
            if rule.required and not value:
                yield name, "required"
            if rule.max_items is not None and len(value) > rule.max_items:
                yield name, f"at most {rule.max_items} items"
                continue
            for index, item in enumerate(value):
                yield from _item_violations(rule, item, f"{name}[{index}]")
        elif field.message_type is not None:
            present = message.HasField(field.name)
            if rule.required and not present:
                yield name, "required"
            elif present and rule.enter:
                yield from violations(value, name)
        else:
            if rule.required and (value == "" or (field.enum_type is not None and value == 0)):
                yield name, "required"
            yield from _item_violations(rule, value, name)


def _item_violations(rule: _FieldRule, item: object, path: str) -> Iterator[tuple[str, str]]:
    if rule.max_chars is not None and len(item) > rule.max_chars:  # type: ignore[arg-type]
        yield path, f"at most {rule.max_chars} characters"
    elif rule.enter and isinstance(item, Message):
        yield from violations(item, path)


def check_request(message: Message) -> None:
    """Raise ``InvalidArgument`` (FIELD_INVALID) listing every violation of ``message``."""
    found = list(violations(message))
    if found:
        raise errors.InvalidArgument(
            "The request is invalid; the field violations list every problem.", found, reason="FIELD_INVALID"
        )
