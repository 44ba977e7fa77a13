"""REST calls to one upstream system: token, correlation id, retries, circuit breaker, error mapping.

``get_json`` (idempotent) is retried on outages (5xx, timeouts, connection errors) with jittered
exponential backoff, unless the system asked for a ``retry_after`` longer than our longest wait;
``post_json`` is never retried (the outbox does that). GETs carry a token with the system's read scope,
POSTs one with its write scope. A 401 leads to one token re-fetch and one retry, for either method.
Responses are read up to ``max_response_bytes``; a longer one is refused as invalid data. Each
logical call goes through the system's circuit breaker (purgatory): ``threshold`` consecutive outages
open it, calls then fail fast with ``CircuitOpen`` until ``reset_s`` has passed, and one successful
trial closes it again. Only outages count; a 404 or 429 means the system is up.

The call runs in its own task, shielded from the caller's cancellation: a caller that gives up does
not count as an outage or leave the breaker half-open, and the answer still lands in the cache.

Every request carries ``X-Correlation-ID`` (the incoming gRPC call's, or a fresh one) so the upstream's
logs and ours line up. Errors in the guide's format become the ``UpstreamError`` subclasses.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

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
from adapters.json_reader import JsonObject, PayloadError
from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import AccessToken, SystemTokens
from adapters.shielded import ShieldedWork
from adapters.systems import Upstream

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
T = TypeVar("T")


@dataclass(frozen=True)
class ResiliencePolicy:
    """Timeouts, retries and circuit breaking of the REST calls to one system."""

    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    get_attempts: int = 3
    retry_initial_s: float = 0.1
    retry_max_s: float = 2.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    max_response_bytes: int = 32 * 1024 * 1024

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)


@dataclass(frozen=True)
class BreakerView:
    """The breaker as a status report sees it."""

    state: str  # "closed", "opened" or "half-opened"
    failures: int
    retry_after: float  # seconds until an open breaker lets a trial call through


def new_correlation_id() -> str:
    return f"corr_{uuid.uuid4().hex[:16]}"


class UpstreamHttpClient:
    """The REST client of one system."""

    def __init__(
        self,
        system: Upstream,
        base_url: str,
        tokens: SystemTokens,
        monitor: UpstreamMonitor,
        metrics: AdapterMetrics,
        *,
        policy: ResiliencePolicy,
        correlation_id: Callable[[], str | None] = lambda: None,
    ):
        self.system = system
        self.tokens = tokens
        self.monitor = monitor
        self.policy = policy
        self._metrics = metrics
        self._correlation_id = correlation_id
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=policy.timeout)
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=policy.breaker_threshold,
            default_ttl=policy.breaker_reset_s,
            exclude=[(UpstreamError, lambda error: not error.counts_as_outage)],
        )
        self._calls = ShieldedWork()

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON body; retried on outages."""
        return await self._calls.run(self._breaker_guarded(lambda: self._retried_get(path, params)))

    async def post_json(self, path: str, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Any:
        """POST ``body`` as JSON and return the decoded answer (None when empty); never retried."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        exchange = lambda: self._exchange("POST", path, json=body, headers=headers)  # noqa: E731
        return await self._calls.run(self._breaker_guarded(exchange))

    async def breaker(self) -> BreakerView:
        context = (await self._breakers.get_breaker(self.system.value)).context
        retry_after = 0.0
        if context.state == "opened" and context.opened_at is not None:
            retry_after = max(0.0, context.opened_at + context.ttl - time.time())
            if retry_after == 0.0:
                return BreakerView("half-opened", context.failure_count or 0, 0.0)
        return BreakerView(context.state, context.failure_count or 0, retry_after)

    async def aclose(self) -> None:
        await self._calls.cancel_all()
        await self._http.aclose()

    # The layers of one call, outermost first (the outermost: ``self._calls.run``, shielded).

    async def _breaker_guarded(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        breaker = await self._breakers.get_breaker(self.system.value)
        try:
            async with breaker:
                return await call()
        except OpenedState as opened:
            retry_after = max(0.0, opened.opened_at + self.policy.breaker_reset_s - time.time())
            raise CircuitOpen(
                self.system,
                "(any)",
                f"the circuit breaker of {self.system.value} is open",
                retry_after=retry_after,
            ) from None

    async def _retried_get(self, path: str, params: Mapping[str, str] | None) -> Any:
        def worth_retrying(error: BaseException) -> bool:
            if not isinstance(error, UpstreamUnavailable):
                return False
            return error.retry_after is None or error.retry_after <= self.policy.retry_max_s

        retrying = AsyncRetrying(
            retry=retry_if_exception(worth_retrying),
            stop=stop_after_attempt(self.policy.get_attempts),
            wait=wait_exponential_jitter(
                multiplier=self.policy.retry_initial_s,
                max=self.policy.retry_max_s,
                jitter=self.policy.retry_initial_s,
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._exchange("GET", path, params=params)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _exchange(self, method: str, path: str, **request: Any) -> Any:
        """One request (plus one retry after a 401), its outcome recorded, its body decoded."""
        try:
            response, content = await self._authorised(method, path, **request)
            body = self._decoded(method, path, response, content)
        except UpstreamError as error:
            self._record_failure(method, error)
            raise
        self.monitor.succeeded()
        return body

    async def _authorised(self, method: str, path: str, **request: Any) -> tuple[httpx.Response, bytes]:
        tokens = self.tokens.for_method(method)
        token = await tokens.token()
        response, content = await self._send(method, path, token, **request)
        if response.status_code != 401:
            return response, content
        log.info("access token rejected; fetching a new one", extra={"system": self.system.value})
        response, content = await self._send(method, path, await tokens.refresh(token), **request)
        if response.status_code == 401:
            raise self._error(method, path, response, content, UpstreamAuthFailed)
        return response, content

    async def _send(
        self, method: str, path: str, token: AccessToken, *, headers: Mapping[str, str] | None = None, **request: Any
    ) -> tuple[httpx.Response, bytes]:
        correlation_id = self._correlation_id() or new_correlation_id()
        headers = {**(headers or {}), **token.header, CORRELATION_HEADER: correlation_id}
        started = time.perf_counter()
        try:
            async with self._http.stream(method, path, headers=headers, **request) as response:
                content = await self._bounded_body(method, path, response)
        except httpx.TimeoutException as error:
            self._metrics.requests.labels(system=self.system.value, method=method, outcome="timeout").inc()
            raise UpstreamUnavailable(
                self.system, path, f"{self.system.value} did not answer in time ({type(error).__name__})"
            ) from error
        except httpx.TransportError as error:
            outcome = "unreachable"
            self._metrics.requests.labels(system=self.system.value, method=method, outcome=outcome).inc()
            raise UpstreamUnavailable(
                self.system, path, f"{self.system.value} is unreachable ({type(error).__name__})"
            ) from error
        finally:
            self._metrics.request_seconds.labels(system=self.system.value, method=method).observe(
                time.perf_counter() - started
            )
        self._metrics.requests.labels(
            system=self.system.value, method=method, outcome=str(response.status_code)
        ).inc()
        return response, content

    async def _bounded_body(self, method: str, path: str, response: httpx.Response) -> bytes:
        """The body, read up to ``max_response_bytes``: a system may not make us hold more."""
        limit = self.policy.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise UpstreamDataInvalid(self.system, path, "(body)", f"longer than {limit} bytes")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise UpstreamDataInvalid(self.system, path, "(body)", f"longer than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _decoded(self, method: str, path: str, response: httpx.Response, content: bytes) -> Any:
        status = response.status_code
        if status >= 500:
            raise self._error(method, path, response, content, UpstreamUnavailable)
        if status == 429:
            raise self._error(method, path, response, content, UpstreamRateLimited)
        if status == 404:
            raise self._error(method, path, response, content, UpstreamNotFound)
        if status in (401, 403):
            raise self._error(method, path, response, content, UpstreamAuthFailed)
        if status >= 400:
            raise self._error(method, path, response, content, UpstreamRejected)
        if status == 204 or not content:
            return None
        try:
            return json.loads(content)
        except (ValueError, RecursionError):
            raise UpstreamDataInvalid(self.system, path, "(body)", "not valid JSON") from None

    def _error(
        self, method: str, path: str, response: httpx.Response, content: bytes, kind: type[UpstreamError]
    ) -> UpstreamError:
        said = read_error_body(content)
        message = said.get("message") or f"HTTP {response.status_code}"
        return kind(
            self.system,
            path,
            f"{self.system.value} answered {method} {path} with {response.status_code}: {message}",
            status=response.status_code,
            code=said.get("code"),
            retry_after=retry_after_seconds(response, said.get("details", {})),
            correlation_id=said.get("correlation_id") or response.headers.get(CORRELATION_HEADER),
            details=said.get("details", {}),
        )

    def _record_failure(self, method: str, error: UpstreamError) -> None:
        no_token = isinstance(error, UpstreamAuthFailed) and error.status is None
        if isinstance(error, UpstreamUnavailable) or no_token:
            self.monitor.failed(error.message)
        else:
            self.monitor.answered_with_error(error.message)
        log.warning(
            "upstream call failed: %s",
            error.message,
            extra={
                "system": self.system.value,
                "endpoint": error.endpoint,
                "http_method": method,
                "status": error.status,
                "upstream_code": error.code,
                "upstream_correlation_id": error.correlation_id,
            },
        )


def read_error_body(content: bytes) -> dict[str, Any]:
    """``code``, ``message``, ``details`` and ``correlation_id`` of an error in the guide's format.

    Anything else (a proxy's HTML page, an empty body) gives an empty dict: the status still tells what
    happened. Malformed members are dropped with a log line rather than trusted.
    """
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return {}
    try:
        error = JsonObject(body).object("error")
        said: dict[str, Any] = {
            "code": error.optional_string("code"),
            "message": error.optional_string("message"),
            "correlation_id": error.optional_string("correlation_id"),
        }
        details = error.optional_object("details")
        said["details"] = details.value if details is not None else {}
    except PayloadError as problem:
        log.warning("upstream error body is not in the guide's format", extra={"problem": str(problem)})
        return {}
    return {key: value for key, value in said.items() if value is not None}


def retry_after_seconds(response: httpx.Response, details: Mapping[str, Any]) -> float | None:
    """``details.retry_after`` (the guide's), else the ``Retry-After`` header (seconds or an HTTP date)."""
    from_body = details.get("retry_after")
    if isinstance(from_body, (int, float)) and not isinstance(from_body, bool) and from_body >= 0:
        return float(from_body)
    header = response.headers.get("Retry-After")
    if header is None:
        return None
    if header.strip().isdigit():
        return float(header.strip())
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
