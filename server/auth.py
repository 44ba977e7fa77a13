"""OAuth 2.0 bearer tokens: verifying callers' JWTs, and a local signing key for development.

JOSE comes from ``joserfc``, not ``authlib.jose``: authlib 1.9 deprecates ``authlib.jose`` in favour
of joserfc (importing it emits ``AuthlibDeprecationWarning: authlib.jose module is deprecated, please
use joserfc instead``), both are by the same author, and joserfc is typed. authlib stays in use for the
OAuth client side in ``adapters/``.

A token is accepted when its signature verifies with a key from the key source (picked by ``kid``),
``iss`` and ``aud`` match, and ``exp``/``nbf``/``iat`` hold within a small leeway. Its scopes (``scope``
space-separated, or an ``scp`` list) are then checked per method by the auth interceptor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import stat
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwk, jws, jwt
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingKeyError,
)

from server.errors import Unauthenticated, Unavailable
from server.settings import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Settings

log = logging.getLogger(__name__)

ADMIN_SCOPE = "simulation:admin"  # see, cancel and follow every caller's simulations, not only one's own
SCOPES: tuple[str, ...] = (
    "simulation:read",
    "simulation:write",
    "impact:write",
    "optimization:read",
    "optimization:write",
    "study:read",
    "study:write",
    "events:read",
    "integration:read",
    "integration:write",
    ADMIN_SCOPE,
)
OPEN_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
MAX_TOKEN_CHARS = 8192
MAX_SUBJECT_CHARS = 256
VERIFIED_TOKENS_KEPT = 1024
VERIFIED_TOKEN_REUSE_S = 60.0


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the current RPC."""

    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


INSECURE_PRINCIPAL = Principal("anonymous (auth disabled)", frozenset(SCOPES))
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def authenticated_caller() -> Principal:
    """The caller of the current RPC, as the auth interceptor verified it."""
    principal = current_principal.get()
    if principal is None:
        raise RuntimeError("no authenticated caller: the service runs behind the auth interceptor")
    return principal


def _invalid(message: str, **metadata: str) -> Unauthenticated:
    return Unauthenticated(message, reason="TOKEN_INVALID", metadata=metadata)


class SigningKeys:
    """A JWK set loaded by ``loader``, cached for ``ttl`` seconds and reloaded early for an unknown ``kid``.

    Early reloads are rate-limited (``min_reload_interval``) so a stream of made-up key ids cannot turn
    into a stream of fetches. When a reload fails but keys are cached, the cached keys stay in use.
    """

    def __init__(
        self,
        loader: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        description: str,
        ttl: float = 300.0,
        min_reload_interval: float = 30.0,
    ):
        self._loader = loader
        self._description = description
        self._ttl = ttl
        self._min_reload_interval = min_reload_interval
        self._keys: jwk.KeySet | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwk.Key:
        """The public key with id ``kid`` (any single key when the token names none)."""
        keys = await self._current(force=False)
        try:
            return keys.get_by_kid(kid)
        except InvalidKeyIdError:
            keys = await self._current(force=True)
            return keys.get_by_kid(kid)

    async def _current(self, *, force: bool) -> jwk.KeySet:
        async with self._lock:
            age = time.monotonic() - self._loaded_at
            stale = age >= self._ttl or (force and age >= self._min_reload_interval)
            if self._keys is None or stale:
                await self._reload()
            assert self._keys is not None
            return self._keys

    async def _reload(self) -> None:
        try:
            self._keys = _public_key_set(await self._loader())
        except (OSError, ValueError, JoseError, httpx.HTTPError) as error:
            log.error("cannot load signing keys from %s: %s", self._description, error)
            if self._keys is None:
                raise Unavailable(
                    "Token signing keys are unavailable; try again shortly.",
                    retry_after=5.0,
                    reason="AUTH_KEYS_UNAVAILABLE",
                ) from error
        self._loaded_at = time.monotonic()


