"""What can go wrong when the engine talks to an upstream system, as exceptions the server can map.

Each failure names the system and the endpoint and keeps what the upstream said in the guide's error
format (code, message, ``retry_after``, correlation id). ``counts_as_outage`` marks the failures that
say "the system is down" (5xx, timeouts, refused connections): only those trip the circuit breaker.
Mapping to gRPC statuses happens in the server (``server/integration/errors.py``), not here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from adapters.json_reader import PayloadError
from adapters.systems import Upstream

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A call to ``system`` failed."""

    counts_as_outage: ClassVar[bool] = False

    def __init__(
        self,
        system: Upstream,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        correlation_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.system = system
        self.endpoint = endpoint
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.correlation_id = correlation_id
        self.details = dict(details or {})


class UpstreamUnavailable(UpstreamError):
    """5xx, timeout or connection failure: the system is down or overloaded."""

    counts_as_outage = True


class UpstreamRateLimited(UpstreamError):
    """429: the system is up but refuses us for now (``retry_after``)."""


class UpstreamNotFound(UpstreamError):
    """404: the system does not know the portfolio, loan or path."""


class UpstreamRejected(UpstreamError):
    """Another 4xx: the system refused our request (a bug of ours, or data it will not accept)."""


class UpstreamAuthFailed(UpstreamError):
    """No usable access token: the token endpoint failed, or the system rejected a fresh token."""


class CircuitOpen(UpstreamError):
    """The circuit breaker of the system is open; ``retry_after`` is the time until it half-opens."""


class UpstreamDataInvalid(UpstreamError):
    """The system answered, but its payload does not have the guide's shape; ``field`` names the spot."""

    def __init__(self, system: Upstream, endpoint: str, field: str, problem: str):
        super().__init__(system, endpoint, f"{system.value} sent invalid data: {field}: {problem}")
        self.field = field
        self.problem = problem


@contextmanager
def decoding(system: Upstream, endpoint: str) -> Iterator[None]:
    """Turns a ``PayloadError`` raised while mapping ``system``'s answer into ``UpstreamDataInvalid``."""
    try:
        yield
    except PayloadError as problem:
        log.warning(
            "upstream payload rejected: %s",
            problem,
            extra={"system": system.value, "endpoint": endpoint, "field": problem.field},
        )
        raise UpstreamDataInvalid(system, endpoint, problem.field, problem.problem) from None
