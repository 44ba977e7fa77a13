"""OAuth 2.0 client credentials: token providers per upstream system and scope.

Each system gets two providers (``SystemTokens``): one asking for its read scope, used by GETs and the
WebSocket, and one asking for its write scope, used only by POSTs. A call carries only the scope it needs.

The provider fetches a token with authlib's ``AsyncOAuth2Client`` (client authentication by HTTP
Basic), caches it, and fetches a new one ``refresh_margin`` before it expires (a minute, or half the
lifetime for short-lived tokens). Concurrent callers share one fetch: a lock serialises fetches and
whoever waited finds the new token. ``refresh(rejected)`` is the 401 path: it fetches again only if
``rejected`` is still the current token, so a burst of 401s costs one fetch. Transient token endpoint
failures (5xx, timeouts) are retried a few times with jittered backoff.

The client secret is a ``SecretStr``: it never appears in a repr or a log line. Nothing here reveals
the token endpoint to callers either: failures become ``UpstreamAuthFailed`` with a generic message,
and only the log names the endpoint's host.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adapters.errors import UpstreamAuthFailed
from adapters.systems import Upstream

log = logging.getLogger(__name__)

DEFAULT_LEEWAY_S = 60.0
TOKEN_FETCH_ATTEMPTS = 3


def read_secret_file(path: Path) -> SecretStr:
    """A secret kept in a file (e.g. a mounted Kubernetes secret); surrounding whitespace is dropped."""
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise ValueError(f"the secret file {path} is empty")
    return SecretStr(secret)


@dataclass(frozen=True)
class ClientCredentials:
    """Where and as whom to ask for tokens. ``repr`` masks the secret."""

    token_url: str
    client_id: str
    client_secret: SecretStr
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when to stop using it. ``repr`` never shows the token itself."""

    value: str = field(repr=False)
    expires_at: float  # epoch seconds
    refresh_at: float  # epoch seconds; from then on the provider fetches a new one

    def usable(self, now: float) -> bool:
        return now < self.refresh_at

    @property
    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


class TokenState(StrEnum):
    MISSING = "missing"
    VALID = "valid"
    EXPIRED = "expired"
    FAILED = "failed"


def _transient(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


class TokenProvider:
    """Client-credentials tokens for one system, fetched one at a time and refreshed before expiry."""

    def __init__(
        self,
        system: Upstream,
        credentials: ClientCredentials,
        *,
        timeout: httpx.Timeout,
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Callable[[], float] = time.time,
        on_fetch: Callable[[Upstream, bool], None] | None = None,
    ):
        self.system = system
        self._credentials = credentials
        self._leeway_s = leeway_s
        self._clock = clock
        self._on_fetch = on_fetch
        self._client = AsyncOAuth2Client(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret.get_secret_value(),
            scope=" ".join(credentials.scopes),
            token_endpoint=credentials.token_url,
            grant_type="client_credentials",
            timeout=timeout,
        )
        self._lock = asyncio.Lock()
        self._token: AccessToken | None = None
        self._failed = False
        self.fetches = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"TokenProvider({self.system.value}, client_id={self._credentials.client_id!r})"

    @property
    def state(self) -> TokenState:
        if self._failed:
            return TokenState.FAILED
        if self._token is None:
            return TokenState.MISSING
        return TokenState.VALID if self._clock() < self._token.expires_at else TokenState.EXPIRED

    @property
    def expires_at(self) -> float | None:
        return None if self._token is None else self._token.expires_at

    async def token(self) -> AccessToken:
        """A token that is not due for refresh; fetches one if needed."""
        current = self._token
        if current is not None and current.usable(self._clock()):
            return current
        async with self._lock:
            current = self._token
            if current is not None and current.usable(self._clock()):
                return current  # another caller fetched it while we waited
            return await self._fetch()

    async def refresh(self, rejected: AccessToken) -> AccessToken:
        """A new token after the system rejected ``rejected`` (401); one fetch however many callers ask."""
        async with self._lock:
            current = self._token
            if current is not None and current is not rejected and current.usable(self._clock()):
                return current
            return await self._fetch()

    def invalidate(self, rejected: AccessToken) -> None:
        """Forget ``rejected`` (e.g. a socket closed for an expired token); the next ``token()`` fetches."""
        if self._token is rejected:
            self._token = None

    async def _fetch(self) -> AccessToken:
        try:
            retrying = AsyncRetrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(TOKEN_FETCH_ATTEMPTS),
                wait=wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.1),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    response = await self._client.fetch_token()
        except (OAuthError, httpx.HTTPError, ValueError) as error:
            self._failed = True
            self.last_error = _describe(error)
            if self._on_fetch is not None:
                self._on_fetch(self.system, False)
            log.warning(
                "could not obtain an access token",
                extra={
                    "system": self.system.value,
                    "token_host": urlsplit(self._credentials.token_url).hostname,
                    "cause": self.last_error,
                },
            )
            raise UpstreamAuthFailed(
                self.system, "(token)", f"could not obtain an access token for {self.system.value}"
            ) from error
        self.fetches += 1
        self._failed = False
        self.last_error = None
        self._token = self._access_token(response)
        if self._on_fetch is not None:
            self._on_fetch(self.system, True)
        expires_in_s = round(self._token.expires_at - self._clock())
        log.info("access token fetched", extra={"system": self.system.value, "expires_in_s": expires_in_s})
        return self._token

    def _access_token(self, response: dict[str, object]) -> AccessToken:
        now = self._clock()
        lifetime = float(response.get("expires_in") or 0)  # type: ignore[arg-type]
        if lifetime <= 0:
            # Without a lifetime we cannot refresh ahead of time; use it until the system says 401.
            return AccessToken(str(response["access_token"]), float("inf"), float("inf"))
        expires_at = now + lifetime
        margin = min(self._leeway_s, lifetime / 2)
        return AccessToken(str(response["access_token"]), expires_at, expires_at - margin)

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class SystemTokens:
    """The read-scope and write-scope token providers of one system."""

    read: TokenProvider
    write: TokenProvider

    @classmethod
    def create(
        cls,
        system: Upstream,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: httpx.Timeout,
        on_fetch: Callable[[Upstream, bool], None] | None = None,
    ) -> SystemTokens:
        def provider(scope: str) -> TokenProvider:
            credentials = ClientCredentials(token_url, client_id, client_secret, (scope,))
            return TokenProvider(system, credentials, timeout=timeout, on_fetch=on_fetch)

        return cls(provider(system.read_scope), provider(system.write_scope))

    def for_method(self, method: str) -> TokenProvider:
        return self.read if method == "GET" else self.write

    @property
    def state(self) -> TokenState:
        """FAILED when either provider's last fetch failed, else the read provider's state (the one in
        constant use)."""
        if TokenState.FAILED in (self.read.state, self.write.state):
            return TokenState.FAILED
        return self.read.state

    async def aclose(self) -> None:
        await self.read.aclose()
        await self.write.aclose()


def _describe(error: BaseException) -> str:
    """A log-safe cause: the OAuth error code, the HTTP status, or the exception type."""
    if isinstance(error, OAuthError):
        return f"token endpoint answered {error.error}"
    if isinstance(error, httpx.HTTPStatusError):
        return f"token endpoint answered HTTP {error.response.status_code}"
    return f"{type(error).__name__} while calling the token endpoint"
