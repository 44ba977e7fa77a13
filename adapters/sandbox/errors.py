"""Errors in the integration guide's format, and in RFC 6749 format for the token endpoint.

Systems answer ``{"error": {"code", "message", "details", "correlation_id"}}``; ``details`` always
carries ``service``, ``endpoint`` and ``status_code`` like the guide's example, plus anything specific
(``retry_after``, ``required_scope``, ``errors``...). The token endpoint speaks OAuth 2.0:
``{"error": "<code>", "error_description": "...", "correlation_id": ...}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

CORRELATION_HEADER = "X-Correlation-ID"


class ApiError(Exception):
    """A request the sandbox answers with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def new_correlation_id() -> str:
    return f"corr_{uuid.uuid4().hex[:16]}"


def guide_error_body(error: ApiError, *, service: str, endpoint: str, correlation_id: str) -> dict[str, Any]:
    details = {"service": service, "endpoint": endpoint, "status_code": error.status, **error.details}
    return {
        "error": {
            "code": error.code,
            "message": error.message,
            "details": details,
            "correlation_id": correlation_id,
        }
    }


def guide_error_response(
    error: ApiError, *, service: str, endpoint: str, correlation_id: str
) -> JSONResponse:
    body = guide_error_body(error, service=service, endpoint=endpoint, correlation_id=correlation_id)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


# Infrastructure failures on the token endpoint, in OAuth's vocabulary.
OAUTH_CODES = {
    "service_unavailable": "temporarily_unavailable",
    "internal_error": "server_error",
    "rate_limited": "slow_down",
}


def oauth_error_response(error: ApiError, *, correlation_id: str) -> JSONResponse:
    code = OAUTH_CODES.get(error.code, error.code)
    body = {"error": code, "error_description": error.message, **error.details}
    body["correlation_id"] = correlation_id
    headers = {"Cache-Control": "no-store", **error.headers}
    return JSONResponse(body, status_code=error.status, headers=headers)


def retry_later(status: int, code: str, message: str, retry_after: int) -> ApiError:
    """A 503 or 429: ``retry_after`` seconds both in the Retry-After header and in the details."""
    return ApiError(status, code, message, {"retry_after": retry_after}, {"Retry-After": str(retry_after)})


def unauthorized(code: str, message: str, realm: str) -> ApiError:
    """A 401 with an RFC 6750 challenge (no error attribute when the request carried no token)."""
    challenge = f'Bearer realm="{realm}"'
    if code != "missing_token":
        challenge += f', error="invalid_token", error_description="{message}"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


def insufficient_scope(required_scope: str) -> ApiError:
    return ApiError(
        403,
        "insufficient_scope",
        f"The access token lacks the scope {required_scope}",
        {"required_scope": required_scope},
        {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{required_scope}"'},
    )


def not_found(what: str, identifier: str) -> ApiError:
    details = {"resource": what, "id": identifier}
    return ApiError(404, "not_found", f"No {what} with id {identifier!r}", details)


def bad_request(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, code, message, details)
