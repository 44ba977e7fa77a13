"""Each fault knob is observable by a client: status codes, headers and error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from adapters.sandbox import Sandbox
from adapters.sandbox.admin_api import is_loopback
from tests.sandbox.support import assert_guide_error, bearer

COMPOSITION = "/api/pms/portfolios/portfolio_456/composition"
PARAMETERS = "/api/underwriting/loans/loan_401/parameters"


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(shared_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    """These tests change only fault knobs; they share one sandbox and clear the knobs after each test."""
    yield shared_sandbox
    shared_sandbox.reset_faults()


async def test_error_rate_one_answers_500_on_that_system_only(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    sandbox.set_faults({"pms": {"error_rate": 1.0}})

    pms = await http.get(sandbox.system_url("pms") + COMPOSITION, headers=bearer(token))
    underwriting = await http.get(sandbox.system_url("underwriting") + PARAMETERS, headers=bearer(token))

    error = assert_guide_error(pms, 500, "internal_error")
    assert error["details"]["fault"] == "error_rate"
    assert underwriting.status_code == 200


async def test_outage_answers_503_with_retry_after_in_header_and_details(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    sandbox.set_faults({"underwriting": {"outage": True, "outage_retry_after": 60}})

    response = await http.get(sandbox.system_url("underwriting") + PARAMETERS, headers=bearer(token))

    error = assert_guide_error(response, 503, "service_unavailable")
    assert error["details"]["retry_after"] == 60
    assert response.headers["Retry-After"] == "60"


async def test_token_endpoint_outage_speaks_oauth(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sandbox.set_faults({"auth": {"outage": True, "outage_retry_after": 5}})

    response = await http.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials"},
        auth=("equihome-engine", "sandbox-secret"),
    )

    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"] == "5"


async def test_rate_limit_answers_429_once_the_burst_is_spent(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    sandbox.set_faults({"pms": {"rate_limit_per_second": 0.01, "rate_limit_burst": 2}})
    url = sandbox.system_url("pms") + COMPOSITION

    statuses = [(await http.get(url, headers=bearer(token))).status_code for _ in range(2)]
    limited = await http.get(url, headers=bearer(token))

    assert statuses == [200, 200]
    error = assert_guide_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == error["details"]["retry_after"] >= 1


async def test_latency_is_reported_in_a_header(sandbox: Sandbox, http: httpx.AsyncClient, token: str) -> None:
    sandbox.set_faults({"traffic-light": {"latency_ms": 25}})

    slowed = await http.get(
        sandbox.system_url("traffic-light") + "/api/traffic-light/zones?properties=property_1",
        headers=bearer(token),
    )
    unaffected = await http.get(sandbox.system_url("pms") + COMPOSITION, headers=bearer(token))

    assert slowed.status_code == 200
    assert slowed.headers["X-Sandbox-Injected-Latency-Ms"] == "25"
    assert "X-Sandbox-Injected-Latency-Ms" not in unaffected.headers


async def test_faults_are_patched_read_and_cleared_over_http(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    url = f"{sandbox.base_url}/sandbox/faults"

    patched = await http.post(url, json={"pms": {"error_rate": 0.25}, "auth": {"sign_with_wrong_key": True}})
    read = await http.get(url)
    cleared = await http.delete(url)

    assert patched.status_code == 200
    assert read.json()["pms"]["error_rate"] == 0.25
    assert read.json()["auth"]["sign_with_wrong_key"] is True
    assert read.json()["traffic-light"]["error_rate"] == 0
    assert cleared.json()["pms"]["error_rate"] == 0
    assert sandbox.state.faults.settings.auth.sign_with_wrong_key is False


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"pms": {"error_rate": 1.5}}, "pms.error_rate"),
        ({"pms": {"errror_rate": 0.5}}, "pms.errror_rate"),
        ({"billing": {"outage": True}}, "billing"),
    ],
)
async def test_invalid_fault_patches_are_refused_and_change_nothing(
    sandbox: Sandbox, http: httpx.AsyncClient, patch: dict, field: str
) -> None:
    response = await http.post(f"{sandbox.base_url}/sandbox/faults", json=patch)

    error = assert_guide_error(response, 422, "validation_error")
    assert field in {problem["field"] for problem in error["details"]["errors"]}
    assert sandbox.state.faults.settings.pms.error_rate == 0


def test_administration_is_for_loopback_clients_only() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("10.1.2.3") and not is_loopback(None)
