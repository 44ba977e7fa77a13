"""Helpers the REST endpoints share: query lists, JSON bodies, accepting POSTs, the caller."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from starlette.responses import Response

from adapters.sandbox.errors import ApiError, bad_request
from adapters.sandbox.state import SandboxState
from adapters.sandbox.systems import System
from adapters.sandbox.tokens import Principal

IDEMPOTENCY_HEADER = "Idempotency-Key"

Payload = TypeVar("Payload", bound=BaseModel)


def correlation_id(request: Request) -> str:
    return request.state.correlation_id


def principal(request: Request) -> Principal:
    return request.state.principal


def id_list(request: Request, name: str, max_items: int) -> list[str]:
    """The comma-separated ids of query parameter ``name``, in order and without repeats."""
    parts = (part.strip() for part in request.query_params.get(name, "").split(","))
    ids = list(dict.fromkeys(part for part in parts if part))
    if not ids:
        message = f"Query parameter '{name}' must list at least one id"
        raise bad_request("missing_parameter", message, parameter=name)
    if len(ids) > max_items:
        raise bad_request(
            "batch_too_large", f"At most {max_items} ids per request", parameter=name, max_items=max_items
        )
    return ids


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is not one."""
    raw = await request.body()
    try:
        sent = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request("invalid_json", f"The request body is not valid JSON: {error}") from None
    if not isinstance(sent, dict):
        raise bad_request("invalid_json", "The request body must be a JSON object")
    return sent


async def json_payload(request: Request, model: type[Payload]) -> tuple[Payload, dict[str, Any]]:
    """The request body checked against ``model``, and as the client sent it.

    400 for a body that is not a JSON object, 422 (with every field error) for one that breaks the model.
    """
    sent = await json_object(request)
    try:
        payload = model.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_error(error) from None
    return payload, sent


def validation_error(error: ValidationError) -> ApiError:
    problems = [
        {"field": ".".join(str(part) for part in problem["loc"]) or "(body)", "message": problem["msg"]}
        for problem in error.errors(include_url=False, include_input=False)
    ]
    return unprocessable(problems)


def unprocessable(problems: list[dict[str, str]]) -> ApiError:
    return ApiError(422, "validation_error", "The request body is invalid", {"errors": problems})


def record_post(state: SandboxState, system: System, request: Request, sent: dict[str, Any]) -> Response:
    """Keep an accepted POST body for read-back and answer 202: without a body, as the guide shows no
    response, or with the ``post_receipts`` extension ``{"id", "status", "received_at"}``."""
    post = state.received.record(
        system,
        request.url.path,
        sent,
        client_id=principal(request).client_id,
        correlation_id=correlation_id(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    if not state.config.extensions.post_receipts:
        return Response(status_code=202)
    body = {"id": post.id, "status": "accepted", "received_at": post.received_at}
    return JSONResponse(body, status_code=202)