def _public_key_set(document: Mapping[str, Any]) -> jwk.KeySet:
    """Import a JWKS document keeping only public halves, so a private key file cannot leak into use."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWK set must be a JSON object with a "keys" list')
    keys = jwk.KeySet.import_key_set({"keys": list(document["keys"])})
    return jwk.KeySet([jwk.import_key(key.as_dict(private=False)) for key in keys])


def signing_keys_from_file(path: Path) -> SigningKeys:
    async def load() -> Mapping[str, Any]:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        return json.loads(text)  # type: ignore[no-any-return]

    return SigningKeys(load, description=str(path), min_reload_interval=5.0)


def signing_keys_from_url(
    url: str, client: httpx.AsyncClient, *, min_reload_interval: float = 30.0
) -> SigningKeys:
    async def load() -> Mapping[str, Any]:
        response = await client.get(url, headers={"accept": "application/json"})
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    host = httpx.URL(url).host
    return SigningKeys(
        load, description=f"the JWKS endpoint at {host}", min_reload_interval=min_reload_interval
    )


class TokenVerifier:
    """Checks bearer tokens and returns the ``Principal`` they carry.

    A verified token is remembered (the newest ``VERIFIED_TOKENS_KEPT``) for ``VERIFIED_TOKEN_REUSE_S`` or
    until it expires, whichever is first, so a caller's repeated calls skip the signature check. The reuse
    window is shorter than the key cache, so it never keeps a removed key in use for longer than that does.
    """

    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = 30,
        algorithms: Iterable[str] = ALGORITHMS,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ):
        self._keys = keys
        self._algorithms = list(algorithms)
        self._claims = jwt.JWTClaimsRegistry(
            leeway=leeway_s,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )
        self._on_close = on_close
        self._leeway_s = leeway_s
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()  # token → (caller, until)

    async def verify(self, token: str) -> Principal:
        """The caller behind ``token``; raises ``Unauthenticated`` (TOKEN_INVALID / TOKEN_EXPIRED)."""
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, valid_until = remembered
            if time.time() < valid_until:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal = await self._verify_signature_and_claims(token)
        expires = float(principal.claims["exp"]) + self._leeway_s
        self._verified[token] = (principal, min(expires, time.time() + VERIFIED_TOKEN_REUSE_S))
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return principal

    async def _verify_signature_and_claims(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise _invalid("The bearer token is malformed.")
        try:
            kid = jws.extract_compact(token.encode("ascii")).headers().get("kid")
        except (JoseError, ValueError, UnicodeError):
            raise _invalid("The bearer token is malformed.") from None
        try:
            key = await self._keys.key_for(kid)
        except (InvalidKeyIdError, MissingKeyError):
            raise _invalid("The bearer token is signed by an unknown key.") from None
        try:
            claims = jwt.decode(token, key, algorithms=self._algorithms).claims
        except (JoseError, ValueError):
            raise _invalid("The bearer token signature is not valid.") from None
        try:
            self._claims.validate(claims)
        except ExpiredTokenError:
            raise Unauthenticated("The bearer token has expired.", reason="TOKEN_EXPIRED") from None
        except ClaimError as error:
            raise _invalid(
                f"The bearer token claim {error.claim} is not acceptable.", claim=error.claim
            ) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            # the subject owns the caller's simulations: a token without one could pass for anyone
            raise _invalid("The bearer token has no usable subject (sub) claim.", claim="sub")
        return Principal(subject=subject, scopes=_scopes(claims), claims=claims)

    async def aclose(self) -> None:
        if self._on_close is not None:
            await self._on_close()


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(str(item) for item in scp)
    return frozenset()


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """The verifier for the configured key source; in dev-key mode the key is created if missing."""
    if settings.auth_jwks_url:
        client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False)
        keys = signing_keys_from_url(settings.auth_jwks_url, client)
        on_close: Callable[[], Awaitable[None]] | None = client.aclose
    else:
        if settings.auth_key_file is None:
            ensure_dev_key(settings.data_dir)
        path = settings.auth_key_file or dev_key_paths(settings.data_dir).public
        keys, on_close = signing_keys_from_file(path), None
    return TokenVerifier(
        keys,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        leeway_s=settings.auth_leeway_s,
        on_close=on_close,
    )


# --- Development signing key -------------------------------------------------------------------


@dataclass(frozen=True)
class DevKeyPaths:
    private: Path  # the signing key as a private JWK (mode 0600)
    public: Path  # the matching public JWK set the server verifies with


class DevKeyError(PermissionError):
    """The dev signing key exists but is unsafe to use."""


def dev_key_paths(data_dir: Path) -> DevKeyPaths:
    auth_dir = Path(data_dir) / "auth"
    return DevKeyPaths(private=auth_dir / "dev-signing-key.jwk", public=auth_dir / "dev-jwks.json")


def ensure_dev_key(data_dir: Path) -> Path:
    """Create the EC P-256 dev signing key (and its public JWKS) unless present; returns the key's path."""
    paths = dev_key_paths(data_dir)
    paths.private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not paths.private.exists():
        key = jwk.generate_key("EC", "P-256", parameters={"alg": "ES256", "use": "sig"}, auto_kid=True)
        _create_exclusively(paths.private, json.dumps(key.as_dict(private=True)))
    key = _load_private_key(paths.private)
    public = json.dumps({"keys": [key.as_dict(private=False)]}, indent=2)
    if not paths.public.exists() or paths.public.read_text(encoding="utf-8") != public:
        _replace_atomically(paths.public, public, mode=0o600)
    return paths.private


def issue_dev_token(
    data_dir: Path,
    scopes: Iterable[str],
    ttl: int = 3600,
    subject: str = "dev",
    *,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    """A token signed by the dev key (created if needed) granting ``scopes`` for ``ttl`` seconds."""
    key = _load_private_key(ensure_dev_key(data_dir))
    return sign_token(key, scopes=scopes, ttl=ttl, subject=subject, issuer=issuer, audience=audience)


def sign_token(
    key: jwk.Key,
    *,
    scopes: Iterable[str],
    issuer: str,
    audience: str,
    subject: str = "dev",
    ttl: int = 3600,
    now: int | None = None,
) -> str:
    """Sign a JWT with ``key``; ``now`` (epoch seconds) lets tests mint tokens that are already expired."""
    scopes = list(scopes)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": str(uuid.uuid4()),
        "scope": " ".join(scopes),
    }
    algorithm = key.alg or "ES256"
    return jwt.encode({"alg": algorithm, "kid": key.kid}, claims, key, algorithms=[algorithm])


def _load_private_key(path: Path) -> jwk.Key:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DevKeyError(
            f"dev signing key {path} is accessible by other users (mode {mode:04o}); chmod 600 it"
        )
    key = jwk.import_key(json.loads(path.read_text(encoding="utf-8")))
    if not key.is_private:
        raise DevKeyError(f"{path} holds a public key, not a signing key")
    return key


def _create_exclusively(path: Path, text: str) -> None:
    """Write ``path`` (mode 0600) only if it does not exist; a concurrent creator's file wins intact."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            log.info("dev signing key %s was created concurrently; using that one", path)
    finally:
        temporary.unlink()


def _replace_atomically(path: Path, text: str, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
