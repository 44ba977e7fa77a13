"""The token endpoint and JWKS, as an OAuth 2.0 client (client credentials) meets them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from adapters.sandbox import ClientRegistration, Sandbox, SandboxConfig, System, running_sandbox
from adapters.sandbox.systems import ALL_SCOPES
from tests.sandbox import guide_examples as guide
from tests.sandbox.support import fetch_token


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(shared_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    """These tests change only fault knobs; they share one sandbox and clear the knobs after each test."""
    yield shared_sandbox
    shared_sandbox.reset_faults()


async def test_body_credentials_grant_a_bearer_token_with_all_the_clients_scopes(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": "equihome-engine",
            "client_secret": "sandbox-secret",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.TOKEN_RESPONSE)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"].split() == list(ALL_SCOPES)
    assert response.headers["Cache-Control"] == "no-store"


async def test_basic_credentials_grant_exactly_the_requested_scopes(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials", "scope": "traffic-light:read pms:read"},
        auth=("equihome-engine", "sandbox-secret"),
    )

    assert response.status_code == 200
    assert response.json()["scope"] == "traffic-light:read pms:read"


async def test_wrong_secret_is_an_invalid_client(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials"},
        auth=("equihome-engine", "not-the-secret"),
        headers={"X-Correlation-ID": "corr_token_test"},
    )

    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["correlation_id"] == "corr_token_test"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_scope_the_client_may_not_have_is_an_invalid_scope(http: httpx.AsyncClient) -> None:
    reader = ClientRegistration(
        client_id="tls-reader", client_secret="s3cret", scopes=("traffic-light:read",)
    )
    async with running_sandbox(SandboxConfig(events_per_second=0, clients=(reader,))) as sandbox:
        refused = await http.post(
            sandbox.token_url,
            data={"grant_type": "client_credentials", "scope": "traffic-light:read pms:read"},
            auth=("tls-reader", "s3cret"),
        )
        granted = await http.post(
            sandbox.token_url, data={"grant_type": "client_credentials"}, auth=("tls-reader", "s3cret")
        )

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"
    assert granted.json()["scope"] == "traffic-light:read"


async def test_only_the_client_credentials_grant_is_supported(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        sandbox.token_url, data={"grant_type": "password"}, auth=("equihome-engine", "sandbox-secret")
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_token_verifies_against_the_published_jwks(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    token = await fetch_token(http, sandbox, scope="pms:read underwriting:write")
    keys = KeySet.import_key_set((await http.get(sandbox.jwks_url)).json())

    decoded = jwt.decode(token, keys, algorithms=["ES256"])

    claims = decoded.claims
    assert decoded.header["typ"] == "at+jwt"
    assert claims["iss"] == sandbox.config.issuer
    assert claims["sub"] == "equihome-engine"
    assert claims["aud"] == [System.PMS.audience, System.UNDERWRITING.audience]
    assert claims["scope"] == "pms:read underwriting:write"
    assert claims["exp"] - claims["iat"] == 3600
    jwt.JWTClaimsRegistry(aud={"essential": True, "value": System.PMS.audience}).validate(claims)


async def test_wrong_key_fault_issues_tokens_the_jwks_does_not_verify(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    sandbox.set_faults({"auth": {"sign_with_wrong_key": True}})
    token = await fetch_token(http, sandbox)
    keys = KeySet.import_key_set((await http.get(sandbox.jwks_url)).json())

    with pytest.raises(BadSignatureError):
        jwt.decode(token, keys, algorithms=["ES256"])
