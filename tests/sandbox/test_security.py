"""Every system checks the bearer token (401) and its scopes (403), over REST and WebSocket alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.exceptions import InvalidStatus

from adapters.sandbox import Sandbox
from tests.sandbox.support import assert_guide_error, bearer, fetch_token


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(shared_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    """These tests change only fault knobs; they share one sandbox and clear the knobs after each test."""
    yield shared_sandbox
    shared_sandbox.reset_faults()

READS = {
    "traffic-light": "/api/traffic-light/zones?properties=property_1",
    "pms": "/api/pms/portfolios/portfolio_456/composition",
    "underwriting": "/api/underwriting/loans/loan_401/parameters",
}
WRITES = {
    "traffic-light": "/api/traffic-light/recommendations",
    "pms": "/api/pms/portfolios/portfolio_456/recommendations",
    "underwriting": "/api/underwriting/loans/loan_401/portfolio-impact",
}


@pytest.mark.parametrize("system", list(READS))
async def test_request_without_token_is_401(sandbox: Sandbox, http: httpx.AsyncClient, system: str) -> None:
    response = await http.get(sandbox.system_url(system) + READS[system])

    error = assert_guide_error(response, 401, "missing_token")
    assert error["details"]["service"] == system
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_garbage_token_is_401(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    response = await http.get(sandbox.system_url("pms") + READS["pms"], headers=bearer("not.a.jwt"))

    assert_guide_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("system", list(WRITES))
async def test_read_scope_does_not_allow_writes(
    sandbox: Sandbox, http: httpx.AsyncClient, system: str
) -> None:
    token = await fetch_token(http, sandbox, scope=f"{system}:read")

    response = await http.post(sandbox.system_url(system) + WRITES[system], json={}, headers=bearer(token))

    error = assert_guide_error(response, 403, "insufficient_scope")
    assert error["details"]["required_scope"] == f"{system}:write"


async def test_write_scope_does_not_allow_reads(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    token = await fetch_token(http, sandbox, scope="underwriting:write")

    url = sandbox.system_url("underwriting") + READS["underwriting"]

    response = await http.get(url, headers=bearer(token))

    assert_guide_error(response, 403, "insufficient_scope")


async def test_token_for_another_system_is_401(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    pms_token = await fetch_token(http, sandbox, scope="pms:read")

    url = sandbox.system_url("traffic-light") + READS["traffic-light"]

    response = await http.get(url, headers=bearer(pms_token))

    error = assert_guide_error(response, 401, "invalid_token")
    assert "urn:equihome:traffic-light" in error["message"]


async def test_expired_token_fault_yields_tokens_that_are_refused(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    sandbox.set_faults({"auth": {"issue_expired_tokens": True}})
    token = await fetch_token(http, sandbox)

    response = await http.get(sandbox.system_url("pms") + READS["pms"], headers=bearer(token))

    assert_guide_error(response, 401, "token_expired")


async def test_wrong_key_fault_yields_tokens_that_are_refused(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    sandbox.set_faults({"auth": {"sign_with_wrong_key": True}})
    token = await fetch_token(http, sandbox)

    response = await http.get(sandbox.system_url("pms") + READS["pms"], headers=bearer(token))

    assert_guide_error(response, 401, "invalid_token")


async def test_reject_all_tokens_fault_refuses_valid_tokens_of_that_system_only(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    sandbox.set_faults({"pms": {"reject_all_tokens": True}})

    pms = await http.get(sandbox.system_url("pms") + READS["pms"], headers=bearer(token))
    underwriting = await http.get(
        sandbox.system_url("underwriting") + READS["underwriting"], headers=bearer(token)
    )

    assert_guide_error(pms, 401, "invalid_token")
    assert underwriting.status_code == 200


async def test_websocket_handshake_without_token_is_refused_with_a_401_error_body(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(sandbox.ws_url("traffic-light"))

    response = refused.value.response
    assert response.status_code == 401
    error = json.loads(response.body)["error"]
    assert error["code"] == "missing_token"
    assert error["details"]["endpoint"] == "/ws/traffic-light"


async def test_websocket_handshake_needs_the_read_scope(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    token = await fetch_token(http, sandbox, scope="traffic-light:write")

    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{sandbox.ws_url('traffic-light')}?token={token}")

    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "insufficient_scope"


@pytest.mark.parametrize("how", ["query", "header"])
async def test_websocket_accepts_the_token_as_query_parameter_or_bearer_header(
    sandbox: Sandbox, http: httpx.AsyncClient, how: str
) -> None:
    token = await fetch_token(http, sandbox, scope="pms:read")
    url, headers = sandbox.ws_url("pms"), {}
    if how == "query":
        url += f"?token={token}"
    else:
        headers = bearer(token)

    async with websockets.connect(url, additional_headers=headers) as ws:
        assert ws.response.headers["X-Correlation-ID"].startswith("corr_")
