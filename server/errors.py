"""The service's error model (AIP-193): domain exceptions in, ``google.rpc.Status`` out.

Servicers raise a ``ServiceError`` subclass; the error interceptor turns it into a ``google.rpc.Status``
carrying exactly one ``ErrorInfo`` (plus ``BadRequest`` or ``RetryInfo`` where they apply) and aborts the
call with it. Any other exception becomes ``INTERNAL`` with a generic message: the client learns the
correlation id to quote, never a traceback or a secret. ``unpack`` reads these details back on the client.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "equihome.simulation.v1"
INTERNAL_MESSAGE = "Internal error. Quote the correlation id when reporting it."

# An error never carries more than this, whatever the caller sent (a 7 MB name must not make a 7 MB trailer).
MAX_MESSAGE_CHARS = 1024
MAX_METADATA_VALUE_CHARS = 256
MAX_FIELD_VIOLATIONS = 100
MAX_VIOLATION_CHARS = 512

_REASON_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,61}[A-Z0-9]")


class ServiceError(Exception):
    """An error meant for the caller: a gRPC code, a machine-readable reason and a human message.

    ``metadata`` repeats every dynamic value of the message (AIP-193), as strings.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        if not _REASON_PATTERN.fullmatch(self.reason):
            raise ValueError(f"error reason {self.reason!r} is not UPPER_SNAKE_CASE of at most 63 characters")
        self.metadata = {str(key): str(value) for key, value in (metadata or {}).items()}


class InvalidArgument(ServiceError):
    """The request is malformed; ``field_violations`` lists ``(field path, description)`` pairs."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        field_violations: Sequence[tuple[str, str]] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.field_violations = list(field_violations)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class _Retryable(ServiceError):
    """An error the caller may retry after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        retry_after: float,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        if not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}")
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class ResourceExhausted(_Retryable):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(_Retryable):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Cancelled(ServiceError):
    code = grpc.StatusCode.CANCELLED
    default_reason = "CANCELLED"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


def _packed(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def to_status(error: BaseException, correlation_id: str | None = None) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``error``; anything but a ``ServiceError`` becomes a generic INTERNAL."""
    if not isinstance(error, ServiceError):
        metadata = {"correlation_id": correlation_id} if correlation_id else {}
        error = ServiceError(INTERNAL_MESSAGE, reason="INTERNAL", metadata=metadata)
    metadata = {key: _clipped(value, MAX_METADATA_VALUE_CHARS) for key, value in error.metadata.items()}
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(error, InvalidArgument) and error.field_violations:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_clipped(field, MAX_VIOLATION_CHARS), description=_clipped(description, MAX_VIOLATION_CHARS)
            )
            for field, description in error.field_violations[:MAX_FIELD_VIOLATIONS]
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(error, _Retryable):
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=_duration(error.retry_after))))
    message = _clipped(error.message, MAX_MESSAGE_CHARS)
    return status_pb2.Status(code=error.code.value[0], message=message, details=details)


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def abort(
    context: grpc.aio.ServicerContext, error: BaseException, correlation_id: str | None = None
) -> NoReturn:
    """End the call with the status for ``error``; raises grpc's ``AbortError`` as ``context.abort`` does."""
    status = rpc_status.to_status(to_status(error, correlation_id))
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client can learn from a failed call."""

    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    precondition_failure: error_details_pb2.PreconditionFailure | None = None
    resource_info: error_details_pb2.ResourceInfo | None = None

    @property
    def reason(self) -> str | None:
        return self.error_info.reason if self.error_info else None

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying, when the server said so."""
        if self.retry_info is None:
            return None
        return float(self.retry_info.retry_delay.ToNanoseconds()) / 1e9


_DETAIL_FIELDS = {
    error_details_pb2.ErrorInfo: "error_info",
    error_details_pb2.BadRequest: "bad_request",
    error_details_pb2.RetryInfo: "retry_info",
    error_details_pb2.PreconditionFailure: "precondition_failure",
    error_details_pb2.ResourceInfo: "resource_info",
}


def unpack(rpc_error: grpc.RpcError) -> ErrorDetails:
    """The code, message and rich details of a failed call (sync ``grpc.RpcError`` or aio ``AioRpcError``).

    Modelled on ``google.api_core.exceptions._parse_grpc_error_details``: unknown detail types are
    ignored, and a call without a rich status still yields its code and message.
    """
    call: grpc.Call = rpc_error  # type: ignore[assignment]  # every RpcError raised by a call is also a Call
    status = rpc_status.from_call(call)
    if status is None:
        return ErrorDetails(code=call.code(), message=call.details() or "")
    found: dict[str, object] = {}
    for detail in status.details:
        for message_type, field in _DETAIL_FIELDS.items():
            if detail.Is(message_type.DESCRIPTOR):
                message = message_type()
                detail.Unpack(message)
                found[field] = message
    return ErrorDetails(code=call.code(), message=status.message, **found)  # type: ignore[arg-type]
