"""The OAuth 2.0 token endpoint (client credentials, RFC 6749 section 4.4) and the JWKS.

``POST /oauth/token`` takes a form-encoded body; the client authenticates with HTTP Basic or with
``client_id``/``client_secret`` in the body (if both are given they must name the same client).
Errors use RFC 6749 section 5.2 bodies: ``invalid_request``, ``invalid_client`` (401),
``unsupported_grant_type``, ``invalid_scope``.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.sandbox.errors import ApiError
from adapters.sandbox.gateway import TOKEN_PATH
from adapters.sandbox.state import SandboxState

JWKS_PATH = "/.well-known/jwks.json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def oauth_routes(state: SandboxState) -> list[Route]:
    async def token(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != FORM_CONTENT_TYPE:
            raise _invalid_request(f"The body must be {FORM_CONTENT_TYPE}")
        form = _form_fields(await request.body())
        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported")
        client_id, client_secret = _client_credentials(request, form)
        client = state.tokens.authenticate_client(client_id, client_secret)
        requested = form.get("scope", "").split() or None
        granted = state.tokens.grant(client, requested, state.faults.settings.auth)
        return JSONResponse(granted, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(state.tokens.jwks())

    return [Route(TOKEN_PATH, token, methods=["POST"]), Route(JWKS_PATH, jwks, methods=["GET"])]


def _form_fields(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request("The form body cannot be parsed") from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        raise _invalid_request(f"Parameters must not repeat: {', '.join(repeated)}")
    return {name: values[0] for name, values in fields.items()}


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    basic = _basic_credentials(request.headers.get("authorization", ""))
    if basic is None:
        if "client_id" not in form:
            raise ApiError(
                401,
                "invalid_client",
                "Client authentication is required (HTTP Basic or client_id/client_secret)",
                headers={"WWW-Authenticate": 'Basic realm="equihome-sandbox"'},
            )
        return form["client_id"], form.get("client_secret", "")
    if "client_id" in form and form["client_id"] != basic[0]:
        raise _invalid_request("client_id in the body differs from the HTTP Basic client")
    return basic


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_request("Malformed HTTP Basic credentials") from None
    client_id, separator, client_secret = decoded.partition(":")
    if not separator:
        raise _invalid_request("Malformed HTTP Basic credentials")
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(client_secret)


def _invalid_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)
