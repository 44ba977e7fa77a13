"""Upstream failures as the API's errors (docs/api.md "Errors", docs/integration.md "Resilience").

| upstream                                  | gRPC                | reason                 | RetryInfo          |
|-------------------------------------------|---------------------|------------------------|--------------------|
| 5xx, timeout, unreachable                 | UNAVAILABLE         | UPSTREAM_UNAVAILABLE   | its retry_after, else 5 s |
| circuit breaker open                      | UNAVAILABLE         | UPSTREAM_CIRCUIT_OPEN  | time to half-open  |
| no token, or a fresh token rejected, 403  | UNAVAILABLE         | UPSTREAM_AUTH_FAILED   | 30 s               |
| 429                                       | RESOURCE_EXHAUSTED  | UPSTREAM_RATE_LIMITED  | its retry_after, else 5 s |
| 404                                       | NOT_FOUND           | UPSTREAM_NOT_FOUND     |                    |
| 422 (it refused our data)                 | FAILED_PRECONDITION | UPSTREAM_DATA_INVALID  |                    |
| other 4xx (our request was malformed)     | INTERNAL            | INTERNAL               |                    |
| answer not in the guide's shape           | FAILED_PRECONDITION | UPSTREAM_DATA_INVALID  |                    |

Messages name the system and what happened; never the token endpoint or a credential.
"""

from __future__ import annotations

from adapters.errors import (
    CircuitOpen,
    UpstreamAuthFailed,
    UpstreamDataInvalid,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from server.errors import FailedPrecondition, NotFound, ResourceExhausted, ServiceError, Unavailable

DEFAULT_RETRY_AFTER_S = 5.0
AUTH_RETRY_AFTER_S = 30.0


def service_error(error: UpstreamError, identifier: str = "") -> ServiceError:
    """The API error for ``error``; ``identifier`` is the id the call was about (for NOT_FOUND)."""
    system = error.system.value
    metadata = {"system": system}
    if error.status is not None:
        metadata["status_code"] = str(error.status)
    if isinstance(error, CircuitOpen):
        return Unavailable(
            f"{error.system.title} is failing; calls are suspended for now.",
            error.retry_after or 0.0,
            reason="UPSTREAM_CIRCUIT_OPEN",
            metadata=metadata,
        )
    if isinstance(error, UpstreamUnavailable):
        return Unavailable(
            f"{error.system.title} is unavailable.",
            _retry_after(error),
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    if isinstance(error, UpstreamAuthFailed):
        return Unavailable(
            f"The service could not authenticate to {error.system.title}.",
            AUTH_RETRY_AFTER_S,
            reason="UPSTREAM_AUTH_FAILED",
            metadata=metadata,
        )
    if isinstance(error, UpstreamRateLimited):
        return ResourceExhausted(
            f"{error.system.title} is rate-limiting this service.",
            _retry_after(error),
            reason="UPSTREAM_RATE_LIMITED",
            metadata=metadata,
        )
    if isinstance(error, UpstreamNotFound):
        return NotFound(
            f"{error.system.title} does not know {identifier or 'the requested resource'}.",
            reason="UPSTREAM_NOT_FOUND",
            metadata={**metadata, "id": identifier},
        )
    if isinstance(error, UpstreamDataInvalid):
        return FailedPrecondition(
            f"{error.system.title} sent data this service cannot use ({error.field}: {error.problem}).",
            reason="UPSTREAM_DATA_INVALID",
            metadata={**metadata, "field": error.field, "problem": error.problem},
        )
    if isinstance(error, UpstreamRejected) and error.status == 422:
        fields = ", ".join(
            str(item.get("field")) for item in error.details.get("errors", []) if isinstance(item, dict)
        )
        return FailedPrecondition(
            f"{error.system.title} refused the data: {error.message}",
            reason="UPSTREAM_DATA_INVALID",
            metadata={**metadata, "fields": fields},
        )
    return ServiceError(
        f"{error.system.title} refused a request of this service; this is a bug on our side.",
        reason="INTERNAL",
        metadata=metadata,
    )


def _retry_after(error: UpstreamError) -> float:
    return error.retry_after if error.retry_after is not None else DEFAULT_RETRY_AFTER_S
