"""The sandbox's OAuth 2.0 authority: client authentication, signed JWT access tokens, token checks.

Tokens follow RFC 9068 (JWT access tokens): ES256, header ``typ: at+jwt`` and the ``kid`` published in
the JWKS; claims ``iss``, ``sub`` = ``client_id``, ``aud`` = one audience per system the granted
scopes reach (``urn:equihome:<system>``), ``scope``, ``iat``, ``exp``, ``jti``.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError
from joserfc.jwk import ECKey, KeySet

from adapters.sandbox.config import ClientRegistration, SandboxConfig
from adapters.sandbox.errors import ApiError, unauthorized
from adapters.sandbox.faults import TokenFaults
from adapters.sandbox.systems import System

SIGNING_ALGORITHM = "ES256"
KEY_ID = "sandbox-signing-key-1"


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    client_id: str
    scopes: frozenset[str]
    expires_at: int


def _new_key() -> ECKey:
    parameters = {"kid": KEY_ID, "use": "sig", "alg": SIGNING_ALGORITHM}
    return ECKey.generate_key("P-256", parameters=parameters, private=True)


class TokenAuthority:
    def __init__(self, config: SandboxConfig):
        self._config = config
        self._clients = {client.client_id: client for client in config.clients}
        self._signing_key = _new_key()
        # Same kid, different key: what a client sees after a botched key rotation.
        self._wrong_key = _new_key()
        self._public_keys = KeySet.import_key_set(KeySet([self._signing_key]).as_dict(private=False))

    def jwks(self) -> dict[str, Any]:
        return self._public_keys.as_dict(private=False)

    def authenticate_client(self, client_id: str, client_secret: str) -> ClientRegistration:
        client = self._clients.get(client_id)
        expected = client.client_secret if client else ""
        if client is None or not hmac.compare_digest(client_secret.encode(), expected.encode()):
            raise ApiError(
                401,
                "invalid_client",
                "Client authentication failed",
                headers={"WWW-Authenticate": 'Basic realm="equihome-sandbox"'},
            )
        return client

    def grant(
        self, client: ClientRegistration, requested: Iterable[str] | None, faults: TokenFaults
    ) -> dict[str, Any]:
        """A client-credentials token response; no requested scopes means all the client's scopes."""
        scopes = list(dict.fromkeys(requested)) if requested else list(client.scopes)
        refused = [scope for scope in scopes if scope not in client.scopes]
        if refused:
            raise ApiError(
                400,
                "invalid_scope",
                f"Scopes not allowed for client {client.client_id}: {' '.join(refused)}",
                {"allowed_scopes": " ".join(client.scopes)},
            )
        lifetime = self._config.token_lifetime_seconds
        issued_at = int(time.time()) - (lifetime + 60 if faults.issue_expired_tokens else 0)
        claims = {
            "iss": self._config.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "aud": [system.audience for system in System if _reaches(system, scopes)],
            "scope": " ".join(scopes),
            "iat": issued_at,
            "exp": issued_at + lifetime,
            "jti": uuid.uuid4().hex,
        }
        key = self._wrong_key if faults.sign_with_wrong_key else self._signing_key
        header = {"alg": SIGNING_ALGORITHM, "typ": "at+jwt", "kid": KEY_ID}
        return {
            "access_token": jwt.encode(header, claims, key),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": claims["scope"],
        }

    def verify(self, token: str, system: System) -> Principal:
        """The principal of a valid token for ``system``; raises a 401 ApiError otherwise."""
        try:
            decoded = jwt.decode(token, self._public_keys, algorithms=[SIGNING_ALGORITHM])
            jwt.JWTClaimsRegistry(
                leeway=0,
                iss={"essential": True, "value": self._config.issuer},
                aud={"essential": True, "value": system.audience},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except ExpiredTokenError:
            raise unauthorized("token_expired", "The access token has expired", system.audience) from None
        except InvalidClaimError as error:
            if error.claim == "aud":
                message = f"The access token is not for {system.audience}; request a {system.value} scope"
            else:
                message = f"The access token is invalid: {error.description}"
            raise unauthorized("invalid_token", message, system.audience) from None
        except JoseError as error:
            message = f"The access token is invalid: {error.description or error.error}"
            raise unauthorized("invalid_token", message, system.audience) from None
        claims = decoded.claims
        return Principal(
            client_id=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            expires_at=int(claims["exp"]),
        )


def _reaches(system: System, scopes: Iterable[str]) -> bool:
    return any(scope in (system.read_scope, system.write_scope) for scope in scopes)
